package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// testLifecycle: groups across three hosts, their network, logs, exec,
// metrics, events, restart and delete.
func testLifecycle(t *testing.T, cl *cluster) {
	labels := cl.labelsFor(t, "lifecycle")
	const n = 6
	var ids []string
	for i := 0; i < n; i++ {
		g := cl.create(t, fmt.Sprintf("web-%d", i), webSpec(), labels)
		ids = append(ids, g.ID)
	}
	groups := make([]*api.Group, n)
	for i, id := range ids {
		groups[i] = cl.waitStatus(t, nil, id, api.StatusRunning, 60*time.Second)
	}

	// Spread: every host got some, and no host has more than one above
	// another.
	hostsByName, err := cl.hosts(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	names := cl.hostNames(t)
	perHost := map[string]int{}
	ips := map[string]string{}
	for _, g := range groups {
		name := names[g.HostID]
		if name == "" {
			t.Fatalf("group %s on unknown host %q", g.Name, g.HostID)
		}
		perHost[name]++
		if g.IP == "" {
			t.Fatalf("group %s Running without an IP: %s", g.Name, describe(g))
		}
		if other, dup := ips[g.IP]; dup {
			t.Errorf("groups %s and %s share IP %s", other, g.Name, g.IP)
		}
		ips[g.IP] = g.Name
		cidr := netip.MustParsePrefix(hostsByName[name].PodCIDR)
		if ip, err := netip.ParseAddr(g.IP); err != nil || !cidr.Contains(ip) {
			t.Errorf("group %s on %s has IP %s outside the host's pod CIDR %s", g.Name, name, g.IP, cidr)
		}
	}
	lo, hi := n, 0
	for _, h := range []string{"host-a", "host-b", "host-c"} {
		lo, hi = min(lo, perHost[h]), max(hi, perHost[h])
	}
	if lo == 0 || hi-lo > 1 {
		t.Errorf("spread policy: groups per host %v, want an even spread over 3 hosts", perHost)
	}

	// The host reaches every group's httpd.
	for _, g := range groups {
		body := httpGetEventually(t, "http://"+g.IP+":8080/", 20*time.Second)
		if strings.TrimSpace(body) != "ok" {
			t.Errorf("GET %s from the host: %q, want ok", g.IP, body)
		}
	}
	// One group reaches another on a different host. (Not busybox's
	// wget -T: it segfaults in this busybox build.)
	var from, to *api.Group
	for _, a := range groups {
		for _, b := range groups {
			if a.HostID != b.HostID {
				from, to = a, b
			}
		}
	}
	if from == nil {
		t.Fatal("all groups on one host")
	}
	res, err := cl.c.Exec(ctxT(t, 30*time.Second), from.ID, api.ExecRequest{Command: []string{"timeout", "10", "wget", "-qO-", "http://" + to.IP + ":8080/"}})
	if err != nil {
		t.Fatalf("exec wget in %s: %v", from.Name, err)
	}
	if res.ExitCode != 0 || strings.TrimSpace(res.Stdout) != "ok" {
		t.Errorf("wget %s from %s (%s to %s): exit %d stdout %q stderr %q", to.IP, from.Name, names[from.HostID], names[to.HostID], res.ExitCode, res.Stdout, res.Stderr)
	}

	web := groups[0]
	t.Run("ExecOneShot", func(t *testing.T) {
		res, err := cl.c.Exec(ctxT(t, 30*time.Second), web.ID, api.ExecRequest{Command: []string{"sh", "-c", "echo out; echo err >&2; exit 7"}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Stdout != "out\n" || res.Stderr != "err\n" || res.ExitCode != 7 {
			t.Errorf("exec: stdout %q stderr %q exit %d; want out, err, 7", res.Stdout, res.Stderr, res.ExitCode)
		}
		res, err = cl.c.Exec(ctxT(t, 30*time.Second), web.ID, api.ExecRequest{Command: []string{"cat"}, Stdin: "from stdin"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Stdout != "from stdin" || res.ExitCode != 0 {
			t.Errorf("exec cat with stdin: stdout %q exit %d", res.Stdout, res.ExitCode)
		}
		res, err = cl.c.Exec(ctxT(t, 30*time.Second), web.ID, api.ExecRequest{Command: []string{"/no/such/binary"}})
		if err == nil && res.ExitCode == 0 {
			t.Errorf("exec of a missing binary succeeded: %+v", res)
		}
	})

	t.Run("ExecInteractiveTTY", func(t *testing.T) {
		pr, pw := io.Pipe()
		defer pw.Close()
		var out syncBuf
		resize := make(chan api.TermSize, 1)
		resize <- api.TermSize{Rows: 40, Cols: 120}
		done := make(chan struct{})
		var code int
		var xerr error
		go func() {
			defer close(done)
			code, xerr = cl.c.ExecInteractive(ctxT(t, 60*time.Second), web.ID, client.ExecOptions{
				Command: []string{"sh"}, TTY: true, Stdin: pr, Stdout: &out, Resize: resize,
			})
		}()
		if _, err := io.WriteString(pw, "tty; stty size; echo $((40+2))-answer; exit 5\n"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Fatalf("interactive exec did not end; output so far %q", out.String())
		}
		if xerr != nil {
			t.Fatalf("interactive exec: %v (output %q)", xerr, out.String())
		}
		if code != 5 {
			t.Errorf("interactive exec exit code %d, want 5 (output %q)", code, out.String())
		}
		o := out.String()
		if !strings.Contains(o, "42-answer") || !strings.Contains(o, "/dev/pts/") {
			t.Errorf("interactive exec output %q: want a /dev/pts tty and 42-answer", o)
		}
		if !strings.Contains(o, "40 120") {
			t.Errorf("interactive exec output %q: terminal size 40x120 not applied", o)
		}
	})

	t.Run("AttachTTY", func(t *testing.T) {
		// A container of its own with tty and stdin: attach drives its
		// shell through server → agent → runtime relay; its output is
		// also in the log; detaching leaves it running.
		spec := busybox("sh")
		spec.Containers[0].TTY, spec.Containers[0].Stdin = true, true
		spec.RestartPolicy = api.RestartNever
		g := cl.create(t, "attacher", spec, labels)
		cl.waitStatus(t, nil, g.ID, api.StatusRunning, 60*time.Second)
		pr, pw := io.Pipe()
		defer pw.Close()
		var out syncBuf
		ctx, cancel := context.WithCancel(ctxT(t, 60*time.Second))
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- cl.c.Attach(ctx, g.ID, client.AttachOptions{Stdin: pr, Stdout: &out}) }()
		if _, err := io.WriteString(pw, "tty; echo $((40+2))-attached\n"); err != nil {
			t.Fatal(err)
		}
		if err := poll(30*time.Second, func() (bool, error) {
			o := out.String()
			return strings.Contains(o, "42-attached") && strings.Contains(o, "/dev/pts/"), nil
		}); err != nil {
			t.Fatalf("attach output %q", out.String())
		}
		cancel()
		<-done
		var all string
		if err := poll(20*time.Second, func() (bool, error) {
			all, _ = readLogs(cl.c, g.ID, client.LogOptions{})
			return strings.Contains(all, "42-attached"), nil
		}); err != nil {
			t.Fatalf("logs never showed the attached output: %q", all)
		}
		// Detached: still running; a second attach ends it.
		pr2, pw2 := io.Pipe()
		defer pw2.Close()
		done2 := make(chan error, 1)
		go func() { done2 <- cl.c.Attach(ctxT(t, 60*time.Second), g.ID, client.AttachOptions{Stdin: pr2}) }()
		if _, err := io.WriteString(pw2, "exit 3\n"); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done2:
			if err != nil {
				t.Errorf("attach to a container that exits: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("attach did not end when the container exited")
		}
	})

	t.Run("Logs", func(t *testing.T) {
		// Prints five lines, then waits for /tmp/go before a last line.
		spec := busybox("sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo last")
		spec.RestartPolicy = api.RestartNever
		g := cl.create(t, "logger", spec, labels)
		cl.waitStatus(t, nil, g.ID, api.StatusRunning, 60*time.Second)
		var all string
		if err := poll(20*time.Second, func() (bool, error) {
			all, _ = readLogs(cl.c, g.ID, client.LogOptions{})
			return strings.Contains(all, "line5"), nil
		}); err != nil {
			t.Fatalf("logs never showed line5: %q", all)
		}
		if all != "line1\nline2\nline3\nline4\nline5\n" {
			t.Errorf("logs = %q", all)
		}
		two := 2
		tail, err := readLogs(cl.c, g.ID, client.LogOptions{Tail: &two})
		if err != nil {
			t.Fatal(err)
		}
		if tail != "line4\nline5\n" {
			t.Errorf("logs tail=2 = %q, want line4 line5", tail)
		}
		// Follow: the stream delivers the rest and ends when the container
		// exits.
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		rc, err := cl.c.Logs(ctx, g.ID, client.LogOptions{Follow: true, Tail: &two})
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		lines := make(chan string, 16)
		ended := make(chan error, 1)
		go func() {
			sc := bufio.NewScanner(rc)
			for sc.Scan() {
				lines <- sc.Text()
			}
			ended <- sc.Err()
		}()
		want := []string{"line4", "line5"}
		for _, w := range want {
			select {
			case l := <-lines:
				if l != w {
					t.Errorf("follow: got %q, want %q", l, w)
				}
			case <-ctx.Done():
				t.Fatalf("follow: no %q", w)
			}
		}
		if _, err := cl.c.Exec(ctxT(t, 30*time.Second), g.ID, api.ExecRequest{Command: []string{"touch", "/tmp/go"}}); err != nil {
			t.Fatal(err)
		}
		select {
		case l := <-lines:
			if l != "last" {
				t.Errorf("follow: got %q, want last", l)
			}
		case <-ctx.Done():
			t.Fatal("follow: the line written after the stream opened never came")
		}
		select {
		case err := <-ended:
			if err != nil {
				t.Errorf("follow stream ended with %v", err)
			}
		case <-ctx.Done():
			t.Error("follow stream did not end when the container exited")
		}
		g = cl.waitStatus(t, nil, g.ID, api.StatusSucceeded, 30*time.Second)
		if c := firstContainer(t, g); c.ExitCode == nil || *c.ExitCode != 0 {
			t.Errorf("logger container: %+v", c)
		}
	})

	t.Run("Metrics", func(t *testing.T) {
		var m *api.Metrics
		err := poll(20*time.Second, func() (bool, error) {
			var err error
			m, err = cl.c.Metrics(context.Background(), web.ID)
			return err == nil && m.MemoryUsed > 0, nil
		})
		if err != nil {
			t.Fatalf("metrics never showed memory use: %+v", m)
		}
		if m.Pids == 0 {
			t.Errorf("metrics: pids 0 for a running httpd: %+v", m)
		}
	})

	t.Run("Events", func(t *testing.T) {
		var reasons []string
		err := poll(20*time.Second, func() (bool, error) {
			evs, err := cl.c.Events(context.Background(), web.ID)
			if err != nil {
				return false, nil
			}
			reasons = reasons[:0]
			for _, e := range evs {
				reasons = append(reasons, e.Reason)
			}
			return containsAll(reasons, "Scheduled", "Started"), nil
		})
		if err != nil {
			t.Errorf("events %v: want Scheduled and Started", reasons)
		}
	})

	t.Run("Restart", func(t *testing.T) {
		g := groups[1]
		before := firstContainer(t, g)
		if _, err := cl.c.RestartGroup(ctxT(t, 30*time.Second), g.ID); err != nil {
			t.Fatal(err)
		}
		after := cl.waitFor(t, g.ID, "restartCount+1 and Running", 60*time.Second, func(g *api.Group) bool {
			return g.Status == api.StatusRunning && len(g.Containers) > 0 && g.Containers[0].RestartCount == before.RestartCount+1 && g.Containers[0].State == api.ContainerRunning
		})
		c := firstContainer(t, after)
		if c.PID == before.PID {
			t.Errorf("restart kept pid %d", c.PID)
		}
		if pidAlive(before.PID) {
			t.Errorf("old container pid %d still alive after restart", before.PID)
		}
		body := httpGetEventually(t, "http://"+after.IP+":8080/", 20*time.Second)
		if strings.TrimSpace(body) != "ok" {
			t.Errorf("after restart GET = %q", body)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		g, err := cl.c.GetGroup(ctxT(t, 10*time.Second), groups[2].ID)
		if err != nil {
			t.Fatal(err)
		}
		pid := containerPID(g)
		host := cl.agent(names[g.HostID])
		cgBefore := sandboxCgroups(host)
		if _, err := cl.c.DeleteGroup(ctxT(t, 10*time.Second), g.ID, false); err != nil {
			t.Fatal(err)
		}
		// httpd ignores SIGTERM as pid 1 of its namespace; the grace period
		// (2 s) then ends in SIGKILL.
		cl.waitGone(t, g.ID, 60*time.Second)
		if err := poll(10*time.Second, func() (bool, error) { return !pidAlive(pid), nil }); err != nil {
			t.Errorf("deleted group's process %d still alive", pid)
		}
		if r := routeTo(g.IP); r != "" {
			t.Errorf("deleted group's IP still routed: %s", r)
		}
		if err := poll(10*time.Second, func() (bool, error) { return len(sandboxCgroups(host)) == len(cgBefore)-1, nil }); err != nil {
			t.Errorf("sandbox cgroups on %s: before %v, after %v; want one fewer", host.name, cgBefore, sandboxCgroups(host))
		}
		// Without the route the address goes to the default gateway, which
		// on some machines (a test sandbox's egress proxy) accepts any TCP
		// connection: check the content, not the connect.
		hc := &http.Client{Timeout: 2 * time.Second}
		if resp, err := hc.Get("http://" + g.IP + ":8080/"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.TrimSpace(string(b)) == "ok" {
				t.Errorf("deleted group's httpd at %s still serves", g.IP)
			}
		}
	})
}

func containsAll(have []string, want ...string) bool {
	set := map[string]bool{}
	for _, h := range have {
		set[h] = true
	}
	for _, w := range want {
		if !set[w] {
			return false
		}
	}
	return true
}

// httpGetEventually GETs url until it answers 200.
func httpGetEventually(t *testing.T, url string, timeout time.Duration) string {
	t.Helper()
	hc := &http.Client{Timeout: 2 * time.Second}
	var body string
	var last error
	err := poll(timeout, func() (bool, error) {
		resp, err := hc.Get(url)
		if err != nil {
			last = err
			return false, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		last = fmt.Errorf("status %d", resp.StatusCode)
		return resp.StatusCode == 200, nil
	})
	if err != nil {
		t.Fatalf("GET %s: no 200 within %s: %v", url, timeout, last)
	}
	return body
}

func readLogs(c *client.Client, id string, o client.LogOptions) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := c.Logs(ctx, id, o)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}

// routeTo returns the host's route to ip, "" when there is none.
func routeTo(ip string) string {
	out, _ := exec.Command("ip", "-4", "-o", "route", "show", ip+"/32").Output()
	return strings.TrimSpace(string(out))
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
