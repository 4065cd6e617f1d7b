package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
)

// cidrsPool is the pod range of TestWarmPool's host.
var cidrsPool = []string{"10.213.224.0/20"}

// TestWarmPool: a fixed pool target fills; a create takes a prepared
// sandbox (a hit, the group Running with a working network) and the pool
// refills; kill -9 and restart of the agent leave exactly the pool and the
// groups (no leaked sandbox); `skiff hosts -o json` and /metrics show it;
// a burst raises the forecast's target, which the host follows; a clean
// stop of the agent drains the pool, and without any target it stays empty.
//
// The forecast runs on one-second buckets with a season longer than the
// test (no periodicity to learn in a minute: the recent rate only).
func TestWarmPool(t *testing.T) {
	requireRoot(t)
	const class = "c0.25" // busybox(): 100m, 64Mi
	cl := newCluster(t, clusterOptions{
		agents: []agentSpec{{name: "pool-host", podCIDR: cidrsPool[0], cpu: "8", memory: "2Gi",
			extra: []string{"--pool-size", class + "=3"}}},
		serverArgs: []string{"--forecast-bucket", "1s", "--forecast-season", "1000", "--pool-max-per-host", "12"},
	})
	cl.importImage(t, 1)
	a := cl.agent("pool-host")
	labels := cl.labelsFor(t, "pool")

	// poolOf reads the host's pool class through `skiff hosts -o json`.
	poolOf := func(t *testing.T) api.PoolClassStatus {
		t.Helper()
		var hs []api.Host
		out := cl.cli(t, "hosts", "-o", "json")
		if err := json.Unmarshal([]byte(out), &hs); err != nil {
			t.Fatalf("hosts -o json: %v\n%s", err, out)
		}
		for _, h := range hs {
			if h.Name == "pool-host" && h.Pool != nil {
				for _, c := range h.Pool.Classes {
					if c.Class == class {
						return c
					}
				}
			}
		}
		return api.PoolClassStatus{Class: class}
	}
	waitPool := func(t *testing.T, what string, cond func(c api.PoolClassStatus) bool) api.PoolClassStatus {
		t.Helper()
		var last api.PoolClassStatus
		if err := poll(60*time.Second, func() (bool, error) {
			last = poolOf(t)
			return cond(last), nil
		}); err != nil {
			t.Fatalf("pool not %s within 60s: %+v", what, last)
		}
		return last
	}
	// sandboxes counts what the host holds: sandbox cgroups, and veths with
	// a route into its pod range.
	ours := scope{cidr: netip.MustParsePrefix(cidrsPool[0])}
	sandboxes := func() (cgroups, veths int) {
		return len(sandboxCgroups(a)), len(ours.ourVeths(baseline))
	}

	t.Run("Fills", func(t *testing.T) {
		c := waitPool(t, "3/3", func(c api.PoolClassStatus) bool { return c.Size == 3 && c.Target == 3 })
		if c.Hits != 0 || c.Misses != 0 || c.Prepared < 3 {
			t.Errorf("before any create: %+v", c)
		}
		if cg, ve := sandboxes(); cg != 3 || ve != 3 {
			t.Errorf("host holds %d sandbox cgroups and %d veths, want the 3 prepared", cg, ve)
		}
		out := cl.cli(t, "hosts")
		if !strings.Contains(out, "POOL") || !strings.Contains(out, "3/3") {
			t.Errorf("`skiff hosts` does not show the pool 3/3:\n%s", out)
		}
	})

	var web *api.Group
	t.Run("CreateTakesPrepared", func(t *testing.T) {
		web = cl.create(t, "pool-web", webSpec(), labels)
		g := cl.waitStatus(t, nil, web.ID, api.StatusRunning, 60*time.Second)
		if body := httpGetEventually(t, "http://"+g.IP+":8080/", 20*time.Second); strings.TrimSpace(body) != "ok" {
			t.Errorf("GET %s: %q, want ok", g.IP, body)
		}
		if ip, err := netip.ParseAddr(g.IP); err != nil || !netip.MustParsePrefix(cidrsPool[0]).Contains(ip) {
			t.Errorf("group IP %q outside the host's range", g.IP)
		}
		c := waitPool(t, "refilled after a hit", func(c api.PoolClassStatus) bool { return c.Hits == 1 && c.Size == 3 })
		if c.Misses != 0 {
			t.Errorf("a create with a full pool missed: %+v", c)
		}
		// The group's own events say the pool served it.
		evs, err := cl.c.Events(ctxT(t, 10*time.Second), web.ID)
		if err != nil {
			t.Fatal(err)
		}
		var ready string
		for _, e := range evs {
			if e.Reason == "SandboxReady" {
				ready = e.Message
			}
		}
		if !strings.Contains(ready, "warm pool") {
			t.Errorf("SandboxReady event %q does not say the warm pool served the group (events %+v)", ready, evs)
		}
		if cg, ve := sandboxes(); cg != 4 || ve != 4 {
			t.Errorf("host holds %d sandbox cgroups and %d veths, want 3 prepared + 1 group", cg, ve)
		}
		// The agent's pool shows on the server's /metrics.
		resp, err := http.Get("http://" + cl.servers[0].api + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), `skiff_host_pool_hits_total{class="c0.25"`) || !strings.Contains(string(b), "skiff_host_pool_size{") {
			t.Errorf("/metrics has no pool series")
		}
	})

	t.Run("AgentKillLeavesNoLeak", func(t *testing.T) {
		// Take one more (a refill starts), and kill the agent right away:
		// a prepare may be cut in the middle.
		second := cl.create(t, "pool-sleep", busybox("sleep", "3600"), labels)
		cl.waitStatus(t, nil, second.ID, api.StatusRunning, 60*time.Second)
		a.p.kill9()
		cl.runAgent(a)
		cl.waitHostsReady("pool-host")
		// Counters restart with the agent; the pool is found again and
		// brought back to its target.
		waitPool(t, "3/3 after restart", func(c api.PoolClassStatus) bool { return c.Size == 3 && c.Target == 3 })
		time.Sleep(3 * time.Second) // let any extra show
		if c := poolOf(t); c.Size != 3 {
			t.Errorf("pool after restart: %+v, want exactly 3", c)
		}
		if cg, ve := sandboxes(); cg != 5 || ve != 5 {
			t.Errorf("after kill -9 and restart the host holds %d sandbox cgroups and %d veths, want 3 prepared + 2 groups", cg, ve)
		}
		for _, id := range []string{web.ID, second.ID} {
			cl.waitStatus(t, nil, id, api.StatusRunning, 30*time.Second)
		}
	})

	t.Run("ForecastRaisesTarget", func(t *testing.T) {
		burst := cl.labelsFor(t, "pool-burst")
		var items []api.CreateGroupRequest
		for i := 0; i < 8; i++ {
			items = append(items, api.CreateGroupRequest{Name: fmt.Sprintf("pool-burst-%d", i), Labels: burst, Spec: busybox("sleep", "3600")})
		}
		if _, err := cl.c.CreateGroups(ctxT(t, 30*time.Second), items); err != nil {
			t.Fatal(err)
		}
		// The planner sees the burst in the create history and asks the
		// host for more than its own floor of 3; the host fills toward it.
		c := waitPool(t, "raised by the forecast", func(c api.PoolClassStatus) bool { return c.Target > 3 && c.Size > 3 })
		if c.Target > 12 {
			t.Errorf("target %d over --pool-max-per-host 12", c.Target)
		}
		// The leader placed (some of) this test's creates at once, without
		// waiting for a scheduling round (a create that lands while a round
		// runs goes the normal way: three create calls cannot all do).
		if n := metricValue(t, cl.servers[0].api, "skiff_groups_preplaced_total"); n < 1 {
			t.Errorf("skiff_groups_preplaced_total = %v: no create was pre-placed", n)
		}
		cl.deleteLabeled(t, "suite", "pool-burst")
		// With no more creates the forecast falls back to nothing and the
		// host's own floor holds.
		waitPool(t, "back to its floor", func(c api.PoolClassStatus) bool { return c.Target == 3 && c.Size == 3 })
	})

	t.Run("CleanStopDrains", func(t *testing.T) {
		if err := a.p.stop(15 * time.Second); err != nil {
			t.Error(err)
		}
		if cg, ve := sandboxes(); cg != 2 || ve != 2 {
			t.Errorf("after a clean stop the host holds %d sandbox cgroups and %d veths, want the 2 groups only", cg, ve)
		}
		a.extra = nil
		cl.runAgent(a)
		cl.waitHostsReady("pool-host")
		waitPool(t, "drained", func(c api.PoolClassStatus) bool { return c.Size == 0 && c.Target == 0 })
		cl.deleteLabeled(t, "suite", "pool")
		if err := poll(30*time.Second, func() (bool, error) {
			cg, ve := sandboxes()
			return cg == 0 && ve == 0, nil
		}); err != nil {
			cg, ve := sandboxes()
			t.Errorf("after draining and deleting: %d sandbox cgroups, %d veths left", cg, ve)
		}
	})
}

// metricValue reads one unlabelled series from a server's /metrics.
func metricValue(t *testing.T, apiAddr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + apiAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		var v float64
		if strings.HasPrefix(l, name+" ") {
			if _, err := fmt.Sscanf(strings.TrimPrefix(l, name+" "), "%g", &v); err == nil {
				return v
			}
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}
