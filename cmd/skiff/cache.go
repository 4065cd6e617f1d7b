package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

func newCacheCmd(a *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "cache",
		Aliases: []string{"caches", "imagecache"},
		Short:   "Manage image caches: images kept pulled and unpacked on hosts",
		Long: `An image cache (ECI's CreateImageCache) is a named set of images that
skiff pulls and unpacks on the hosts ahead of time and keeps there. A group
whose images a Ready cache holds is matched to it automatically at create
(or pins one with spec.imageCacheId), lands on a host that has it, and
starts without any registry traffic.`,
	}
	cmd.AddCommand(newCacheCreateCmd(a), newCacheLsCmd(a), newCacheInspectCmd(a), newCacheUpdateCmd(a), newCacheRmCmd(a))
	return cmd
}

func newCacheCreateCmd(a *cli) *cobra.Command {
	var output string
	var hosts, retention int
	var wait time.Duration
	var rf registryFlags
	cmd := &cobra.Command{
		Use:   "create NAME IMAGE...",
		Short: "Create an image cache of some images",
		Args:  minArgs(2, "a NAME and at least one IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(cmd, output); err != nil {
				return err
			}
			creds, err := rf.credentials(a, args[1])
			if err != nil {
				return usagef(cmd, "%v", err)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			req := api.ImageCacheRequest{Name: args[0], Images: args[1:], ImageRegistryCredentials: creds,
				InsecureRegistries: rf.insecure, PlainHTTPRegistries: rf.plainHTTP, Hosts: &hosts, RetentionDays: &retention}
			ic, err := c.CreateImageCache(cmd.Context(), req)
			if err != nil {
				return err
			}
			if wait > 0 {
				if ic, err = waitCache(cmd.Context(), c, ic.ID, wait, a.err, output != outputJSON); err != nil {
					return err
				}
			}
			return a.printCaches(output, ic)
		},
	}
	cmd.Flags().IntVar(&hosts, "hosts", 0, "number of hosts that keep the cache (0: every host)")
	cmd.Flags().IntVar(&retention, "retention-days", 0, "delete the cache this many days after it was last made ready or used (0: never)")
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for the cache to be Ready (or Failed), e.g. 10m")
	rf.add(cmd)
	addOutputFlag(cmd, &output)
	return cmd
}

