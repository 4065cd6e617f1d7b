package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiffhq/skiff/api"
)

// registryFlags are the registry access options of `image pull` and
// `cache create/update`.
type registryFlags struct {
	user          string
	passwordStdin bool
	server        string
	insecure      []string
	plainHTTP     []string
}

func (f *registryFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVarP(&f.user, "user", "u", "", "registry user name (the password comes from --password-stdin or $SKIFF_REGISTRY_PASSWORD)")
	fl.BoolVar(&f.passwordStdin, "password-stdin", false, "read the registry password from standard input")
	fl.StringVar(&f.server, "registry", "", "registry the credentials are for (default: the first image's)")
	fl.StringArrayVar(&f.insecure, "insecure-registry", nil, "registry HOST[:PORT] whose TLS certificate is not checked (repeatable)")
	fl.StringArrayVar(&f.plainHTTP, "plain-http-registry", nil, "registry HOST[:PORT] spoken to over plain HTTP (repeatable)")
}

// credentials builds the credential list; image names the default server.
func (f *registryFlags) credentials(a *cli, image string) ([]api.ImageRegistryCredential, error) {
	if f.user == "" {
		if f.passwordStdin {
			return nil, fmt.Errorf("--password-stdin needs --user")
		}
		return nil, nil
	}
	pw := os.Getenv("SKIFF_REGISTRY_PASSWORD")
	if f.passwordStdin {
		line, err := bufio.NewReader(a.in).ReadString('\n')
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("read the password from stdin: %w", err)
		}
		pw = strings.TrimRight(line, "\r\n")
	}
	if pw == "" {
		return nil, fmt.Errorf("--user %s needs a password: --password-stdin or $SKIFF_REGISTRY_PASSWORD", f.user)
	}
	server := f.server
	if server == "" {
		server = registryOf(image)
	}
	return []api.ImageRegistryCredential{{Server: server, UserName: f.user, Password: pw}}, nil
}

// registryOf is the registry part of an image reference, as Docker reads it.
func registryOf(ref string) string {
	first, _, ok := strings.Cut(ref, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return first
	}
	return "docker.io"
}

