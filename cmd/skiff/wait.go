package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

func newWaitCmd(a *cli) *cobra.Command {
	var (
		forStatus string
		timeout   time.Duration
		output    string
	)
	cmd := &cobra.Command{
		Use:   "wait ID|NAME... [--for STATUS] [--timeout 30s]",
		Short: "Wait until container groups reach a status",
		Long: `Wait until each group reaches a status (default Running) and print it.
Fails when the time runs out, or when a group ends up where the status can
no longer be reached (Failed while waiting for Running, say).`,
		Args: minArgs(1, "one group ID or NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(cmd, output); err != nil {
				return err
			}
			want, err := parseStatus(forStatus)
			if err != nil {
				return usagef(cmd, "--for: %v", err)
			}
			if timeout <= 0 {
				return usagef(cmd, "--timeout must be positive")
			}
			return a.eachGroup(cmd, args, output, func(c *client.Client, id string) (*api.Group, error) {
				// Also stop at a status the group stays in for good.
				g, err := c.WaitAny(cmd.Context(), id, append([]api.Status{want}, client.Unreachable(want)...), timeout)
				if err != nil {
					return nil, err
				}
				if g.Status != want {
					return nil, fmt.Errorf("will not become %s: the group is %s", want, statusLine(g))
				}
				return g, nil
			})
		},
	}
	cmd.Flags().StringVar(&forStatus, "for", string(api.StatusRunning), "the status to wait for")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait")
	addOutputFlag(cmd, &output)
	return cmd
}
