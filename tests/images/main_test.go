// Package images tests registry pulls and image caches end to end: the
// real skiff binary as a server and two agents (real sandboxes), Debian's
// docker-registry on loopback, and the CLI. The registry's own access log
// is the witness that a group matched to an image cache starts without any
// registry traffic.
//
//	go test ./tests/images/ -count=1 -v      (as root)
//
// $SKIFF_BIN names a prebuilt binary; otherwise TestMain builds one.
package images

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

var (
	skiffBin   string
	testRoot   string
	skipReason string
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	switch {
	case os.Geteuid() != 0:
		skipReason = "runs real sandboxes: run as root"
	case runtime.GOOS != "linux":
		skipReason = "needs Linux"
	}
	if skipReason != "" {
		return m.Run()
	}
	var err error
	if testRoot, err = os.MkdirTemp("", "skiff-images-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_ = os.Chmod(testRoot, 0o755)
	defer os.RemoveAll(testRoot)
	if skiffBin = os.Getenv("SKIFF_BIN"); skiffBin == "" {
		skiffBin = filepath.Join(testRoot, "skiff")
		cmd := exec.Command("go", "build", "-o", skiffBin, "./cmd/skiff")
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "images: go build: %v\n%s", err, out)
			return 1
		}
	} else if skiffBin, err = filepath.Abs(skiffBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// proc is a skiff process with its output kept.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func start(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(skiffBin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	return p
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) waitFor(re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(p.output()); m != nil {
			return m, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited:\n%s", p.name, tail(p.output(), 30))
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("%s did not print %s within %s:\n%s", p.name, re, timeout, tail(p.output(), 30))
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cluster is a server and two agents (hosts) on this machine.
type cluster struct {
	t          testing.TB
	dir        string
	server     *proc
	agents     []*proc
	configPath string
	c          *client.Client
}

var joinToken = regexp.MustCompile(`join token: (\S+)`)

// Pod ranges of their own, apart from tests/integration's 10.213/16.
const clusterCIDR = "10.214.0.0/16"

var podCIDRs = []string{"10.214.0.0/20", "10.214.16.0/20"}

func newCluster(t testing.TB, agentArgs ...string) *cluster {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	dir, err := os.MkdirTemp(testRoot, "c-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dir, 0o755)
	cl := &cluster{t: t, dir: dir, configPath: filepath.Join(dir, "client.json")}
	t.Cleanup(cl.cleanup)
	ports := freePorts(t, 4)
	api := fmt.Sprintf("127.0.0.1:%d", ports[0])
	agentAddr := fmt.Sprintf("127.0.0.1:%d", ports[1])
	cl.server = start(t, "server", "server", "--data-dir", filepath.Join(dir, "server"), "--listen", api, "--agent-listen", agentAddr,
		"--etcd-client-url", fmt.Sprintf("http://127.0.0.1:%d", ports[2]), "--etcd-peer-url", fmt.Sprintf("http://127.0.0.1:%d", ports[3]),
		"--cluster-cidr", clusterCIDR, "--write-client-config", cl.configPath)
	m, err := cl.server.waitFor(joinToken, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for i, cidr := range podCIDRs {
		name := fmt.Sprintf("img-host-%d", i)
		args := append([]string{"agent", "--server", agentAddr, "--join-token", m[1], "--data-dir", filepath.Join(dir, name),
			"--name", name, "--pod-cidr", cidr, "--cpu", "4", "--memory", "4Gi", "--label", "host=" + name}, agentArgs...)
		cl.agents = append(cl.agents, start(t, name, args...))
	}
	cfg, err := client.LoadConfig(cl.configPath)
	if err != nil {
		t.Fatal(err)
	}
	if cl.c, err = client.New(cfg); err != nil {
		t.Fatal(err)
	}
	cl.eventually(60*time.Second, "both hosts Ready", func() bool {
		hs, err := cl.c.Hosts(context.Background())
		ready := 0
		for _, h := range hs {
			if h.State == "Ready" {
				ready++
			}
		}
		return err == nil && ready == len(podCIDRs)
	})
	return cl
}

func (cl *cluster) eventually(timeout time.Duration, what string, ok func() bool) {
	cl.t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			cl.t.Fatalf("not %s within %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cli runs a skiff client verb; stdin may be nil.
func (cl *cluster) cli(stdin string, args ...string) (string, error) {
	cmd := exec.Command(skiffBin, append([]string{"--config", cl.configPath}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (cl *cluster) cleanup() {
	t := cl.t
	if cl.c != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for ctx.Err() == nil {
			gs, err := cl.c.ListAllGroups(ctx, client.ListOptions{All: true})
			if err != nil || len(gs) == 0 {
				break
			}
			for _, g := range gs {
				if !g.Deleting {
					_, _ = cl.c.DeleteGroup(ctx, g.ID, true)
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	for _, a := range cl.agents {
		a.stop()
	}
	cl.server.stop()
	// The agents leave their (empty) cgroup parents, skiff/<FNV-1a of the
	// data dir> as cmd/skiff names them; remove them, children first.
	for i := range podCIDRs {
		parent := cgroupParentOf(filepath.Join(cl.dir, fmt.Sprintf("img-host-%d", i)))
		hier, _ := filepath.Glob("/sys/fs/cgroup/*")
		for _, h := range append(hier, "/sys/fs/cgroup") {
			var dirs []string
			_ = filepath.WalkDir(filepath.Join(h, parent), func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			for j := len(dirs) - 1; j >= 0; j-- {
				if err := os.Remove(dirs[j]); err != nil && !os.IsNotExist(err) {
					t.Errorf("cleanup: cgroup %s: %v", dirs[j], err)
				}
			}
		}
	}
	if t.Failed() {
		t.Logf("---- server ----\n%s", tail(cl.server.output(), 60))
		for _, a := range cl.agents {
			t.Logf("---- %s (%v) ----\n%s", a.name, a.cmd.ProcessState, tail(a.output(), 60))
		}
	}
	_ = os.RemoveAll(cl.dir)
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var out []int
	var ls []net.Listener
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// waitGroup waits for a group to satisfy ok.
func (cl *cluster) waitGroup(id, what string, timeout time.Duration, ok func(g *api.Group) bool) *api.Group {
	cl.t.Helper()
	deadline := time.Now().Add(timeout)
	var g *api.Group
	var err error
	for time.Now().Before(deadline) {
		if g, err = cl.c.GetGroup(context.Background(), id); err == nil && ok(g) {
			return g
		}
		time.Sleep(100 * time.Millisecond)
	}
	evs, _ := cl.c.Events(context.Background(), id)
	cl.t.Fatalf("group %s not %s within %s: %+v (err %v); events %+v", id, what, timeout, g, err, evs)
	return nil
}

// cgroupParentOf mirrors cmd/skiff's cgroup parent per agent data dir.
func cgroupParentOf(dataDir string) string {
	var h uint32 = 2166136261
	for i := 0; i < len(dataDir); i++ {
		h ^= uint32(dataDir[i])
		h *= 16777619
	}
	return fmt.Sprintf("skiff/%08x", h)
}
