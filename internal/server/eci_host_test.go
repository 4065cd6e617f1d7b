package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	ecisdk "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"
	"github.com/coder/websocket"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
	"github.com/skiffhq/skiff/internal/agent"
	"github.com/skiffhq/skiff/internal/image/imagetest"
	"github.com/skiffhq/skiff/internal/sandbox"
	"github.com/skiffhq/skiff/internal/sandbox/sim"
)

// startServerWith is startServer with a config hook.
func startServerWith(t *testing.T, mutate func(*Config)) *testServer {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{
		DataDir:          dir,
		Listen:           fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		AgentListen:      fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		EtcdClientURL:    fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		EtcdPeerURL:      fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		ClientConfigPath: dir + "/client.json",
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	mutate(&cfg)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("server: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("server not ready in 60s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
	})
	var cc api.ClientConfig
	b, err := os.ReadFile(cfg.ClientConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cc); err != nil {
		t.Fatal(err)
	}
	return &testServer{srv: s, cfg: cc}
}

// startSimAgent joins a real agent, running the simulated sandbox runtime,
// with the given capacity, and imports a busybox image into it.
func startSimAgent(t *testing.T, ts *testServer, milliCPU int64, memory int64) {
	t.Helper()
	startSimAgentWith(t, ts, milliCPU, memory, sim.Config{})
}

// startSimAgentWith is startSimAgent with the simulated runtime's config
// (exits, latencies).
func startSimAgentWith(t *testing.T, ts *testServer, milliCPU int64, memory int64, simCfg sim.Config) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the agent's image store unpacks layers with owners: needs root")
	}
	rt, err := sim.New(simCfg)
	if err != nil {
		t.Fatal(err)
	}
	runAgent(t, ts, agent.Config{DataDir: t.TempDir(), Name: "sim1",
		Capacity:   api.Resources{MilliCPU: milliCPU, Memory: memory, Groups: 50},
		NewRuntime: func(string) (sandbox.Runtime, error) { return rt, nil }})
}

// runAgent joins a real agent, configured by cfg, to ts and runs it until
// the test ends, then imports a busybox image through the API.
func runAgent(t *testing.T, ts *testServer, cfg agent.Config) {
	t.Helper()
	cfg.Server, cfg.JoinToken = ts.srv.AgentAddr, ts.srv.JoinToken
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ag, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ag.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ag.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("agent not ready")
	}
	cl, err := client.New(ts.cfg)
	if err != nil {
		t.Fatal(err)
	}
	tar := imagetest.BuildBusybox(t, t.TempDir(), "busybox:latest")
	if _, err := cl.ImportImage(context.Background(), tar, nil); err != nil {
		t.Fatalf("import: %v", err)
	}
}

