package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/skiffhq/skiff/api"
)

func newHostsCmd(a *cli) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "hosts",
		Aliases: []string{"host", "nodes"},
		Short:   "List the hosts of the fleet",
		Args:    noArgs(""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(cmd, output); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			hosts, err := c.Hosts(cmd.Context())
			if err != nil {
				return err
			}
			if output == outputJSON {
				if hosts == nil {
					hosts = []api.Host{}
				}
				return a.printJSON(hosts)
			}
			// POOL is the warm pool's prepared sandboxes / target, all shape
			// classes together; HIT/MISS counts creates since the agent started.
			tw := newTable(a.out, "ID", "NAME", "STATE", "ZONE", "CPU", "MEM", "GROUPS", "POOL", "HIT/MISS", "AGE")
			now := timeNow()
			for _, h := range hosts {
				groups := fmt.Sprint(h.Allocated.Groups)
				if h.Capacity.Groups > 0 {
					groups += "/" + fmt.Sprint(h.Capacity.Groups)
				}
				pool, hits := "-", "-"
				if h.Pool != nil {
					size, target, hit, miss := h.Pool.Totals()
					pool = fmt.Sprintf("%d/%d", size, target)
					hits = fmt.Sprintf("%d/%d", hit, miss)
				}
				row(tw, h.ID, orDash(h.Name), string(h.State), orDash(h.Zone),
					humanCores(h.Allocated.MilliCPU)+"/"+humanCores(h.Capacity.MilliCPU),
					humanBytes(h.Allocated.Memory)+"/"+humanBytes(h.Capacity.Memory),
					groups, pool, hits, age(h.JoinedAt, now))
			}
			return tw.Flush()
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}
