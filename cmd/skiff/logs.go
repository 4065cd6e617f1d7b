package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiffhq/skiff/client"
)

func newLogsCmd(a *cli) *cobra.Command {
	var (
		o    client.LogOptions
		tail string
	)
	cmd := &cobra.Command{
		Use:   "logs [flags] ID|NAME",
		Short: "Print a container's log",
		Args:  exactArgs(1, "one group ID or NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := parseTail(tail)
			if err != nil {
				return usagef(cmd, "%v", err)
			}
			o.Tail = n
			if err := checkSince(o.Since); err != nil {
				return usagef(cmd, "%v", err)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			rc, err := c.Logs(ctx, args[0], o)
			if err != nil {
				return err
			}
			defer rc.Close()
			_, err = io.Copy(a.out, rc)
			if ctx.Err() != nil {
				return nil // interrupted while following
			}
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.Follow, "follow", "f", false, "keep printing new lines until the container ends")
	f.StringVarP(&tail, "tail", "n", "all", "number of lines from the end, or all")
	f.StringVar(&o.Since, "since", "", "only lines since a time (RFC 3339) or a duration ago (10m)")
	f.BoolVarP(&o.Previous, "previous", "p", false, "the previous instance of the container")
	f.StringVarP(&o.Container, "container", "c", "", "the container (default: the group's first)")
	f.BoolVarP(&o.Timestamps, "timestamps", "t", false, "prefix lines with their time")
	return cmd
}

// parseTail parses --tail: "all" (nil) or a non-negative count.
func parseTail(s string) (*int, error) {
	if s == "" || strings.EqualFold(s, "all") || s == "-1" {
		return nil, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("--tail %q: want a number of lines or all", s)
	}
	return &n, nil
}

// checkSince accepts an RFC 3339 time or a positive duration.
func checkSince(s string) error {
	if s == "" {
		return nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return fmt.Errorf("--since %q: a duration must be positive", s)
		}
		return nil
	}
	if _, err := time.Parse(time.RFC3339, s); err == nil {
		return nil
	}
	return fmt.Errorf("--since %q: want a duration such as 10m or a time such as 2026-01-02T15:04:05Z", s)
}
