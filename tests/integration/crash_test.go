package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// TestCrashSafety kills the server and an agent with SIGKILL and checks
// that nothing acknowledged is lost, workloads survive, and restarted
// processes pick up where they were.
func TestCrashSafety(t *testing.T) {
	requireRoot(t)
	cl := newCluster(t, clusterOptions{agents: threeHosts(cidrsCrash, "")})
	cl.importImage(t, 3)
	labels := map[string]string{"suite": "crash"}

	// Three groups running before anything crashes; their pids must
	// survive everything below.
	var first []*api.Group
	for i := 0; i < 3; i++ {
		first = append(first, cl.create(t, fmt.Sprintf("early-%d", i), busybox("sleep", "100000"), labels))
	}
	pids := map[string]int{}
	for i, g := range first {
		first[i] = cl.waitStatus(t, nil, g.ID, api.StatusRunning, 60*time.Second)
		pids[g.ID] = containerPID(first[i])
		if pids[g.ID] == 0 {
			t.Fatalf("group %s Running without a pid: %s", g.Name, describe(first[i]))
		}
	}

	t.Run("ServerKill9", func(t *testing.T) {
		// Create groups as fast as the API takes them, and kill -9 the
		// server after a few acknowledgements, mid-stream.
		var mu sync.Mutex
		var acked []string
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				g, _, err := cl.c.CreateGroup(ctx, api.CreateGroupRequest{Name: fmt.Sprintf("burst-%d", i), Labels: labels, Spec: busybox("sleep", "100000")})
				cancel()
				if err != nil {
					return // the server is gone
				}
				mu.Lock()
				acked = append(acked, g.ID)
				mu.Unlock()
			}
		}()
		if err := poll(30*time.Second, func() (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			return len(acked) >= 4, nil
		}); err != nil {
			t.Fatal("creates were not acknowledged")
		}
		s := cl.servers[0]
		s.p.kill9()
		close(stop)
		<-done
		mu.Lock()
		ackedIDs := append([]string(nil), acked...)
		mu.Unlock()
		t.Logf("server killed after %d acknowledged creates", len(ackedIDs))

		// The workloads do not depend on the server.
		for id, pid := range pids {
			if !pidAlive(pid) {
				t.Errorf("group %s's process %d died with the server", id, pid)
			}
		}

		start := time.Now()
		cl.runServer(s)
		t.Logf("%v: server restarted", time.Since(start))
		cl.waitHostsReady("host-a", "host-b", "host-c")
		t.Logf("%v: every host Ready again", time.Since(start))
		for _, id := range ackedIDs {
			if _, err := cl.c.GetGroup(ctxT(t, 10*time.Second), id); err != nil {
				t.Errorf("acknowledged group %s lost across kill -9 of the server: %v", id, err)
			}
		}
		for _, id := range ackedIDs {
			cl.waitStatus(t, nil, id, api.StatusRunning, 60*time.Second)
		}
		t.Logf("%v: every acknowledged group Running", time.Since(start))
		for _, g := range first {
			now := cl.waitStatus(t, nil, g.ID, api.StatusRunning, 30*time.Second)
			if p := containerPID(now); p != pids[g.ID] {
				t.Errorf("group %s: pid %d before the server crash, %d after", g.Name, pids[g.ID], p)
			}
		}
		// No duplicates: every name once.
		gs, err := cl.c.ListAllGroups(ctxT(t, 10*time.Second), client.ListOptions{Labels: labels, All: true})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]string{}
		for _, g := range gs {
			if other, dup := seen[g.Name]; dup {
				t.Errorf("name %s twice: %s and %s", g.Name, other, g.ID)
			}
			seen[g.Name] = g.ID
		}
		// Every group placed is running exactly one sandbox.
		cl.checkSandboxCounts(t)
	})

	t.Run("AgentKill9", func(t *testing.T) {
		gs, err := cl.c.ListAllGroups(ctxT(t, 10*time.Second), client.ListOptions{Labels: labels})
		if err != nil {
			t.Fatal(err)
		}
		names := cl.hostNames(t)
		var onA []api.Group
		for _, g := range gs {
			if names[g.HostID] == "host-a" && g.Status == api.StatusRunning {
				onA = append(onA, g)
			}
		}
		// (Run alone, the subtest makes its own groups on host-a.)
		for i := len(onA); i < 3; i++ {
			spec := busybox("sleep", "100000")
			spec.NodeSelector = map[string]string{"rack": "r1"}
			g := cl.create(t, fmt.Sprintf("on-a-%d", i), spec, labels)
			onA = append(onA, *cl.waitStatus(t, nil, g.ID, api.StatusRunning, 60*time.Second))
		}
		a := cl.agent("host-a")
		start := time.Now()
		a.p.kill9()
		t.Logf("killed agent host-a (pid %d) with %d groups running on it", a.p.pid(), len(onA))

		cl.waitHostsState(api.HostNotReady, 30*time.Second, "host-a")
		t.Logf("%v: host-a NotReady", time.Since(start))
		out := cl.cli(t, "hosts")
		if !hostLineHas(out, "host-a", "NotReady") {
			t.Errorf("`skiff hosts` does not show host-a NotReady:\n%s", out)
		}
		for _, g := range onA {
			cl.waitFor(t, g.ID, "reason HostNotReady", 30*time.Second, func(g *api.Group) bool { return g.Reason == "HostNotReady" })
			if p := containerPID(&g); !pidAlive(p) {
				t.Errorf("group %s's process %d died with its agent", g.Name, p)
			}
		}

		// Delete one group while its agent is down: the record goes at
		// once; the agent must tear the orphan down when it is back.
		orphan := onA[0]
		if _, err := cl.c.DeleteGroup(ctxT(t, 10*time.Second), orphan.ID, true); err != nil {
			t.Fatal(err)
		}
		cl.waitGone(t, orphan.ID, 30*time.Second)
		// A plain delete waits for the host: Terminating until it is back.
		pending := onA[1]
		if _, err := cl.c.DeleteGroup(ctxT(t, 10*time.Second), pending.ID, false); err != nil {
			t.Fatal(err)
		}
		if g, err := cl.c.GetGroup(ctxT(t, 10*time.Second), pending.ID); err != nil || !g.Deleting || g.Status != api.StatusTerminating {
			t.Errorf("delete while the host is down: want Terminating and deleting, got %s (%v)", describe(g), err)
		}
		kept := onA[2:]
		// New groups are not placed on the NotReady host.
		var fresh []string
		for i := 0; i < 3; i++ {
			fresh = append(fresh, cl.create(t, fmt.Sprintf("while-a-down-%d", i), busybox("sleep", "100000"), labels).ID)
		}
		for _, id := range fresh {
			g := cl.waitStatus(t, nil, id, api.StatusRunning, 60*time.Second)
			if names[g.HostID] == "host-a" {
				t.Errorf("group %s placed on NotReady host-a", g.Name)
			}
		}

		t.Logf("%v: host-a NotReady, its groups marked HostNotReady and alive; orphan %s deleted; restarting the agent", time.Since(start), orphan.Name)
		cl.runAgent(a)
		cl.waitHostsReady("host-a")
		t.Logf("%v: host-a Ready again", time.Since(start))
		for _, g := range kept {
			now := cl.waitFor(t, g.ID, "Running with no HostNotReady reason", 30*time.Second, func(g *api.Group) bool {
				return g.Status == api.StatusRunning && g.Reason == ""
			})
			if p := containerPID(now); p != containerPID(&g) {
				t.Errorf("group %s not re-adopted: pid %d before the agent crash, %d after", g.Name, containerPID(&g), p)
			}
		}
		t.Logf("%v: kept groups re-adopted", time.Since(start))
		cl.waitGone(t, pending.ID, 60*time.Second)
		t.Logf("%v: group deleted while the host was down is gone", time.Since(start))
		if err := poll(30*time.Second, func() (bool, error) { return !pidAlive(containerPID(&pending)), nil }); err != nil {
			t.Errorf("group %s deleted while its agent was down still runs as pid %d", pending.Name, containerPID(&pending))
		}
		if err := poll(30*time.Second, func() (bool, error) { return !pidAlive(containerPID(&orphan)), nil }); err != nil {
			t.Errorf("orphan group %s (deleted while its agent was down) still runs as pid %d", orphan.Name, containerPID(&orphan))
		}
		if err := poll(30*time.Second, func() (bool, error) { return routeTo(orphan.IP) == "", nil }); err != nil {
			t.Errorf("orphan's IP %s still routed: %s", orphan.IP, routeTo(orphan.IP))
		}
		cl.checkSandboxCounts(t)
	})

	t.Run("AgentStopGraceful", func(t *testing.T) {
		// SIGTERM stops the agent, never its groups.
		gs, err := cl.c.ListAllGroups(ctxT(t, 10*time.Second), client.ListOptions{Labels: labels})
		if err != nil {
			t.Fatal(err)
		}
		names := cl.hostNames(t)
		before := map[string]int{}
		for _, g := range gs {
			if names[g.HostID] == "host-b" && g.Status == api.StatusRunning {
				before[g.ID] = containerPID(&g)
			}
		}
		if len(before) == 0 {
			t.Fatal("no group on host-b")
		}
		b := cl.agent("host-b")
		if err := b.p.stop(15 * time.Second); err != nil {
			t.Fatal(err)
		}
		cl.waitHostsState(api.HostNotReady, 30*time.Second, "host-b")
		for id, pid := range before {
			if !pidAlive(pid) {
				t.Errorf("group %s's process %d died when its agent stopped", id, pid)
			}
		}
		cl.runAgent(b)
		cl.waitHostsReady("host-b")
		for id, pid := range before {
			g := cl.waitFor(t, id, "Running again", 30*time.Second, func(g *api.Group) bool { return g.Status == api.StatusRunning && g.Reason == "" })
			if p := containerPID(g); p != pid {
				t.Errorf("group %s: pid %d before the agent restart, %d after", g.Name, pid, p)
			}
		}
		cl.checkSandboxCounts(t)
	})
}

