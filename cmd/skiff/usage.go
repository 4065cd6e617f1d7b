package main

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiffhq/skiff/client"
)

func newUsageCmd(a *cli) *cobra.Command {
	var account, from, to, output string
	var since time.Duration
	cmd := &cobra.Command{
		Use:   "usage",
		Short: "Show metered use (vCPU-seconds, GiB-seconds, cost) over a period",
		Long: `Shows the per-second metering of container groups: each group is billed
from when it is placed on a host (image pull and sandbox creation included)
until it ends or its delete is requested, in whole seconds, at the on-demand
or spot price of the server's price table.

  skiff usage                         # your account, the last 24 hours
  skiff usage --since 1h -o csv       # CSV export
  skiff usage --account '*' --from 2024-01-01T00:00:00Z --to 2024-02-01T00:00:00Z   # admins: every account`,
		Args: noArgs(""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != outputTable && output != outputJSON && output != "csv" {
				return usagef(cmd, "-o %q: want table, json or csv", output)
			}
			o := client.UsageOptions{Account: account}
			var err error
			if from != "" {
				if o.From, err = time.Parse(time.RFC3339, from); err != nil {
					return usagef(cmd, "--from %q: want an RFC 3339 time such as 2024-01-02T00:00:00Z", from)
				}
			} else if since > 0 {
				o.From = time.Now().Add(-since)
			}
			if to != "" {
				if o.To, err = time.Parse(time.RFC3339, to); err != nil {
					return usagef(cmd, "--to %q: want an RFC 3339 time", to)
				}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			if output == "csv" {
				rc, err := c.UsageCSV(cmd.Context(), o)
				if err != nil {
					return err
				}
				defer rc.Close()
				_, err = io.Copy(a.out, rc)
				return err
			}
			rep, err := c.Usage(cmd.Context(), o)
			if err != nil {
				return err
			}
			if output == outputJSON {
				return a.printJSON(rep)
			}
			tw := newTable(a.out, "GROUP", "ACCOUNT", "SPOT", "VCPU", "MEM(GiB)", "SECONDS", "VCPU-S", "GIB-S", "COST")
			f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
			for _, l := range rep.Lines {
				name := l.GroupName
				if l.Open {
					name += " (running)"
				}
				row(tw, name, l.AccountID, fmt.Sprint(l.Spot), f(l.VCPU), f(l.MemoryGiB), fmt.Sprint(l.Seconds), f(l.VCPUSeconds), f(l.GiBSeconds), fmt.Sprintf("%.6f", l.Cost))
			}
			row(tw, "TOTAL", "", "", "", "", "", f(rep.VCPUSeconds), f(rep.GiBSeconds), fmt.Sprintf("%.6f %s", rep.Cost, rep.Currency))
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(a.err, "period %s .. %s\n", rep.From.Format(time.RFC3339), rep.To.Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().StringVar(&account, "account", "", "account to report (default: yours; '*' for every account, admins)")
	cmd.Flags().StringVar(&from, "from", "", "start of the period, RFC 3339 (default: 24h ago)")
	cmd.Flags().StringVar(&to, "to", "", "end of the period, RFC 3339 (default: now)")
	cmd.Flags().DurationVar(&since, "since", 0, "start the period this long ago (instead of --from)")
	cmd.Flags().StringVarP(&output, "output", "o", outputTable, "table, json or csv")
	return cmd
}

func newPriceCmd(a *cli) *cobra.Command {
	var cpu, memory string
	var spot bool
	cmd := &cobra.Command{
		Use:   "price",
		Short: "Show the hourly price of a group shape",
		Args:  noArgs(""),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.Price(cmd.Context(), cpu, memory, spot)
			if err != nil {
				return err
			}
			kind := "on-demand"
			if p.Spot {
				kind = "spot"
			}
			fmt.Fprintf(a.out, "%s vCPU, %s GiB, %s: %.6f %s/hour (vCPU %.6f + memory %.6f)\n", strconv.FormatFloat(p.VCPU, 'f', -1, 64),
				strconv.FormatFloat(p.MemoryGiB, 'f', -1, 64), kind, p.Hourly, p.Currency, p.VCPUHour, p.MemHour)
			return nil
		},
	}
	cmd.Flags().StringVar(&cpu, "cpu", "1", "vCPU, e.g. 2 or 500m")
	cmd.Flags().StringVar(&memory, "memory", "2Gi", "memory, e.g. 4Gi")
	cmd.Flags().BoolVar(&spot, "spot", false, "the spot price")
	return cmd
}