func newImagePullCmd(a *cli) *cobra.Command {
	var output string
	var hosts []string
	var quiet bool
	var rf registryFlags
	cmd := &cobra.Command{
		Use:   "pull IMAGE",
		Short: "Pull an image from its registry onto every host (or --host ones)",
		Long: `Pull an image (NAME[:TAG] or NAME@sha256:DIGEST) from its registry onto
the hosts, showing progress per layer as docker pull does. Hosts that have
some layers already fetch only the others. A multi-platform image resolves
to each host's platform.`,
		Args: exactArgs(1, "one IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(cmd, output); err != nil {
				return err
			}
			creds, err := rf.credentials(a, args[0])
			if err != nil {
				return usagef(cmd, "%v", err)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			d := newPullDisplay(a.err, args[0], isTerminal(a.err) && !quiet && output != outputJSON)
			final, err := c.PullImage(cmd.Context(), api.PullImageRequest{Image: args[0], Credentials: creds,
				InsecureRegistries: rf.insecure, PlainHTTPRegistries: rf.plainHTTP, Hosts: hosts}, d.update)
			d.finish()
			if err != nil {
				return err
			}
			if output == outputJSON {
				if final == nil {
					final = []api.PullProgress{}
				}
				if err := a.printJSON(final); err != nil {
					return err
				}
			}
			failed := 0
			for _, p := range final {
				if p.Status == "error" {
					failed++
					fmt.Fprintf(a.err, "Error: host %s: %s (%s)\n", p.HostID, p.Error, p.Reason)
				} else if output != outputJSON {
					fmt.Fprintf(a.out, "%s: %s on host %s (%s fetched in %.1fs)\n", args[0], shortDigest(p.Digest), p.HostID, humanBytes(p.Fetched), p.Seconds)
				}
			}
			if failed > 0 {
				return &exitError{code: 1, msg: fmt.Sprintf("the pull failed on %d of %d hosts", failed, len(final))}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&hosts, "host", nil, "pull on this host id only (repeatable)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress display")
	rf.add(cmd)
	addOutputFlag(cmd, &output)
	return cmd
}

// pullDisplay draws docker-pull-like progress: one line per layer, summed
// over the hosts, and a total line with the rate. On a terminal it redraws
// in place ten times a second; elsewhere it prints nothing until the end.
type pullDisplay struct {
	w     io.Writer
	ref   string
	live  bool
	start time.Time

	mu     sync.Mutex
	layers map[string]*layerView
	order  []string
	hosts  map[string]bool
	drawn  int // lines drawn last time
	last   time.Time
}

type layerView struct {
	cur, total map[string]int64 // by host
	state      map[string]string
}

func newPullDisplay(w io.Writer, ref string, live bool) *pullDisplay {
	return &pullDisplay{w: w, ref: ref, live: live, start: time.Now(), layers: map[string]*layerView{}, hosts: map[string]bool{}}
}

func (d *pullDisplay) update(p api.PullProgress) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hosts[p.HostID] = true
	if p.Layer != "" {
		lv := d.layers[p.Layer]
		if lv == nil {
			lv = &layerView{cur: map[string]int64{}, total: map[string]int64{}, state: map[string]string{}}
			d.layers[p.Layer] = lv
			d.order = append(d.order, p.Layer)
		}
		if p.Total > 0 {
			lv.total[p.HostID] = p.Total
		}
		switch p.Status {
		case "downloading":
			lv.cur[p.HostID] = p.Current
		case "done":
			if lv.state[p.HostID] != "exists" {
				lv.cur[p.HostID] = lv.total[p.HostID]
			}
		}
		if p.Status != "done" || lv.state[p.HostID] != "exists" {
			lv.state[p.HostID] = p.Status
		}
	}
	if d.live && time.Since(d.last) >= 100*time.Millisecond {
		d.draw()
	}
}

func (d *pullDisplay) draw() {
	d.last = time.Now()
	var b strings.Builder
	if d.drawn > 0 {
		fmt.Fprintf(&b, "\033[%dA", d.drawn)
	}
	lines := d.lines()
	for _, l := range lines {
		b.WriteString("\r\033[K" + l + "\n")
	}
	d.drawn = len(lines)
	io.WriteString(d.w, b.String())
}

func (d *pullDisplay) lines() []string {
	var out []string
	var cur, total int64
	for _, id := range d.order {
		lv := d.layers[id]
		var c, t int64
		states := map[string]int{}
		for h := range d.hosts {
			c += lv.cur[h]
			if lv.state[h] != "exists" {
				t += lv.total[h]
			}
			states[lv.state[h]]++
		}
		cur, total = cur+c, total+t
		name := strings.TrimPrefix(id, "sha256:")
		if len(name) > 12 {
			name = name[:12]
		}
		var what string
		switch {
		case states["exists"] == len(d.hosts):
			what = "Already exists"
		case states["done"]+states["exists"] == len(d.hosts):
			what = "Pull complete"
		case states["downloading"] > 0:
			what = fmt.Sprintf("Downloading  %s %s/%s", bar(c, t, 30), humanBytes(c), humanBytes(t))
		default:
			what = "Waiting"
		}
		out = append(out, fmt.Sprintf("%s: %s", name, what))
	}
	el := time.Since(d.start).Seconds()
	rate := ""
	if el > 0 {
		rate = humanBytes(int64(float64(cur)/el)) + "/s"
	}
	hosts := make([]string, 0, len(d.hosts))
	for h := range d.hosts {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	out = append(out, fmt.Sprintf("%d layers, %s/%s on %d host(s), %s, %.1fs", len(d.order), humanBytes(cur), humanBytes(total), len(hosts), rate, el))
	return out
}

func bar(cur, total int64, width int) string {
	n := 0
	if total > 0 {
		n = int(float64(cur) / float64(total) * float64(width))
	}
	n = min(max(n, 0), width)
	s := strings.Repeat("=", n)
	if n < width {
		s += ">" + strings.Repeat(" ", width-n-1)
	}
	return "[" + s + "]"
}

func (d *pullDisplay) finish() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.live {
		d.draw()
		return
	}
	if len(d.order) > 0 {
		lines := d.lines()
		fmt.Fprintln(d.w, lines[len(lines)-1])
	}
}
