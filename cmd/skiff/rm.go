package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// eachGroup runs fn for every argument, prints each failure and fails at
// the end if any did; the groups that worked go out as JSON or their ids.
func (a *cli) eachGroup(cmd *cobra.Command, args []string, output string, fn func(c *client.Client, id string) (*api.Group, error)) error {
	if err := checkOutput(cmd, output); err != nil {
		return err
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	done := []*api.Group{}
	failed := 0
	for _, id := range args {
		g, err := fn(c, id)
		if err != nil {
			if len(args) == 1 {
				return fmt.Errorf("%s: %w", id, err)
			}
			fmt.Fprintf(a.err, "Error: %s: %s\n", id, describe(err))
			failed++
			continue
		}
		done = append(done, g)
		if output != outputJSON {
			fmt.Fprintln(a.out, id)
		}
	}
	if output == outputJSON {
		if err := a.printJSON(done); err != nil {
			return err
		}
	}
	if failed > 0 {
		return &exitError{code: 1}
	}
	return nil
}

func newRmCmd(a *cli) *cobra.Command {
	var (
		force  bool
		output string
	)
	cmd := &cobra.Command{
		Use:     "rm [-f] ID|NAME...",
		Aliases: []string{"delete"},
		Short:   "Delete container groups",
		Long: `Delete container groups. Their containers get SIGTERM and the group's
grace period; -f kills them at once.`,
		Args: minArgs(1, "one group ID or NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.eachGroup(cmd, args, output, func(c *client.Client, id string) (*api.Group, error) {
				return c.DeleteGroup(cmd.Context(), id, force)
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill without the grace period")
	addOutputFlag(cmd, &output)
	return cmd
}

func newRestartCmd(a *cli) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "restart ID|NAME...",
		Short: "Restart every container of container groups",
		Args:  minArgs(1, "one group ID or NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.eachGroup(cmd, args, output, func(c *client.Client, id string) (*api.Group, error) {
				return c.RestartGroup(cmd.Context(), id)
			})
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func newEventsCmd(a *cli) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "events ID|NAME",
		Short: "Show what happened to a container group",
		Args:  exactArgs(1, "one group ID or NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(cmd, output); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			evs, err := c.Events(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if output == outputJSON {
				if evs == nil {
					evs = []api.Event{}
				}
				return a.printJSON(evs)
			}
			tw := newTable(a.out, "AGE", "TYPE", "REASON", "CONTAINER", "COUNT", "MESSAGE")
			now := timeNow()
			for _, e := range evs {
				count := "1"
				if e.Count > 1 {
					count = fmt.Sprint(e.Count)
				}
				row(tw, age(e.Time, now), orDash(e.Type), orDash(e.Reason), orDash(e.Container), count, e.Message)
			}
			return tw.Flush()
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}