func waitStatus(t *testing.T, cl *ecisdk.Client, id string, want ...string) ecisdk.DescribeContainerGroupsContainerGroup0 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last ecisdk.DescribeContainerGroupsContainerGroup0
	for time.Now().Before(deadline) {
		r := ecisdk.CreateDescribeContainerGroupsRequest()
		r.RegionId = testRegion
		r.ContainerGroupIds = `["` + id + `"]`
		d, err := cl.DescribeContainerGroups(r)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.ContainerGroups) == 1 {
			last = d.ContainerGroups[0]
			for _, w := range want {
				if last.Status == w {
					return last
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("group %s never reached %v; last %s", id, want, last.Status)
	return last
}

func simpleCreate(name string, cpu, mem float64, spot string) *ecisdk.CreateContainerGroupRequest {
	r := ecisdk.CreateCreateContainerGroupRequest()
	r.RegionId = testRegion
	r.ContainerGroupName = name
	r.Cpu = requests.NewFloat(cpu)
	r.Memory = requests.NewFloat(mem)
	r.SpotStrategy = spot
	r.TerminationGracePeriodSeconds = requests.NewInteger(0)
	r.Container = &[]ecisdk.CreateContainerGroupContainer{{Name: "main", Image: "busybox", Command: []string{"sleep"}, Arg: []string{"3600"}}}
	return r
}

// TestECIHostActions drives the actions that need a host (logs, exec,
// metrics, restart), then spot reclaim and metering, on a real agent with
// the simulated runtime.
func TestECIHostActions(t *testing.T) {
	ts := startServerWith(t, func(c *Config) { c.SpotReclaimNotice = time.Second })
	startSimAgent(t, ts, 2000, 4<<30)
	cl := ts.adminECI(t)

	resp, err := cl.CreateContainerGroup(simpleCreate("app", 1, 1, ""))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.ContainerGroupId
	g := waitStatus(t, cl, id, "Running")
	if g.IntranetIp == "" || g.Containers[0].CurrentState.State != "Running" {
		t.Fatalf("running group: %+v", g)
	}

	lr := ecisdk.CreateDescribeContainerLogRequest()
	lr.RegionId = testRegion
	lr.ContainerGroupId = id
	lr.ContainerName = "main"
	lr.Tail = requests.NewInteger(10)
	logs, err := cl.DescribeContainerLog(lr)
	if err != nil || !strings.Contains(logs.Content, "3600") || logs.ContainerName != "main" {
		t.Fatalf("logs: %v %+v", err, logs)
	}

	sync, err := common(t, cl, "ExecContainerCommand", map[string]string{"RegionId": testRegion, "ContainerGroupId": id, "ContainerName": "main",
		"Command": `["echo","hello"]`, "Sync": "true"})
	if err != nil || !strings.Contains(sync["SyncResponse"].(string), "hello") {
		t.Fatalf("sync exec: %v %v", err, sync)
	}
	er := ecisdk.CreateExecContainerCommandRequest()
	er.RegionId = testRegion
	er.ContainerGroupId = id
	er.ContainerName = "main"
	er.Command = `["echo","over","ws"]`
	ex, err := cl.ExecContainerCommand(er)
	if err != nil || !strings.HasPrefix(ex.WebSocketUri, "ws://") {
		t.Fatalf("exec: %v %+v", err, ex)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, ex.WebSocketUri, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", ex.WebSocketUri, err)
	}
	var out strings.Builder
	exit := -1
	for exit < 0 {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("ws read: %v (so far %q)", err, out.String())
		}
		switch msg[0] {
		case api.ExecChannelStdout, api.ExecChannelStderr:
			out.Write(msg[1:])
		case api.ExecChannelExit:
			var e api.ExecExit
			_ = json.Unmarshal(msg[1:], &e)
			exit = e.ExitCode
		}
	}
	conn.CloseNow()
	if exit != 0 || !strings.Contains(out.String(), "over ws") {
		t.Fatalf("ws exec: exit %d output %q", exit, out.String())
	}
	// The token was for one use.
	if c2, _, err := websocket.Dial(ctx, ex.WebSocketUri, nil); err == nil {
		c2.CloseNow()
		t.Fatal("an exec token worked twice")
	}

	mr := ecisdk.CreateDescribeContainerGroupMetricRequest()
	mr.RegionId = testRegion
	mr.ContainerGroupId = id
	if m, err := cl.DescribeContainerGroupMetric(mr); err != nil || len(m.Records) != 1 || m.Records[0].CPU.Limit != 1000 {
		t.Fatalf("metric: %v %+v", err, m)
	}
	mm := ecisdk.CreateDescribeMultiContainerGroupMetricRequest()
	mm.RegionId = testRegion
	mm.ContainerGroupIds = `["` + id + `"]`
	if m, err := cl.DescribeMultiContainerGroupMetric(mm); err != nil || len(m.MonitorDatas) != 1 {
		t.Fatalf("multi metric: %v %+v", err, m)
	}
	rr := ecisdk.CreateRestartContainerGroupRequest()
	rr.RegionId = testRegion
	rr.ContainerGroupId = id
	if _, err := cl.RestartContainerGroup(rr); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cl, id, "Running")

	// Spot: a spot group fills the host; an on-demand group that does not
	// fit reclaims it, after a warning.
	sresp, err := cl.CreateContainerGroup(simpleCreate("cheap", 1, 1, "SpotAsPriceGo"))
	if err != nil {
		t.Fatal(err)
	}
	spotID := sresp.ContainerGroupId
	waitStatus(t, cl, spotID, "Running")
	oresp, err := cl.CreateContainerGroup(simpleCreate("urgent", 1, 1, ""))
	if err != nil {
		t.Fatal(err)
	}
	odID := oresp.ContainerGroupId
	sg := waitStatus(t, cl, spotID, "Expired")
	if sg.ExpiredTime == "" {
		t.Errorf("expired group has no ExpiredTime: %+v", sg)
	}
	waitStatus(t, cl, odID, "Running")
	code, body := ts.do(t, "GET", "/v1/groups/"+spotID, nil, nil)
	if code != 200 || !strings.Contains(string(body), `"reason": "SpotReclaimed"`) {
		t.Fatalf("reclaimed group: %d %s", code, body)
	}
	code, body = ts.do(t, "GET", "/v1/groups/"+spotID+"/events", nil, nil)
	if code != 200 || !strings.Contains(string(body), api.EventSpotToBeReleased) {
		t.Fatalf("no warning event: %s", body)
	}

	// Metering: delete app; the report bills app and the spot group as
	// closed intervals and urgent as open, spot at the spot price.
	time.Sleep(1100 * time.Millisecond)
	del := ecisdk.CreateDeleteContainerGroupRequest()
	del.RegionId = testRegion
	del.ContainerGroupId = id
	if _, err := cl.DeleteContainerGroup(del); err != nil {
		t.Fatal(err)
	}
	code, body = ts.do(t, "GET", "/v1/usage", nil, nil)
	if code != 200 {
		t.Fatalf("usage: %d %s", code, body)
	}
	var rep api.UsageReport
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatal(err)
	}
	lines := map[string]api.UsageLine{}
	for _, l := range rep.Lines {
		lines[l.GroupID] = l
	}
	if l := lines[id]; l.Open || l.Seconds < 2 || l.VCPUSeconds != float64(l.Seconds) {
		t.Errorf("app line: %+v", l)
	}
	if l := lines[spotID]; !l.Spot || l.Open || l.Seconds < 1 {
		t.Errorf("spot line: %+v", l)
	}
	if l := lines[odID]; !l.Open {
		t.Errorf("urgent line: %+v", l)
	}
	if rep.Cost <= 0 {
		t.Errorf("report: %+v", rep)
	}
	code, body = ts.do(t, "GET", "/v1/usage?format=csv", nil, nil)
	if code != 200 || !strings.HasPrefix(string(body), "account,group_id") || !strings.Contains(string(body), id) {
		t.Fatalf("csv: %d %s", code, body)
	}
}