// waitCache polls until the cache is Ready or Failed.
func waitCache(ctx context.Context, c *client.Client, id string, timeout time.Duration, w io.Writer, say bool) (*api.ImageCache, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		ic, err := c.GetImageCache(ctx, id)
		if err != nil {
			return nil, err
		}
		if say && ic.Message != last && ic.Message != "" {
			fmt.Fprintf(w, "%s: %s %s\n", ic.Name, ic.Status, ic.Message)
			last = ic.Message
		}
		switch ic.Status {
		case api.ImageCacheReady:
			return ic, nil
		case api.ImageCacheFailed:
			return ic, &exitError{code: 1, msg: fmt.Sprintf("image cache %s failed: %s: %s", ic.Name, ic.Reason, ic.Message)}
		}
		select {
		case <-ctx.Done():
			return ic, &exitError{code: 1, msg: fmt.Sprintf("image cache %s is %s after %s", ic.Name, ic.Status, timeout)}
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (a *cli) printCaches(output string, caches ...*api.ImageCache) error {
	if output == outputJSON {
		if len(caches) == 1 {
			return a.printJSON(caches[0])
		}
		if caches == nil {
			caches = []*api.ImageCache{}
		}
		return a.printJSON(caches)
	}
	tw := newTable(a.out, "ID", "NAME", "STATUS", "IMAGES", "SIZE", "HOSTS", "RETENTION", "AGE")
	now := timeNow()
	for _, c := range caches {
		ready := 0
		for _, h := range c.HostStates {
			if h.Status == api.ImageCacheReady && h.Generation == c.Generation {
				ready++
			}
		}
		ret := "-"
		if c.RetentionDays > 0 {
			ret = fmt.Sprintf("%dd", c.RetentionDays)
		}
		row(tw, c.ID, c.Name, string(c.Status), strings.Join(c.Images, ","), humanBytes(c.Size), fmt.Sprintf("%d/%d", ready, len(c.HostStates)), ret, age(c.CreatedAt, now))
	}
	return tw.Flush()
}

func newCacheLsCmd(a *cli) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List image caches",
		Args:    noArgs(""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(cmd, output); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			list, err := c.ImageCaches(cmd.Context())
			if err != nil {
				return err
			}
			ptrs := make([]*api.ImageCache, len(list))
			for i := range list {
				ptrs[i] = &list[i]
			}
			if output == outputJSON && len(ptrs) == 1 {
				return a.printJSON(ptrs) // a list stays a list
			}
			return a.printCaches(output, ptrs...)
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func newCacheInspectCmd(a *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "inspect CACHE",
		Aliases: []string{"describe"},
		Short:   "Show an image cache in full (JSON), with its state on each host",
		Args:    exactArgs(1, "one CACHE id or name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ic, err := c.GetImageCache(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printJSON(ic)
		},
	}
	return cmd
}

func newCacheUpdateCmd(a *cli) *cobra.Command {
	var output string
	var images []string
	var hosts, retention int
	var wait time.Duration
	var rf registryFlags
	cmd := &cobra.Command{
		Use:   "update CACHE",
		Short: "Change an image cache's images, credentials, host count or retention",
		Args:  exactArgs(1, "one CACHE id or name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(cmd, output); err != nil {
				return err
			}
			first := ""
			if len(images) > 0 {
				first = images[0]
			}
			creds, err := rf.credentials(a, first)
			if err != nil {
				return usagef(cmd, "%v", err)
			}
			req := api.ImageCacheRequest{Images: images, ImageRegistryCredentials: creds, InsecureRegistries: rf.insecure, PlainHTTPRegistries: rf.plainHTTP}
			if cmd.Flags().Changed("hosts") {
				req.Hosts = &hosts
			}
			if cmd.Flags().Changed("retention-days") {
				req.RetentionDays = &retention
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ic, err := c.UpdateImageCache(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if wait > 0 {
				if ic, err = waitCache(cmd.Context(), c, ic.ID, wait, a.err, output != outputJSON); err != nil {
					return err
				}
			}
			return a.printCaches(output, ic)
		},
	}
	cmd.Flags().StringArrayVar(&images, "image", nil, "the cache's images, replacing the old list (repeatable)")
	cmd.Flags().IntVar(&hosts, "hosts", 0, "number of hosts that keep the cache (0: every host)")
	cmd.Flags().IntVar(&retention, "retention-days", 0, "retention in days (0: never expires)")
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for the cache to be Ready again")
	rf.add(cmd)
	addOutputFlag(cmd, &output)
	return cmd
}

func newCacheRmCmd(a *cli) *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:     "rm CACHE...",
		Aliases: []string{"delete"},
		Short:   "Delete image caches (their images go once no group uses them)",
		Args:    minArgs(1, "at least one CACHE id or name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			failed := 0
			for _, id := range args {
				ic, err := c.DeleteImageCache(cmd.Context(), id)
				if err != nil {
					fmt.Fprintf(a.err, "Error: %s: %v\n", id, err)
					failed++
					continue
				}
				if wait > 0 {
					deadline := time.Now().Add(wait)
					for time.Now().Before(deadline) {
						if _, err := c.GetImageCache(cmd.Context(), ic.ID); client.IsNotFound(err) {
							break
						}
						time.Sleep(300 * time.Millisecond)
					}
				}
				fmt.Fprintln(a.out, ic.ID)
			}
			if failed > 0 {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for the cache to be gone")
	return cmd
}
