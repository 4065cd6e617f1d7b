package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiffhq/skiff/api"
)

func newImageCmd(a *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "image",
		Aliases: []string{"images"},
		Short:   "Manage images in the hosts' stores",
	}
	cmd.AddCommand(newImageImportCmd(a), newImageLsCmd(a), newImagePullCmd(a))
	return cmd
}

func newImageImportCmd(a *cli) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Import an image tarball (OCI layout or docker save) into every host",
		Args:  exactArgs(1, "one FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(cmd, output); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			p := newProgress(a.err, filepath.Base(args[0]), isTerminal(a.err))
			res, err := c.ImportImage(cmd.Context(), args[0], p.update)
			p.done(err == nil)
			if err != nil {
				return err
			}
			failed := 0
			for _, h := range res.Hosts {
				if h.Error != "" {
					fmt.Fprintf(a.err, "Warning: host %s: %s\n", h.HostID, h.Error)
					failed++
				}
			}
			if output == outputJSON {
				if err := a.printJSON(res); err != nil {
					return err
				}
			} else {
				printImages(a.out, res.Images)
			}
			if len(res.Images) == 0 || (failed > 0 && failed == len(res.Hosts)) {
				return &exitError{code: 1, msg: "the import failed on every host"}
			}
			return nil
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func newImageLsCmd(a *cli) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List images",
		Args:    noArgs(""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(cmd, output); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			imgs, err := c.Images(cmd.Context())
			if err != nil {
				return err
			}
			if output == outputJSON {
				if imgs == nil {
					imgs = []api.Image{}
				}
				return a.printJSON(imgs)
			}
			printImages(a.out, imgs)
			return nil
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func printImages(w io.Writer, imgs []api.Image) {
	tw := newTable(w, "REF", "DIGEST", "SIZE", "LAYERS", "HOSTS", "AGE")
	now := timeNow()
	for _, im := range imgs {
		created := "-"
		if !im.CreatedAt.IsZero() {
			created = age(im.CreatedAt, now)
		}
		row(tw, orDash(im.Ref), shortDigest(im.Digest), humanBytes(im.Size), fmt.Sprint(im.Layers), fmt.Sprint(len(im.Hosts)), created)
	}
	tw.Flush()
}

// shortDigest keeps the algorithm and 12 hex digits.
func shortDigest(d string) string {
	alg, hex, ok := strings.Cut(d, ":")
	if !ok {
		return orDash(d)
	}
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return alg + ":" + hex
}

// progress draws an upload progress line on a terminal, at most ten times
// a second; elsewhere it prints one summary line at the end.
type progress struct {
	w     io.Writer
	name  string
	live  bool
	start time.Time

	mu          sync.Mutex
	last        time.Time
	sent, total int64
}

func newProgress(w io.Writer, name string, live bool) *progress {
	return &progress{w: w, name: name, live: live, start: time.Now()}
}

func (p *progress) update(sent, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent, p.total = sent, total
	now := time.Now()
	if !p.live || (now.Sub(p.last) < 100*time.Millisecond && sent < total) {
		return
	}
	p.last = now
	fmt.Fprintf(p.w, "\r\033[KUploading %s", p.line(now))
}

func (p *progress) line(now time.Time) string {
	pct := 100.0
	if p.total > 0 {
		pct = float64(p.sent) / float64(p.total) * 100
	}
	rate := ""
	if el := now.Sub(p.start).Seconds(); el > 0 {
		rate = humanBytes(int64(float64(p.sent)/el)) + "/s"
	}
	return fmt.Sprintf("%s: %s / %s (%.0f%%) %s", p.name, humanBytes(p.sent), humanBytes(p.total), pct, rate)
}

// done ends the progress line.
func (p *progress) done(ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	switch {
	case p.live:
		fmt.Fprintf(p.w, "\r\033[KUploaded %s in %s\n", p.line(now), now.Sub(p.start).Round(time.Millisecond))
	case ok:
		fmt.Fprintf(p.w, "Uploaded %s in %s\n", p.line(now), now.Sub(p.start).Round(time.Millisecond))
	}
}
