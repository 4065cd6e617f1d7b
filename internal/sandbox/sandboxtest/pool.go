package sandboxtest

import (
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// The warm pool (sandbox.Pool): prepared sandboxes are claimed by
// CreateSandbox with a PoolClass and are then like any other sandbox.

var (
	smallClass = sandbox.PoolClass{Name: "small", MilliCPU: 500, Memory: 64 << 20}
	bigClass   = sandbox.PoolClass{Name: "big", MilliCPU: 2000, Memory: 256 << 20}
)

func (e *env) pool() sandbox.Pool {
	e.t.Helper()
	p, ok := e.rt.(sandbox.Pool)
	if !ok {
		e.t.Skip("the runtime has no warm pool")
	}
	return p
}

func (e *env) prepare(p sandbox.Pool, class sandbox.PoolClass, n int) {
	e.t.Helper()
	for range n {
		if err := p.PrepareSandbox(e.ctx, class); err != nil {
			e.t.Fatalf("PrepareSandbox(%s): %v", class.Name, err)
		}
	}
}

func (e *env) wantStats(p sandbox.Pool, want map[string]int) {
	e.t.Helper()
	got := p.PoolStats()
	for c, n := range got {
		if n == 0 {
			delete(got, c)
		}
	}
	if !maps.Equal(got, want) {
		e.t.Errorf("PoolStats = %v, want %v", got, want)
	}
}

// checkGroup runs a container in sb that reports its hostname and
// network, and checks them against what CreateSandbox returned.
func (e *env) checkGroup(info *sandbox.SandboxInfo, hostname string) {
	e.t.Helper()
	if e.s.simulated {
		e.start(info.ID, e.container("probe", "true"))
		return
	}
	e.start(info.ID, e.container("probe", "sh", "-c",
		"hostname; cat /etc/hostname; ip -o link show lo; ip -o -4 addr show; cat /etc/hosts"))
	e.waitExit(info.ID, "probe", 1)
	out := e.logs(info.ID, "probe", sandbox.LogOptions{Tail: -1})
	lines := strings.Split(out, "\n")
	if len(lines) < 3 || lines[0] != hostname || lines[1] != hostname {
		e.t.Errorf("hostname in %s: %q, want %q", info.ID, out, hostname)
	}
	if !strings.Contains(lines[min(2, len(lines)-1)], "UP") {
		e.t.Errorf("loopback is not up in %s: %q", info.ID, out)
	}
	if info.IP != "" {
		if !strings.Contains(out, "inet "+info.IP+"/") {
			e.t.Errorf("%s: the container does not have the reported IP %s: %q", info.ID, info.IP, out)
		}
		if !strings.Contains(out, info.IP+"\t"+hostname) {
			e.t.Errorf("%s: /etc/hosts does not map %s to %s: %q", info.ID, info.IP, hostname, out)
		}
	}
}

func testPoolClaim(t *testing.T, e *env) {
	p := e.pool()
	e.prepare(p, smallClass, 3)
	e.prepare(p, bigClass, 1)
	e.wantStats(p, map[string]int{"small": 3, "big": 1})
	ips := map[string]string{}
	for i, class := range []string{"small", "big", "small", "big"} {
		// The last "big" finds none of its class left: it takes a small one.
		id := fmt.Sprintf("claim%d", i)
		info, err := e.rt.CreateSandbox(e.ctx, sandbox.SandboxConfig{ID: id, Hostname: id + "-host", PoolClass: class, MilliCPU: 250})
		if err != nil {
			t.Fatalf("CreateSandbox(%s, pool %s): %v", id, class, err)
		}
		if info.ID != id || !info.FromPool {
			t.Errorf("CreateSandbox(%s) = %+v, want a pool hit", id, info)
		}
		if other, dup := ips[info.IP]; dup && info.IP != "" {
			t.Errorf("%s and %s both got IP %s", id, other, info.IP)
		}
		ips[info.IP] = id
		e.checkGroup(info, id+"-host")
		// Idempotent, like any create.
		again, err := e.rt.CreateSandbox(e.ctx, sandbox.SandboxConfig{ID: id, PoolClass: class})
		if err != nil || again.ID != id || again.IP != info.IP {
			t.Errorf("second CreateSandbox(%s) = %+v, %v; want %+v", id, again, err, info)
		}
	}
	e.wantStats(p, map[string]int{})
	// Claimed sandboxes are the callers': stats, exec and removal by ID.
	if _, err := e.rt.Stats(e.ctx, "claim0"); err != nil {
		t.Errorf("Stats of a claimed sandbox: %v", err)
	}
	if err := e.rt.RemoveSandbox(e.ctx, "claim0"); err != nil {
		t.Fatalf("RemoveSandbox of a claimed sandbox: %v", err)
	}
	states, _ := e.rt.Recover(e.ctx)
	if len(states) != 3 || findState(states, "claim0") != nil {
		t.Errorf("Recover after removing claim0: %+v", states)
	}
}

func testPoolMiss(t *testing.T, e *env) {
	p := e.pool()
	info, err := e.rt.CreateSandbox(e.ctx, sandbox.SandboxConfig{ID: "miss", Hostname: "miss-host", PoolClass: "small"})
	if err != nil {
		t.Fatalf("CreateSandbox on an empty pool: %v", err)
	}
	if info.FromPool {
		t.Errorf("CreateSandbox on an empty pool = %+v, want a miss", info)
	}
	e.checkGroup(info, "miss-host")
	// Without a class, a prepared sandbox is never taken.
	e.prepare(p, smallClass, 1)
	info, err = e.rt.CreateSandbox(e.ctx, sandbox.SandboxConfig{ID: "noclass"})
	if err != nil || info.FromPool {
		t.Errorf("CreateSandbox without a class = %+v, %v", info, err)
	}
	e.wantStats(p, map[string]int{"small": 1})
	if err := p.PrepareSandbox(e.ctx, sandbox.PoolClass{}); err == nil {
		t.Errorf("PrepareSandbox without a class name: no error")
	}
}

func testPoolDrain(t *testing.T, e *env) {
	p := e.pool()
	e.prepare(p, smallClass, 3)
	e.prepare(p, bigClass, 1)
	if n, err := p.DrainPool(e.ctx, "small", 2); err != nil || n != 2 {
		t.Errorf("DrainPool(small, 2) = %d, %v", n, err)
	}
	e.wantStats(p, map[string]int{"small": 1, "big": 1})
	if n, err := p.DrainPool(e.ctx, "nosuch", -1); err != nil || n != 0 {
		t.Errorf("DrainPool(nosuch) = %d, %v", n, err)
	}
	if n, err := p.DrainPool(e.ctx, "", -1); err != nil || n != 2 {
		t.Errorf("DrainPool(all) = %d, %v", n, err)
	}
	e.wantStats(p, map[string]int{})
	// A drained pool is a miss; the suite's leak checks (AfterEach) see
	// whether the drained sandboxes left anything.
	info, err := e.rt.CreateSandbox(e.ctx, sandbox.SandboxConfig{ID: "after", PoolClass: "small"})
	if err != nil || info.FromPool {
		t.Errorf("CreateSandbox after drain = %+v, %v", info, err)
	}
	if states, _ := e.rt.Recover(e.ctx); len(states) != 1 {
		t.Errorf("prepared sandboxes in Recover: %+v", states)
	}
}

func testPoolRecover(t *testing.T, e *env) {
	p := e.pool()
	e.prepare(p, smallClass, 3)
	info, err := e.rt.CreateSandbox(e.ctx, sandbox.SandboxConfig{ID: "kept", Hostname: "kept", PoolClass: "small"})
	if err != nil || !info.FromPool {
		t.Fatalf("CreateSandbox = %+v, %v", info, err)
	}
	run := e.start("kept", e.container("run", "sleep", "1000"))
	if err := e.rt.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	e.rt = nil
	e.open()
	p = e.pool()
	e.wantStats(p, map[string]int{"small": 2})
	states, err := e.rt.Recover(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 1 || states[0].ID != "kept" || states[0].IP != info.IP {
		t.Fatalf("Recover = %+v, want only kept (ip %q)", states, info.IP)
	}
	if c := findContainer(&states[0], "run"); c == nil || !c.Running || c.PID != run.PID {
		t.Errorf("claimed sandbox's container not adopted: %+v", c)
	}
	// The recovered pool still serves claims, and the claimed sandbox its
	// callers.
	info2, err := e.rt.CreateSandbox(e.ctx, sandbox.SandboxConfig{ID: "later", Hostname: "later", PoolClass: "small"})
	if err != nil || !info2.FromPool {
		t.Fatalf("claim after restart = %+v, %v", info2, err)
	}
	e.checkGroup(info2, "later")
	if err := e.rt.StopContainer(e.ctx, "kept", "run", 0); err != nil {
		t.Fatalf("StopContainer after restart: %v", err)
	}
	e.waitExit("kept", "run", 1)
	if err := e.rt.RemoveSandbox(e.ctx, "kept"); err != nil {
		t.Fatalf("RemoveSandbox after restart: %v", err)
	}
	e.wantStats(p, map[string]int{"small": 1})
}

func testPoolConcurrentClaims(t *testing.T, e *env) {
	p := e.pool()
	const prepared, claims = 4, 8
	e.prepare(p, smallClass, prepared)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		hits    int
		drained int
		ips     = map[string]string{}
	)
	start := make(chan struct{})
	for i := range claims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			id := fmt.Sprintf("c%d", i)
			info, err := e.rt.CreateSandbox(e.ctx, sandbox.SandboxConfig{ID: id, PoolClass: "small"})
			if err != nil {
				t.Errorf("CreateSandbox(%s): %v", id, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if info.FromPool {
				hits++
			}
			if other, dup := ips[info.IP]; dup && info.IP != "" {
				t.Errorf("%s and %s both got IP %s", id, other, info.IP)
			}
			ips[info.IP] = id
		}()
	}
	// A drain races the claims: each prepared sandbox goes one way.
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-start
		time.Sleep(time.Millisecond)
		n, err := p.DrainPool(e.ctx, "", -1)
		if err != nil {
			t.Errorf("DrainPool: %v", err)
		}
		mu.Lock()
		drained = n
		mu.Unlock()
	}()
	close(start)
	wg.Wait()
	if hits+drained != prepared {
		t.Errorf("%d claims hit and %d drained, of %d prepared", hits, drained, prepared)
	}
	e.wantStats(p, map[string]int{})
	states, _ := e.rt.Recover(e.ctx)
	if len(states) != claims {
		t.Errorf("Recover lists %d sandboxes, want %d", len(states), claims)
	}
}
