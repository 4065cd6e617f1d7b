package integration

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	ecisdk "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"

	"github.com/skiffhq/skiff/api"
)

// cidrsECI is the pod range of TestECIUpdate's host.
var cidrsECI = []string{"10.213.208.0/20"}

// TestECIUpdate: UpdateContainerGroup through the official Go SDK against
// the real binaries and the real Linux sandbox. A new env and command
// restart the group through Updating, in the same sandbox (same id, same
// IP), and a sync ExecContainerCommand sees the new environment; an update
// over the account's quota is QuotaExceeded and changes nothing.
func TestECIUpdate(t *testing.T) {
	requireRoot(t)
	cl := newCluster(t, clusterOptions{agents: []agentSpec{{name: "eci-host", podCIDR: cidrsECI[0], cpu: "4", memory: "2Gi"}}})
	cl.importImage(t, 1)

	cfg := sdk.NewConfig()
	cfg.Scheme = "HTTP"
	cfg.AutoRetry = false
	cfg.Timeout = 30 * time.Second
	eci, err := ecisdk.NewClientWithOptions("skiff", cfg, credentials.NewAccessKeyCredential(cl.cfg.AccessKeyID, cl.cfg.AccessKeySecret))
	if err != nil {
		t.Fatal(err)
	}
	eci.Domain = strings.TrimPrefix(cl.cfg.Endpoint, "http://")

	cr := ecisdk.CreateCreateContainerGroupRequest()
	cr.RegionId = "skiff"
	cr.ContainerGroupName = "eci-upd"
	cr.Cpu = requests.NewFloat(0.5)
	cr.Memory = requests.NewFloat(0.25)
	cr.TerminationGracePeriodSeconds = requests.NewInteger(1)
	cr.Container = &[]ecisdk.CreateContainerGroupContainer{{Name: "main", Image: "busybox:latest", Command: []string{"sleep", "3600"},
		EnvironmentVar: &[]ecisdk.CreateContainerGroupEnvironmentVar{{Key: "GREETING", Value: "v1"}}}}
	created, err := eci.CreateContainerGroup(cr)
	if err != nil {
		t.Fatal(err)
	}
	id := created.ContainerGroupId
	t.Cleanup(func() {
		del := ecisdk.CreateDeleteContainerGroupRequest()
		del.RegionId, del.ContainerGroupId = "skiff", id
		_, _ = eci.DeleteContainerGroup(del)
		cl.waitGone(t, id, 60*time.Second)
	})
	g := cl.waitStatus(t, cl.c, id, api.StatusRunning, 60*time.Second)
	ip := g.IP
	if got := execEnv(t, eci, id); got != "v1" {
		t.Fatalf("before the update GREETING=%q", got)
	}

	ur := ecisdk.CreateUpdateContainerGroupRequest()
	ur.RegionId = "skiff"
	ur.ContainerGroupId = id
	ur.Container = &[]ecisdk.UpdateContainerGroupContainer{{Name: "main", Image: "busybox:latest", Command: []string{"sleep", "7200"},
		EnvironmentVar: []string{"GREETING=v2"}}}
	start := time.Now()
	if _, err := eci.UpdateContainerGroup(ur); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	g = cl.waitFor(t, id, "running the updated spec", 60*time.Second, func(g *api.Group) bool {
		seen[string(g.Status)] = true
		return g.Status == "Running" && g.SpecGeneration > 0 && g.AppliedSpecGeneration == g.SpecGeneration &&
			len(g.Containers) == 1 && g.Containers[0].State == "Running"
	})
	t.Logf("update → Running in %s; statuses seen %v", time.Since(start).Round(time.Millisecond), seen)
	if g.IP != ip || g.ID != id || g.Containers[0].RestartCount != 1 {
		t.Fatalf("after the update: ip %s (was %s), restarts %d", g.IP, ip, g.Containers[0].RestartCount)
	}
	if got := execEnv(t, eci, id); got != "v2" {
		t.Fatalf("after the update GREETING=%q", got)
	}

	// Quota: an account with 1 vCPU cannot grow its group to 2.
	acct, err := cl.c.CreateAccount(ctxT(t, 10*time.Second), api.CreateAccountRequest{Name: "eci-upd", Quota: api.Quota{MilliCPU: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	ecA, err := ecisdk.NewClientWithOptions("skiff", cfg, credentials.NewAccessKeyCredential(acct.Key.ID, acct.Key.Secret))
	if err != nil {
		t.Fatal(err)
	}
	ecA.Domain = eci.Domain
	cr.ContainerGroupName = "small"
	small, err := ecA.CreateContainerGroup(cr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		del := ecisdk.CreateDeleteContainerGroupRequest()
		del.RegionId, del.ContainerGroupId = "skiff", small.ContainerGroupId
		_, _ = ecA.DeleteContainerGroup(del)
	})
	ur = ecisdk.CreateUpdateContainerGroupRequest()
	ur.RegionId = "skiff"
	ur.ContainerGroupId = small.ContainerGroupId
	ur.Cpu = requests.NewFloat(2)
	_, err = ecA.UpdateContainerGroup(ur)
	var se *sdkerrors.ServerError
	if !errors.As(err, &se) || se.ErrorCode() != "QuotaExceeded" || se.HttpStatus() != 403 {
		t.Fatalf("update over quota: %v", err)
	}
	d := ecisdk.CreateDescribeContainerGroupsRequest()
	d.RegionId = "skiff"
	d.ContainerGroupIds = `["` + small.ContainerGroupId + `"]`
	if out, err := ecA.DescribeContainerGroups(d); err != nil || len(out.ContainerGroups) != 1 || out.ContainerGroups[0].Cpu != 0.5 {
		t.Fatalf("a refused update changed the group: %v %+v", err, out)
	}
}

// execEnv reads $GREETING in the group's container with a sync exec.
func execEnv(t *testing.T, eci *ecisdk.Client, id string) string {
	t.Helper()
	req := requests.NewCommonRequest()
	req.Method = "POST"
	req.Scheme = "http"
	req.Domain = eci.Domain
	req.Product = "Eci"
	req.Version = "2018-08-08"
	req.ApiName = "ExecContainerCommand"
	req.QueryParams["RegionId"] = "skiff"
	req.QueryParams["ContainerGroupId"] = id
	req.QueryParams["ContainerName"] = "main"
	req.QueryParams["Command"] = `["sh","-c","echo $GREETING"]`
	req.QueryParams["Sync"] = "true"
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := eci.ProcessCommonRequest(req)
		if err == nil {
			// The SDK's typed reply (v1.63) has no SyncResponse field.
			var out struct{ SyncResponse string }
			if err := json.Unmarshal(r.GetHttpContentBytes(), &out); err != nil {
				t.Fatal(err)
			}
			return strings.TrimSpace(out.SyncResponse)
		}
		if time.Now().After(deadline) {
			t.Fatalf("exec: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