// checkSandboxCounts: each agent has exactly one sandbox cgroup per
// non-terminal group placed on it (no duplicates, no orphans).
func (cl *cluster) checkSandboxCounts(t *testing.T) {
	t.Helper()
	names := cl.hostNames(t)
	var want map[string]int
	var have map[string][]string
	err := poll(30*time.Second, func() (bool, error) {
		gs, err := cl.c.ListAllGroups(context.Background(), client.ListOptions{All: true})
		if err != nil {
			return false, nil
		}
		want = map[string]int{}
		for _, g := range gs {
			if g.HostID != "" && !g.Status.Terminal() {
				want[names[g.HostID]]++
			}
		}
		have = map[string][]string{}
		ok := true
		for _, a := range cl.agents {
			have[a.name] = sandboxCgroups(a)
			if len(have[a.name]) != want[a.name] {
				ok = false
			}
		}
		return ok, nil
	})
	if err != nil {
		t.Errorf("sandboxes per host: groups placed %v, sandbox cgroups %v", want, have)
	}
}

// cli runs a client verb of the binary against the cluster.
func (cl *cluster) cli(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(skiffBin, args...)
	cmd.Env = append(os.Environ(), "SKIFF_CONFIG="+cl.servers[0].clientConfig)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("skiff %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func hostLineHas(out, host, word string) bool {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		has := map[string]bool{}
		for _, x := range f {
			has[x] = true
		}
		if has[host] && has[word] {
			return true
		}
	}
	return false
}
