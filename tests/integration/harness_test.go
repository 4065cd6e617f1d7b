package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// proc is one skiff process started by a test, its output captured.
type proc struct {
	name string
	args []string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
	f  *os.File
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		_, _ = l.f.Write(p)
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startProc runs skiff with args; its output goes to logFile and memory.
func startProc(t *testing.T, name, logFile string, args ...string) *proc {
	t.Helper()
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, args: args, out: &lockedBuffer{f: f}, done: make(chan struct{})}
	fmt.Fprintf(p.out, "=== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), skiffBin, strings.Join(args, " "))
	p.cmd = exec.Command(skiffBin, args...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	// Its own process group, so the test's terminal signals do not reach it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		fmt.Fprintf(p.out, "=== %s: exited: %v\n", time.Now().Format(time.RFC3339Nano), p.err)
		f.Close()
		close(p.done)
	}()
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s did not stop within %s of SIGTERM; killed", p.name, grace)
}

// kill9 kills the process at once, as a crash would.
func (p *proc) kill9() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// waitOutput waits for re to match the output and returns the submatches.
func (p *proc) waitOutput(re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(p.out.String()); m != nil {
			return m, nil
		}
		if p.exited() {
			return nil, fmt.Errorf("%s exited (%v) before printing %q", p.name, p.err, re)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not print %q within %s", p.name, re, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tail returns the last n lines of the output.
func (p *proc) tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.out.String(), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// freePorts returns n TCP ports free on 127.0.0.1 right now.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// server is one `skiff server` replica.
type server struct {
	name                                 string
	dataDir                              string
	api, agentAddr, etcdClient, etcdPeer string
	etcdEndpoints                        string // external etcd, when set
	clientConfig                         string
	token                                string
	extra                                []string // more flags
	p                                    *proc
}

func (s *server) args() []string {
	a := []string{"server", "--data-dir", s.dataDir, "--listen", s.api, "--agent-listen", s.agentAddr,
		"--etcd-client-url", s.etcdClient, "--etcd-peer-url", s.etcdPeer,
		"--cluster-cidr", podRange.String(), "--write-client-config", s.clientConfig}
	if s.etcdEndpoints != "" {
		a = append(a, "--etcd-endpoints", s.etcdEndpoints)
	}
	return append(a, s.extra...)
}

// agent is one `skiff agent`, standing for one host.
type agent struct {
	name, dataDir, zone, podCIDR string
	labels                       map[string]string
	cpu, memory                  string
	serverAddr, token            string
	extra                        []string // more flags (e.g. --pool-size)
	p                            *proc
}

func (a *agent) args() []string {
	args := []string{"agent", "--server", a.serverAddr, "--join-token", a.token, "--data-dir", a.dataDir,
		"--name", a.name, "--pod-cidr", a.podCIDR}
	if a.zone != "" {
		args = append(args, "--zone", a.zone)
	}
	for k, v := range a.labels {
		args = append(args, "--label", k+"="+v)
	}
	if a.cpu != "" {
		args = append(args, "--cpu", a.cpu)
	}
	if a.memory != "" {
		args = append(args, "--memory", a.memory)
	}
	return append(args, a.extra...)
}

// agentSpec describes a host to start.
type agentSpec struct {
	name, zone, podCIDR, cpu, memory string
	labels                           map[string]string
	extra                            []string // more agent flags
}

// cluster is a server (or several) and its agents, run as subprocesses.
type cluster struct {
	t       *testing.T
	dir     string
	servers []*server
	agents  []*agent
	cfg     api.ClientConfig
	c       *client.Client
	scope   scope
}

// clusterOptions shapes a cluster.
type clusterOptions struct {
	agents []agentSpec
	// serverArgs are more flags for the first server.
	serverArgs []string
}

// threeHosts is the default fleet: three hosts in two zones with labels.
func threeHosts(cidrs []string, memory string) []agentSpec {
	return []agentSpec{
		{name: "host-a", zone: "zone-1", podCIDR: cidrs[0], cpu: "8", memory: memory, labels: map[string]string{"disk": "ssd", "rack": "r1"}},
		{name: "host-b", zone: "zone-1", podCIDR: cidrs[1], cpu: "8", memory: memory, labels: map[string]string{"disk": "hdd", "rack": "r2"}},
		{name: "host-c", zone: "zone-2", podCIDR: cidrs[2], cpu: "8", memory: memory, labels: map[string]string{"disk": "ssd", "rack": "r3", "gpu": "none"}},
	}
}

// newCluster starts a server and the agents of opts and waits until every
// host is Ready. Its cleanup deletes every group, stops everything, removes
// leftovers and fails t if anything leaked.
func newCluster(t *testing.T, opts clusterOptions) *cluster {
	t.Helper()
	requireRoot(t)
	dir, err := os.MkdirTemp(testRoot, "c-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dir, 0o755)
	cl := &cluster{t: t, dir: dir}
	cl.scope = scope{root: dir, cidr: podRange}
	t.Cleanup(cl.cleanup)

	// No forecast-driven warm pools unless a test asks (they would change
	// the sandbox counts other tests check); later flags win.
	s := cl.startServer("server-1", "", append([]string{"--pool-max-per-host", "0"}, opts.serverArgs...)...)
	cl.cfg, err = client.LoadConfig(s.clientConfig)
	if err != nil {
		t.Fatal(err)
	}
	cl.c, err = client.New(cl.cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, as := range opts.agents {
		cl.startAgent(as)
	}
	names := make([]string, len(opts.agents))
	for i, a := range opts.agents {
		names[i] = a.name
	}
	cl.waitHostsReady(names...)
	return cl
}

func (cl *cluster) startServer(name, etcdEndpoints string, extra ...string) *server {
	t := cl.t
	t.Helper()
	ports := freePorts(t, 4)
	s := &server{
		name:          name,
		dataDir:       filepath.Join(cl.dir, name),
		api:           fmt.Sprintf("127.0.0.1:%d", ports[0]),
		agentAddr:     fmt.Sprintf("127.0.0.1:%d", ports[1]),
		etcdClient:    fmt.Sprintf("http://127.0.0.1:%d", ports[2]),
		etcdPeer:      fmt.Sprintf("http://127.0.0.1:%d", ports[3]),
		etcdEndpoints: etcdEndpoints,
		clientConfig:  filepath.Join(cl.dir, name+"-client.json"),
		extra:         extra,
	}
	cl.servers = append(cl.servers, s)
	cl.runServer(s)
	return s
}

var joinTokenRE = regexp.MustCompile(`join token: (\S+)`)

// runServer (re)starts s's process and waits until it is ready.
func (cl *cluster) runServer(s *server) {
	t := cl.t
	t.Helper()
	s.p = startProc(t, s.name, filepath.Join(cl.dir, s.name+".log"), s.args()...)
	m, err := s.p.waitOutput(joinTokenRE, 60*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.p.tail(40))
	}
	if s.token == "" {
		s.token = m[1]
	}
	if err := waitHTTP("http://"+s.api+"/healthz", 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

func (cl *cluster) startAgent(as agentSpec) *agent {
	t := cl.t
	t.Helper()
	s := cl.servers[0]
	a := &agent{name: as.name, dataDir: filepath.Join(cl.dir, as.name), zone: as.zone, podCIDR: as.podCIDR,
		labels: as.labels, cpu: as.cpu, memory: as.memory, serverAddr: s.agentAddr, token: s.token, extra: as.extra}
	p := cgroupParentOf(a.dataDir)
	registerCgroupParent(p)
	cl.scope.parents = append(cl.scope.parents, p)
	cl.agents = append(cl.agents, a)
	cl.runAgent(a)
	return a
}

// runAgent (re)starts a's process; it does not wait for readiness.
func (cl *cluster) runAgent(a *agent) {
	a.p = startProc(cl.t, a.name, filepath.Join(cl.dir, a.name+".log"), a.args()...)
}

func (cl *cluster) agent(name string) *agent {
	for _, a := range cl.agents {
		if a.name == name {
			return a
		}
	}
	cl.t.Fatalf("no agent %s", name)
	return nil
}

// hosts returns the API's hosts by name.
func (cl *cluster) hosts(ctx context.Context) (map[string]api.Host, error) {
	hs, err := cl.c.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	m := map[string]api.Host{}
	for _, h := range hs {
		m[h.Name] = h
	}
	return m, nil
}

// hostNames maps host ids to names.
func (cl *cluster) hostNames(t *testing.T) map[string]string {
	t.Helper()
	hs, err := cl.c.Hosts(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, h := range hs {
		m[h.ID] = h.Name
	}
	return m
}

// waitHostsReady waits until every named host is Ready.
func (cl *cluster) waitHostsReady(names ...string) {
	t := cl.t
	t.Helper()
	cl.waitHostsState(api.HostReady, 60*time.Second, names...)
}

func (cl *cluster) waitHostsState(state api.HostState, timeout time.Duration, names ...string) {
	t := cl.t
	t.Helper()
	var last map[string]api.Host
	err := poll(timeout, func() (bool, error) {
		hs, err := cl.hosts(context.Background())
		if err != nil {
			return false, nil
		}
		last = hs
		for _, n := range names {
			if hs[n].State != state {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		states := map[string]api.HostState{}
		for n, h := range last {
			states[n] = h.State
		}
		t.Fatalf("hosts %v not %s within %s (states %v)", names, state, timeout, states)
	}
}

// dumpLogs puts every process's output tail in the test log.
func (cl *cluster) dumpLogs() {
	for _, s := range cl.servers {
		if s.p != nil {
			cl.t.Logf("---- %s output (%s) ----\n%s", s.name, filepath.Join(cl.dir, s.name+".log"), s.p.tail(150))
		}
	}
	for _, a := range cl.agents {
		if a.p != nil {
			cl.t.Logf("---- %s output (%s) ----\n%s", a.name, filepath.Join(cl.dir, a.name+".log"), a.p.tail(150))
		}
	}
}

// cleanup runs at the end of the test that made the cluster, pass or fail.
func (cl *cluster) cleanup() {
	t := cl.t
	if t.Failed() {
		cl.dumpLogs()
	}
	// Delete every group through the API and wait for the agents to remove
	// them, so that the agents' own teardown is what gets tested.
	if cl.c != nil && cl.anyServerUp() {
		if err := cl.deleteAllGroups(60 * time.Second); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	for _, a := range cl.agents {
		if a.p != nil {
			if err := a.p.stop(15 * time.Second); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	}
	for i := len(cl.servers) - 1; i >= 0; i-- {
		if s := cl.servers[i]; s.p != nil {
			if err := s.p.stop(15 * time.Second); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	}
	if leaks := cl.scope.leaks(baseline); len(leaks) > 0 {
		failedBefore := t.Failed()
		t.Errorf("cleanup: leaked after every group was deleted and every process stopped:\n  %s", strings.Join(leaks, "\n  "))
		if !failedBefore {
			cl.dumpLogs()
		}
	}
	cl.scope.cleanup(baseline, t.Logf)
	if os.Getenv("SKIFF_IT_KEEP") != "" {
		t.Logf("kept %s (SKIFF_IT_KEEP)", cl.dir)
		return
	}
	_ = os.RemoveAll(cl.dir)
}

func (cl *cluster) anyServerUp() bool {
	for _, s := range cl.servers {
		if s.p != nil && !s.p.exited() {
			return true
		}
	}
	return false
}

// clientFor returns a client of the cluster's account talking to s.
func (cl *cluster) clientFor(s *server) *client.Client {
	cfg := cl.cfg
	cfg.Endpoint = "http://" + s.api
	c, err := client.New(cfg)
	if err != nil {
		cl.t.Fatal(err)
	}
	return c
}

// deleteAllGroups force-deletes every group and waits until none is left.
func (cl *cluster) deleteAllGroups(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var left []api.Group
	err := poll(timeout, func() (bool, error) {
		gs, err := cl.c.ListAllGroups(ctx, client.ListOptions{All: true})
		if err != nil {
			return false, nil
		}
		left = gs
		if len(gs) == 0 {
			return true, nil
		}
		for _, g := range gs {
			if !g.Deleting {
				if _, err := cl.c.DeleteGroup(ctx, g.ID, true); err != nil && !client.IsNotFound(err) {
					cl.t.Logf("cleanup: delete %s: %v", g.ID, err)
				}
			}
		}
		return false, nil
	})
	if err != nil {
		var desc []string
		for _, g := range left {
			desc = append(desc, fmt.Sprintf("%s(%s on %s deleting=%v)", g.Name, g.Status, g.HostID, g.Deleting))
		}
		return fmt.Errorf("groups still there %s after force delete: %s", timeout, strings.Join(desc, ", "))
	}
	return nil
}

// poll calls f until it returns true, an error, or timeout passes.
func poll(timeout time.Duration, f func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := f()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return errTimeout
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var errTimeout = errors.New("timed out")

func waitHTTP(url string, timeout time.Duration) error {
	err := poll(timeout, func() (bool, error) {
		resp, err := http.Get(url)
		if err != nil {
			return false, nil
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200, nil
	})
	if err != nil {
		return fmt.Errorf("%s not answering 200 within %s", url, timeout)
	}
	return nil
}

// ctxT is a context bounded by d and by the test's end.
func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// ---- group helpers ----

// busybox is a one-container spec running argv with small resources. Its
// grace period is 1 s: a shell or sleep as pid 1 of its namespace ignores
// SIGTERM, and the default 30 s would only slow the tests down.
func busybox(argv ...string) api.GroupSpec {
	return api.GroupSpec{
		CPU:                           100,
		Memory:                        64 << 20,
		TerminationGracePeriodSeconds: int64p(1),
		Containers: []api.Container{{
			Name:    "main",
			Image:   "busybox:latest",
			Command: argv,
		}},
	}
}

// webSpec serves "ok" on :8080 with busybox httpd.
// Its grace period is short: httpd, pid 1 of its namespace, ignores SIGTERM.
func webSpec() api.GroupSpec {
	s := busybox("sh", "-c", "mkdir -p /www; echo ok > /www/index.html; exec httpd -f -p 8080 -h /www")
	s.TerminationGracePeriodSeconds = int64p(2)
	return s
}

func (cl *cluster) create(t *testing.T, name string, spec api.GroupSpec, labels map[string]string) *api.Group {
	t.Helper()
	g, created, err := cl.c.CreateGroup(ctxT(t, 30*time.Second), api.CreateGroupRequest{Name: name, Labels: labels, Spec: spec})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	if !created {
		t.Fatalf("create %s: answered as an earlier create", name)
	}
	return g
}

// waitStatus waits (server-side /wait) for want, failing fast on a status
// from which want cannot be reached.
func (cl *cluster) waitStatus(t *testing.T, c *client.Client, id string, want api.Status, timeout time.Duration) *api.Group {
	t.Helper()
	if c == nil {
		c = cl.c
	}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			g, _ := c.GetGroup(context.Background(), id)
			t.Fatalf("group %s: not %s within %s; now %s", id, want, timeout, describe(g))
		}
		step := min(left, 25*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), step+10*time.Second)
		g, err := c.WaitAny(ctx, id, append([]api.Status{want}, client.Unreachable(want)...), step)
		cancel()
		if err == nil {
			if g.Status != want {
				t.Fatalf("group %s: wanted %s, got %s", id, want, describe(g))
			}
			return g
		}
		if client.ErrorCode(err) != client.WaitTimeoutCode && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("wait %s for %s: %v", id, want, err)
		}
	}
}

// waitFor polls GetGroup until cond holds.
func (cl *cluster) waitFor(t *testing.T, id string, what string, timeout time.Duration, cond func(*api.Group) bool) *api.Group {
	t.Helper()
	var g *api.Group
	err := poll(timeout, func() (bool, error) {
		var err error
		g, err = cl.c.GetGroup(context.Background(), id)
		if err != nil {
			return false, nil
		}
		return cond(g), nil
	})
	if err != nil {
		t.Fatalf("group %s: %s not seen within %s; now %s", id, what, timeout, describe(g))
	}
	return g
}

// waitGone waits until the group is no longer listed.
func (cl *cluster) waitGone(t *testing.T, id string, timeout time.Duration) {
	t.Helper()
	var g *api.Group
	err := poll(timeout, func() (bool, error) {
		var err error
		g, err = cl.c.GetGroup(context.Background(), id)
		return client.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("group %s still there %s after delete: %s", id, timeout, describe(g))
	}
}

func describe(g *api.Group) string {
	if g == nil {
		return "<nil>"
	}
	b, _ := json.Marshal(struct {
		Status     api.Status            `json:"status"`
		Reason     string                `json:"reason,omitempty"`
		Message    string                `json:"message,omitempty"`
		HostID     string                `json:"hostId,omitempty"`
		IP         string                `json:"ip,omitempty"`
		Deleting   bool                  `json:"deleting,omitempty"`
		Containers []api.ContainerStatus `json:"containers,omitempty"`
	}{g.Status, g.Reason, g.Message, g.HostID, g.IP, g.Deleting, g.Containers})
	return string(b)
}

// containerPID is the host pid of the group's first running container.
func containerPID(g *api.Group) int {
	for _, c := range g.Containers {
		if c.PID > 0 {
			return c.PID
		}
	}
	return 0
}

func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie is not alive.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// sandboxCgroups counts the sandbox cgroup dirs of an agent (in the memory
// hierarchy, or the unified one).
func sandboxCgroups(a *agent) []string {
	p := cgroupParentOf(a.dataDir)
	var out []string
	for _, h := range []string{"/sys/fs/cgroup/memory", "/sys/fs/cgroup"} {
		ents, err := os.ReadDir(filepath.Join(h, p))
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.IsDir() {
				out = append(out, e.Name())
			}
		}
		if len(out) > 0 || h == "/sys/fs/cgroup/memory" {
			break
		}
	}
	return out
}
