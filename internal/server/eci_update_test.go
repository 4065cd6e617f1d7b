package server

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	ecisdk "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/sandbox"
	"github.com/skiffhq/skiff/internal/sandbox/sim"
)

// TestECIUpdateContainerGroup drives UpdateContainerGroup through the
// official SDK against a real agent (simulated runtime): a new image
// command and env restart the group through Updating with its id and IP
// kept; a tags-only update restarts nothing; an update over quota or an
// invalid one changes nothing; the usage report bills the old shape up to
// the change and the new one after it.
func TestECIUpdateContainerGroup(t *testing.T) {
	ts := startServer(t)
	// "true" exits at once; everything else runs until stopped.
	startSimAgentWith(t, ts, 8000, 16<<30, sim.Config{Exit: func(_ string, c sandbox.ContainerConfig) (time.Duration, int, bool) {
		return 10 * time.Millisecond, 0, len(c.Args) > 0 && c.Args[0] == "true"
	}})
	acct := ts.newAccount(t, "upd", api.Quota{MilliCPU: 3000, Memory: 8 << 30, Groups: 5})
	cl := eciClient(t, ts, acct.Key.ID, acct.Key.Secret)
	tsA := ts.asAccount(acct.Key)

	resp, err := cl.CreateContainerGroup(simpleCreate("web", 1, 1, ""))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.ContainerGroupId
	before := waitStatus(t, cl, id, "Running")
	ip := before.IntranetIp
	if ip == "" {
		t.Fatalf("no IP: %+v", before)
	}

	// Tags only: in place, no restart.
	ur := ecisdk.CreateUpdateContainerGroupRequest()
	ur.RegionId = testRegion
	ur.ContainerGroupId = id
	ur.Tag = &[]ecisdk.UpdateContainerGroupTag{{Key: "team", Value: "a"}}
	if _, err := cl.UpdateContainerGroup(ur); err != nil {
		t.Fatal(err)
	}
	g := describeOne(t, cl, id)
	if g.Status != "Running" || len(g.Tags) != 1 || g.Tags[0].Key != "team" || g.Containers[0].RestartCount != 0 {
		t.Fatalf("after tag update: %+v", g)
	}

	// New command, args and env (the SDK's []string form, KEY=VALUE):
	// Updating, then Running with the new spec, same id and IP.
	ur = ecisdk.CreateUpdateContainerGroupRequest()
	ur.RegionId = testRegion
	ur.ContainerGroupId = id
	ur.Container = &[]ecisdk.UpdateContainerGroupContainer{{Name: "main", Image: "busybox", Command: []string{"sleep"}, Arg: []string{"7200"},
		EnvironmentVar: []string{"GREETING=hello-v2"}}}
	start := time.Now()
	if _, err := cl.UpdateContainerGroup(ur); err != nil {
		t.Fatal(err)
	}
	if g := describeOne(t, cl, id); g.Status != "Updating" && g.Status != "Running" {
		t.Fatalf("right after the update: %s", g.Status)
	}
	sawUpdating := waitStatus(t, cl, id, "Updating", "Running")
	g = waitRunningSpec(t, cl, id, "7200")
	if g.ContainerGroupId != id || g.IntranetIp != ip {
		t.Fatalf("update changed identity: id %s ip %s, was %s", g.IntranetIp, g.ContainerGroupId, ip)
	}
	c := g.Containers[0]
	if len(c.EnvironmentVars) != 1 || c.EnvironmentVars[0].Key != "GREETING" || c.EnvironmentVars[0].Value != "hello-v2" ||
		strings.Join(c.Args, " ") != "7200" || c.RestartCount != 1 || c.CurrentState.State != "Running" {
		t.Fatalf("updated container: %+v", c)
	}
	t.Logf("update → Running in %s (first poll saw %s)", time.Since(start).Round(time.Millisecond), sawUpdating.Status)
	lr := ecisdk.CreateDescribeContainerLogRequest()
	lr.RegionId = testRegion
	lr.ContainerGroupId = id
	lr.ContainerName = "main"
	if logs, err := cl.DescribeContainerLog(lr); err != nil || !strings.Contains(logs.Content, "sleep 7200") {
		t.Fatalf("the new command does not run: %v %+v", err, logs)
	}
	// The documented form (EnvironmentVar.N.Key/Value) through the SDK's
	// query parameters, incremental: only the env changes.
	ur = ecisdk.CreateUpdateContainerGroupRequest()
	ur.RegionId = testRegion
	ur.ContainerGroupId = id
	ur.QueryParams["UpdateType"] = "IncrementalUpdate"
	ur.QueryParams["Container.1.Name"] = "main"
	ur.QueryParams["Container.1.EnvironmentVar.1.Key"] = "MODE"
	ur.QueryParams["Container.1.EnvironmentVar.1.Value"] = "fast"
	if _, err := cl.UpdateContainerGroup(ur); err != nil {
		t.Fatal(err)
	}
	g = waitRunningSpec(t, cl, id, "7200")
	if c := g.Containers[0]; len(c.EnvironmentVars) != 2 || c.Image != "busybox" || c.RestartCount != 2 {
		t.Fatalf("incremental update: %+v", c)
	}

	// A new volume needs a new sandbox: rebuilt, and the group runs again
	// with the volume mounted.
	ur = ecisdk.CreateUpdateContainerGroupRequest()
	ur.RegionId = testRegion
	ur.ContainerGroupId = id
	ur.Volume = &[]ecisdk.UpdateContainerGroupVolume{{Name: "scratch", Type: "EmptyDirVolume"}}
	ur.QueryParams["UpdateType"] = "IncrementalUpdate"
	ur.QueryParams["Container.1.Name"] = "main"
	ur.QueryParams["Container.1.VolumeMount.1.Name"] = "scratch"
	ur.QueryParams["Container.1.VolumeMount.1.MountPath"] = "/scratch"
	if _, err := cl.UpdateContainerGroup(ur); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		g = waitRunningSpec(t, cl, id, "7200")
		if g.Containers[0].RestartCount == 3 || time.Now().After(deadline) {
			break
		}
	}
	if len(g.Volumes) != 1 || len(g.Containers[0].VolumeMounts) != 1 || g.IntranetIp == "" {
		t.Fatalf("volume update: %+v", g)
	}
	code, body := tsA.do(t, "GET", "/v1/groups/"+id+"/events", nil, nil)
	if code != 200 || !strings.Contains(string(body), "rebuilding the sandbox") {
		t.Fatalf("no rebuild event: %d %s", code, body)
	}

	// Over quota (3 vCPU): refused, nothing changes.
	ur = ecisdk.CreateUpdateContainerGroupRequest()
	ur.RegionId = testRegion
	ur.ContainerGroupId = id
	ur.Cpu = requests.NewFloat(4)
	ur.Memory = requests.NewFloat(2)
	_, err = cl.UpdateContainerGroup(ur)
	wantCode(t, err, 403, "QuotaExceeded")
	// Invalid (a volume mount naming no volume): refused, nothing changes.
	ur = ecisdk.CreateUpdateContainerGroupRequest()
	ur.RegionId = testRegion
	ur.ContainerGroupId = id
	ur.QueryParams["UpdateType"] = "IncrementalUpdate"
	ur.QueryParams["Container.1.Name"] = "main"
	ur.QueryParams["Container.1.VolumeMount.1.Name"] = "nope"
	ur.QueryParams["Container.1.VolumeMount.1.MountPath"] = "/data"
	_, err = cl.UpdateContainerGroup(ur)
	wantCode(t, err, 400, "InvalidParameter")
	ur.QueryParams["UpdateType"] = "Sideways"
	_, err = cl.UpdateContainerGroup(ur)
	wantCode(t, err, 400, "InvalidParameter")
	if g2 := describeOne(t, cl, id); g2.Cpu != 1 || g2.Status != "Running" || g2.Containers[0].RestartCount != 3 || len(g2.Containers[0].VolumeMounts) != 1 {
		t.Fatalf("a refused update changed the group: %+v", g2)
	}
	lu, err := common(t, cl, "ListUsage", map[string]string{"RegionId": testRegion})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(lu); !strings.Contains(string(b), `"UsedCpu":1,`) {
		t.Fatalf("usage after refused update: %s", b)
	}

	// A resize within quota: charged, and metered at the new rate from
	// the change (a closed line at 1 vCPU, an open one at 2).
	time.Sleep(1100 * time.Millisecond)
	ur = ecisdk.CreateUpdateContainerGroupRequest()
	ur.RegionId = testRegion
	ur.ContainerGroupId = id
	ur.Cpu = requests.NewFloat(2)
	if _, err := cl.UpdateContainerGroup(ur); err != nil {
		t.Fatal(err)
	}
	g = waitStatus(t, cl, id, "Running")
	if g.Cpu != 2 {
		t.Fatalf("resized: %+v", g)
	}
	code, body = tsA.do(t, "GET", "/v1/accounts/upd/usage", nil, nil)
	if code != 200 || !strings.Contains(string(body), `"milliCpu": 2000`) {
		t.Fatalf("account usage after resize: %d %s", code, body)
	}
	time.Sleep(1100 * time.Millisecond) // the open interval has a whole second to bill
	code, body = ts.do(t, "GET", "/v1/usage?account=upd", nil, nil)
	if code != 200 {
		t.Fatalf("usage report: %d %s", code, body)
	}
	var rep api.UsageReport
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatal(err)
	}
	var closed, open *api.UsageLine
	for i, l := range rep.Lines {
		if l.GroupID != id {
			continue
		}
		if l.Open {
			open = &rep.Lines[i]
		} else {
			closed = &rep.Lines[i]
		}
	}
	if closed == nil || open == nil || closed.VCPU != 1 || open.VCPU != 2 || !closed.End.Equal(open.Start) || closed.Seconds < 1 {
		t.Fatalf("metering across the resize: %s", body)
	}

	// The native API has the same call.
	code, body = tsA.do(t, "PATCH", "/v1/groups/"+id, []byte(`{"tags":{"team":"b"}}`), nil)
	if code != 200 || !strings.Contains(string(body), `"team": "b"`) {
		t.Fatalf("PATCH: %d %s", code, body)
	}
	code, body = tsA.do(t, "PATCH", "/v1/groups/"+id, []byte(`{"cpu":5}`), nil)
	if code != 403 || !strings.Contains(string(body), "QuotaExceeded") {
		t.Fatalf("PATCH over quota: %d %s", code, body)
	}

	// A group that has ended cannot take a new spec.
	done, err := cl.CreateContainerGroup(func() *ecisdk.CreateContainerGroupRequest {
		r := simpleCreate("once", 0.5, 0.5, "")
		r.RestartPolicy = "Never"
		r.Container = &[]ecisdk.CreateContainerGroupContainer{{Name: "main", Image: "busybox", Command: []string{"true"}}}
		return r
	}())
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cl, done.ContainerGroupId, "Succeeded")
	ur = ecisdk.CreateUpdateContainerGroupRequest()
	ur.RegionId = testRegion
	ur.ContainerGroupId = done.ContainerGroupId
	ur.Container = &[]ecisdk.UpdateContainerGroupContainer{{Name: "main", Image: "busybox", Command: []string{"sleep"}, Arg: []string{"1"}}}
	_, err = cl.UpdateContainerGroup(ur)
	wantCode(t, err, 400, "IncorrectStatus")
	ur.ContainerGroupId = "g-nosuchgroup"
	_, err = cl.UpdateContainerGroup(ur)
	wantCode(t, err, 404, "ResourceNotFound")
}

func describeOne(t *testing.T, cl *ecisdk.Client, id string) ecisdk.DescribeContainerGroupsContainerGroup0 {
	t.Helper()
	r := ecisdk.CreateDescribeContainerGroupsRequest()
	r.RegionId = testRegion
	r.ContainerGroupIds = `["` + id + `"]`
	d, err := cl.DescribeContainerGroups(r)
	if err != nil || len(d.ContainerGroups) != 1 {
		t.Fatalf("describe %s: %v %+v", id, err, d)
	}
	return d.ContainerGroups[0]
}

// waitRunningSpec waits for the group to run again with arg among its
// containers' args.
func waitRunningSpec(t *testing.T, cl *ecisdk.Client, id, arg string) ecisdk.DescribeContainerGroupsContainerGroup0 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var g ecisdk.DescribeContainerGroupsContainerGroup0
	for time.Now().Before(deadline) {
		g = describeOne(t, cl, id)
		if g.Status == "Running" && len(g.Containers) > 0 && strings.Join(g.Containers[0].Args, " ") == arg &&
			g.Containers[0].CurrentState.State == "Running" {
			return g
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("group %s never ran the updated spec; last %+v", id, g)
	return g
}
