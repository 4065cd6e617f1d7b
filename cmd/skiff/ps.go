package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// psFilter is what --filter values ask for.
type psFilter struct {
	list client.ListOptions
}

// parseFilters parses --filter values: name=N, label=k=v, status=S.
func parseFilters(vals []string) (psFilter, error) {
	var f psFilter
	for _, v := range vals {
		k, val, ok := strings.Cut(v, "=")
		if !ok || val == "" {
			return f, fmt.Errorf("filter %q: want name=NAME, label=KEY=VALUE or status=STATUS", v)
		}
		switch strings.ToLower(k) {
		case "name":
			if f.list.Name != "" && f.list.Name != val {
				return f, fmt.Errorf("filter %q: only one name filter is allowed", v)
			}
			f.list.Name = val
		case "label":
			lk, lv, _ := strings.Cut(val, "=")
			if lk == "" {
				return f, fmt.Errorf("filter %q: want label=KEY=VALUE", v)
			}
			if f.list.Labels == nil {
				f.list.Labels = map[string]string{}
			}
			f.list.Labels[lk] = lv
		case "status":
			s, err := parseStatus(val)
			if err != nil {
				return f, fmt.Errorf("filter %q: %w", v, err)
			}
			f.list.Statuses = append(f.list.Statuses, s)
		default:
			return f, fmt.Errorf("filter %q: unknown filter %q; want name, label or status", v, k)
		}
	}
	return f, nil
}

// parseStatus accepts a status name in any case.
func parseStatus(s string) (api.Status, error) {
	for _, st := range api.AllStatuses {
		if strings.EqualFold(string(st), s) {
			return st, nil
		}
	}
	names := make([]string, len(api.AllStatuses))
	for i, st := range api.AllStatuses {
		names[i] = string(st)
	}
	return "", fmt.Errorf("unknown status %q; want one of %s", s, strings.Join(names, ", "))
}

func newPsCmd(a *cli) *cobra.Command {
	var (
		all     bool
		quiet   bool
		filters []string
		output  string
	)
	cmd := &cobra.Command{
		Use:     "ps [flags]",
		Aliases: []string{"ls", "list"},
		Short:   "List container groups",
		Long:    "List container groups; without -a, only those that have not ended.",
		Args:    noArgs("; filter with --filter"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(cmd, output); err != nil {
				return err
			}
			f, err := parseFilters(filters)
			if err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			f.list.All = all
			c, err := a.client()
			if err != nil {
				return err
			}
			groups, err := listGroups(cmd.Context(), c, f, all)
			if err != nil {
				return err
			}
			switch {
			case quiet:
				for _, g := range groups {
					fmt.Fprintln(a.out, g.ID)
				}
				return nil
			case output == outputJSON:
				if groups == nil {
					groups = []api.Group{}
				}
				return a.printJSON(groups)
			}
			tw := newTable(a.out, "ID", "NAME", "STATUS", "IMAGE", "HOST", "IP", "AGE")
			now := timeNow()
			for _, g := range groups {
				row(tw, g.ID, orDash(g.Name), psStatus(&g), groupImage(&g), orDash(g.HostID), orDash(g.IP), age(g.CreatedAt, now))
			}
			return tw.Flush()
		},
	}
	fl := cmd.Flags()
	fl.BoolVarP(&all, "all", "a", false, "show every group, including those that ended")
	fl.BoolVarP(&quiet, "quiet", "q", false, "print only ids")
	fl.StringArrayVarP(&filters, "filter", "f", nil, "filter: name=NAME, label=KEY=VALUE, status=STATUS (repeatable)")
	addOutputFlag(cmd, &output)
	return cmd
}

// listGroups lists every page; without -a or a status filter it hides
// the groups that ended.
func listGroups(ctx context.Context, c *client.Client, f psFilter, all bool) ([]api.Group, error) {
	groups, err := c.ListAllGroups(ctx, f.list)
	if err != nil {
		return nil, err
	}
	explicit := len(f.list.Statuses) > 0
	out := groups[:0]
	for _, g := range groups {
		if !all && !explicit && g.Status.Terminal() {
			continue
		}
		out = append(out, g)
	}
	return out, nil
}

// psStatus is the status with its reason, and a deleting mark.
func psStatus(g *api.Group) string {
	s := string(g.Status)
	if g.Reason != "" {
		s += " (" + g.Reason + ")"
	}
	if g.Deleting && g.Status != api.StatusTerminating {
		s += " deleting"
	}
	return s
}

// groupImage is the first container's image, with a count of the others.
func groupImage(g *api.Group) string {
	cs := g.Spec.Containers
	switch len(cs) {
	case 0:
		return "-"
	case 1:
		return cs[0].Image
	}
	return fmt.Sprintf("%s +%d", cs[0].Image, len(cs)-1)
}

func newInspectCmd(a *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect ID|NAME...",
		Short: "Show container groups in full, as JSON",
		Args:  minArgs(1, "one group ID or NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			groups := []*api.Group{}
			var failed int
			for _, id := range args {
				g, err := c.GetGroup(cmd.Context(), id)
				if err != nil {
					fmt.Fprintf(a.err, "Error: %s: %s\n", id, describe(err))
					failed++
					continue
				}
				groups = append(groups, g)
			}
			if err := a.printJSON(groups); err != nil {
				return err
			}
			if failed > 0 {
				return &exitError{code: 1}
			}
			return nil
		},
	}
}
