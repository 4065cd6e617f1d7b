package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// groupStats is one row of `skiff stats`.
type groupStats struct {
	ID          string       `json:"id"`
	Name        string       `json:"name"`
	CPUPercent  float64      `json:"cpuPercent"`
	MemoryLimit int64        `json:"memoryLimitBytes,omitempty"`
	Metrics     *api.Metrics `json:"metrics,omitempty"`
	Error       string       `json:"error,omitempty"`
}

// statsSampleGap is the time between the two readings a CPU% needs.
var statsSampleGap = 500 * time.Millisecond

func newStatsCmd(a *cli) *cobra.Command {
	var (
		noStream bool
		output   string
	)
	cmd := &cobra.Command{
		Use:   "stats [ID|NAME...]",
		Short: "Show container groups' CPU, memory, process and network use",
		Long: `Show resource use of the given groups, or of every running one. CPU% is
of one core (200% is two cores busy), over a short sampling gap.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(cmd, output); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			groups, err := statsTargets(ctx, c, args)
			if err != nil {
				return err
			}
			for {
				rows := sampleStats(ctx, c, groups)
				if ctx.Err() != nil {
					return nil
				}
				if !noStream && output != outputJSON && isTerminal(a.out) {
					fmt.Fprint(a.out, "\033[H\033[2J") // home, clear
				}
				if err := a.printStats(rows, output); err != nil {
					return err
				}
				if noStream {
					for _, r := range rows {
						if r.Error != "" {
							return &exitError{code: 1}
						}
					}
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Second):
				}
			}
		},
	}
	cmd.Flags().BoolVar(&noStream, "no-stream", true, "print one reading and exit (--no-stream=false refreshes until interrupted)")
	addOutputFlag(cmd, &output)
	return cmd
}

// statsTargets resolves the groups to read: those named, or every Running one.
func statsTargets(ctx context.Context, c *client.Client, args []string) ([]*api.Group, error) {
	if len(args) == 0 {
		gs, err := c.ListAllGroups(ctx, client.ListOptions{Statuses: []api.Status{api.StatusRunning}})
		if err != nil {
			return nil, err
		}
		out := make([]*api.Group, 0, len(gs))
		for i := range gs {
			if gs[i].Status == api.StatusRunning {
				out = append(out, &gs[i])
			}
		}
		return out, nil
	}
	out := make([]*api.Group, 0, len(args))
	for _, id := range args {
		g, err := c.GetGroup(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", id, err)
		}
		out = append(out, g)
	}
	return out, nil
}

// sampleStats reads every group twice, statsSampleGap apart, in parallel.
func sampleStats(ctx context.Context, c *client.Client, groups []*api.Group) []groupStats {
	rows := make([]groupStats, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := groupStats{ID: g.ID, Name: g.Name, MemoryLimit: memoryLimit(g)}
			m1, err := c.Metrics(ctx, g.ID)
			if err == nil {
				select {
				case <-ctx.Done():
				case <-time.After(statsSampleGap):
				}
				var m2 *api.Metrics
				if m2, err = c.Metrics(ctx, g.ID); err == nil {
					r.Metrics = m2
					r.CPUPercent = cpuPercent(m1, m2)
				}
			}
			if err != nil {
				r.Error = describe(err)
			}
			rows[i] = r
		}()
	}
	wg.Wait()
	return rows
}

// cpuPercent is the CPU use between two readings, 100 per busy core.
func cpuPercent(m1, m2 *api.Metrics) float64 {
	wall := m2.Time.Sub(m1.Time)
	if wall <= 0 || m2.CPUNanos < m1.CPUNanos {
		return 0
	}
	return float64(m2.CPUNanos-m1.CPUNanos) / float64(wall.Nanoseconds()) * 100
}

// memoryLimit is the group's memory, else the sum of its containers' limits.
func memoryLimit(g *api.Group) int64 {
	if g.Spec.Memory > 0 {
		return int64(g.Spec.Memory)
	}
	var sum int64
	for _, c := range g.Spec.Containers {
		if c.Resources.Limits.Memory == 0 {
			return 0 // one container is unlimited: so is the group
		}
		sum += int64(c.Resources.Limits.Memory)
	}
	return sum
}

func (a *cli) printStats(rows []groupStats, output string) error {
	if output == outputJSON {
		return a.printJSON(rows)
	}
	tw := newTable(a.out, "ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS", "NET I/O")
	for _, r := range rows {
		if r.Metrics == nil {
			row(tw, r.ID, orDash(r.Name), "-", "-", "-", "-", "error: "+r.Error)
			continue
		}
		m := r.Metrics
		limit, pct := "-", "-"
		if r.MemoryLimit > 0 {
			limit = humanBytes(r.MemoryLimit)
			pct = fmt.Sprintf("%.1f%%", float64(m.MemoryUsed)/float64(r.MemoryLimit)*100)
		}
		row(tw, r.ID, orDash(r.Name), fmt.Sprintf("%.1f%%", r.CPUPercent),
			humanBytes(int64(m.MemoryUsed))+" / "+limit, pct, fmt.Sprint(m.Pids),
			humanBytes(int64(m.RxBytes))+" / "+humanBytes(int64(m.TxBytes)))
	}
	return tw.Flush()
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
