package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	ecisdk "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/server/eci"
)

const testRegion = "skiff"

// eciClient is the official ECI SDK client pointed at ts with a key pair,
// through the SDK's own endpoint override and HTTP scheme.
func eciClient(t *testing.T, ts *testServer, keyID, secret string) *ecisdk.Client {
	t.Helper()
	cfg := sdk.NewConfig()
	cfg.Scheme = "HTTP"
	cfg.AutoRetry = false
	cfg.Timeout = 30 * time.Second
	cl, err := ecisdk.NewClientWithOptions(testRegion, cfg, credentials.NewAccessKeyCredential(keyID, secret))
	if err != nil {
		t.Fatal(err)
	}
	cl.Domain = strings.TrimPrefix(ts.cfg.Endpoint, "http://")
	return cl
}

func (ts *testServer) adminECI(t *testing.T) *ecisdk.Client {
	return eciClient(t, ts, ts.cfg.AccessKeyID, ts.cfg.AccessKeySecret)
}

// common calls an action through the SDK's generic request (for actions
// its generated client lacks) and decodes the JSON reply.
func common(t *testing.T, cl *ecisdk.Client, action string, params map[string]string) (map[string]any, error) {
	t.Helper()
	req := requests.NewCommonRequest()
	req.Method = "POST"
	req.Scheme = "http"
	req.Domain = cl.Domain
	req.Product = "Eci"
	req.Version = eci.Version
	req.ApiName = action
	for k, v := range params {
		req.QueryParams[k] = v
	}
	resp, err := cl.ProcessCommonRequest(req)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(resp.GetHttpContentBytes(), &out); err != nil {
		t.Fatalf("%s: reply is not JSON: %v", action, err)
	}
	if out["RequestId"] == "" || out["RequestId"] == nil {
		t.Errorf("%s: reply has no RequestId: %s", action, resp.GetHttpContentString())
	}
	return out, nil
}

// wantCode checks that err is an ECI server error with code and status.
func wantCode(t *testing.T, err error, status int, code string) {
	t.Helper()
	var se *sdkerrors.ServerError
	if !errors.As(err, &se) {
		t.Fatalf("want %s (%d), got %v", code, status, err)
	}
	if se.ErrorCode() != code || se.HttpStatus() != status {
		t.Fatalf("want %s (%d), got %s (%d): %s", code, status, se.ErrorCode(), se.HttpStatus(), se.Message())
	}
	if se.RequestId() == "" {
		t.Errorf("error %s has no RequestId", code)
	}
}

// newAccount creates an account through the native admin API.
func (ts *testServer) newAccount(t *testing.T, name string, q api.Quota) api.CreateAccountResult {
	t.Helper()
	b, _ := json.Marshal(api.CreateAccountRequest{Name: name, Quota: q})
	code, out := ts.do(t, "POST", "/v1/accounts", b, nil)
	if code != 201 {
		t.Fatalf("create account: %d %s", code, out)
	}
	var res api.CreateAccountResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// asAccount returns a test server view signing with another key.
func (ts *testServer) asAccount(k api.AccessKey) *testServer {
	cp := *ts
	cp.cfg.AccessKeyID, cp.cfg.AccessKeySecret = k.ID, k.Secret
	return &cp
}

func fullCreate(name string) *ecisdk.CreateContainerGroupRequest {
	req := ecisdk.CreateCreateContainerGroupRequest()
	req.RegionId = testRegion
	req.ContainerGroupName = name
	req.RestartPolicy = "OnFailure"
	req.ZoneId = ""
	req.Cpu = requests.NewFloat(1)
	req.Memory = requests.NewFloat(2)
	req.TerminationGracePeriodSeconds = requests.NewInteger(5)
	req.ActiveDeadlineSeconds = requests.NewInteger(3600)
	req.SpotStrategy = "SpotAsPriceGo"
	req.Tag = &[]ecisdk.CreateContainerGroupTag{{Key: "team", Value: "a"}, {Key: "env", Value: "test"}}
	req.DnsConfig = ecisdk.CreateContainerGroupDnsConfig{NameServer: []string{"10.0.0.10"}, Search: []string{"svc.local"},
		Option: &[]ecisdk.CreateContainerGroupOption{{Name: "ndots", Value: "2"}}}
	req.HostAliase = &[]ecisdk.CreateContainerGroupHostAliase{{Ip: "10.1.1.1", Hostname: []string{"db", "db.local"}}}
	req.SecurityContext = ecisdk.CreateContainerGroupSecurityContext{Sysctl: &[]ecisdk.CreateContainerGroupSysctl{{Name: "net.core.somaxconn", Value: "1024"}}}
	req.Volume = &[]ecisdk.CreateContainerGroupVolume{
		{Name: "scratch", Type: "EmptyDirVolume", EmptyDirVolume: ecisdk.CreateContainerGroupEmptyDirVolume{Medium: "Memory"}},
		{Name: "conf", Type: "ConfigFileVolume", ConfigFileVolume: ecisdk.CreateContainerGroupConfigFileVolume{
			ConfigFileToPath: &[]ecisdk.CreateContainerGroupConfigFileToPath{{Path: "app.conf", Content: base64.StdEncoding.EncodeToString([]byte("x=1\n"))}}}},
	}
	req.InitContainer = &[]ecisdk.CreateContainerGroupInitContainer{{Name: "init", Image: "busybox", Command: []string{"echo"}, Arg: []string{"init"},
		Cpu: requests.NewFloat(0.5), Memory: requests.NewFloat(0.5)}}
	req.Container = &[]ecisdk.CreateContainerGroupContainer{{
		Name: "app", Image: "busybox", Cpu: requests.NewFloat(1), Memory: requests.NewFloat(2), WorkingDir: "/tmp",
		ImagePullPolicy: "IfNotPresent", Command: []string{"sleep"}, Arg: []string{"3600"}, Tty: requests.NewBoolean(true), Stdin: requests.NewBoolean(true),
		EnvironmentVar:                         &[]ecisdk.CreateContainerGroupEnvironmentVar{{Key: "A", Value: "1"}, {Key: "POD_IP", FieldRef: ecisdk.CreateContainerGroupFieldRef{FieldPath: "status.podIP"}}},
		Port:                                   &[]ecisdk.CreateContainerGroupPort{{Port: requests.NewInteger(8080), Protocol: "TCP"}},
		VolumeMount:                            &[]ecisdk.CreateContainerGroupVolumeMount{{Name: "scratch", MountPath: "/scratch"}, {Name: "conf", MountPath: "/etc/app", ReadOnly: requests.NewBoolean(true)}},
		ReadinessProbe:                         ecisdk.CreateContainerGroupReadinessProbe{TcpSocket: ecisdk.CreateContainerGroupTcpSocket{Port: requests.NewInteger(8080)}, PeriodSeconds: requests.NewInteger(5)},
		LivenessProbe:                          ecisdk.CreateContainerGroupLivenessProbe{HttpGet: ecisdk.CreateContainerGroupHttpGet{Path: "/healthz", Port: requests.NewInteger(8080), Scheme: "HTTP"}},
		LifecyclePreStopHandlerExec:            []string{"sh", "-c", "sleep 1"},
		LifecyclePostStartHandlerTcpSocketPort: requests.NewInteger(8080),
	}}
	return req
}

func TestECISDKGroupLifecycle(t *testing.T) {
	ts := startServer(t)
	cl := ts.adminECI(t)

	req := fullCreate("web")
	req.ClientToken = "tok-1"
	resp, err := cl.CreateContainerGroup(req)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	id := resp.ContainerGroupId
	if !strings.HasPrefix(id, "g-") || resp.RequestId == "" {
		t.Fatalf("create reply %+v", resp)
	}
	// The same client token gives the same group, and nothing new.
	req2 := fullCreate("web")
	req2.ClientToken = "tok-1"
	if again, err := cl.CreateContainerGroup(req2); err != nil || again.ContainerGroupId != id {
		t.Fatalf("idempotent create: %v %+v", err, again)
	}

	dreq := ecisdk.CreateDescribeContainerGroupsRequest()
	dreq.RegionId = testRegion
	dreq.ContainerGroupIds = `["` + id + `"]`
	d, err := cl.DescribeContainerGroups(dreq)
	if err != nil {
		t.Fatal(err)
	}
	if d.TotalCount != 1 || len(d.ContainerGroups) != 1 {
		t.Fatalf("describe: %+v", d)
	}
	g := d.ContainerGroups[0]
	if g.ContainerGroupName != "web" || g.Cpu != 1 || g.Memory != 2 || g.RestartPolicy != "OnFailure" || (g.Status != "Pending" && g.Status != "ScheduleFailed") {
		t.Errorf("group: %+v", g)
	}
	if len(g.Containers) != 1 || len(g.InitContainers) != 1 || len(g.Volumes) != 2 || len(g.Tags) != 2 || len(g.HostAliases) != 1 {
		t.Fatalf("group shape: %+v", g)
	}
	c := g.Containers[0]
	if c.Image != "busybox" || len(c.Commands) != 1 || c.Args[0] != "3600" || !c.Tty || len(c.EnvironmentVars) != 2 ||
		c.EnvironmentVars[1].ValueFrom.FieldRef.FieldPath != "status.podIP" || len(c.Ports) != 1 || c.Ports[0].Port != 8080 ||
		len(c.VolumeMounts) != 2 || c.ReadinessProbe.TcpSocket.Port != 8080 || c.LivenessProbe.HttpGet.Path != "/healthz" {
		t.Errorf("container: %+v", c)
	}
	if g.DnsConfig.NameServers[0] != "10.0.0.10" || g.EciSecurityContext.Sysctls[0].Name != "net.core.somaxconn" {
		t.Errorf("dns/sysctl: %+v %+v", g.DnsConfig, g.EciSecurityContext)
	}
	// The native API sees the same group: one service layer.
	code, body := ts.do(t, "GET", "/v1/groups/"+id, nil, nil)
	if code != 200 || !strings.Contains(string(body), `"spotStrategy": "SpotAsPriceGo"`) {
		t.Fatalf("native get: %d %s", code, body)
	}

	// Filters and paging.
	for i := 0; i < 3; i++ {
		r := fullCreate(fmt.Sprintf("batch-%d", i))
		r.Tag = &[]ecisdk.CreateContainerGroupTag{{Key: "batch", Value: "yes"}}
		if _, err := cl.CreateContainerGroup(r); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	next := ""
	for {
		lr := ecisdk.CreateDescribeContainerGroupsRequest()
		lr.RegionId = testRegion
		lr.Tag = &[]ecisdk.DescribeContainerGroupsTag{{Key: "batch", Value: "yes"}}
		lr.Limit = requests.NewInteger(2)
		lr.NextToken = next
		page, err := cl.DescribeContainerGroups(lr)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range page.ContainerGroups {
			names = append(names, g.ContainerGroupName)
		}
		if page.TotalCount != 3 {
			t.Fatalf("total %d", page.TotalCount)
		}
		if next = page.NextToken; next == "" {
			break
		}
	}
	if strings.Join(names, ",") != "batch-0,batch-1,batch-2" {
		t.Fatalf("paged names %v", names)
	}
	byName := ecisdk.CreateDescribeContainerGroupsRequest()
	byName.RegionId = testRegion
	byName.ContainerGroupName = "batch-1"
	if page, err := cl.DescribeContainerGroups(byName); err != nil || page.TotalCount != 1 {
		t.Fatalf("by name: %v %+v", err, page)
	}
	byName.Status = "Running"
	if page, err := cl.DescribeContainerGroups(byName); err != nil || page.TotalCount != 0 {
		t.Fatalf("by name+status: %v %+v", err, page)
	}

	st, err := common(t, cl, "DescribeContainerGroupStatus", map[string]string{"RegionId": testRegion, "ContainerGroupIds": `["` + id + `"]`})
	if err != nil {
		t.Fatal(err)
	}
	if data := st["Data"].([]any); len(data) != 1 || data[0].(map[string]any)["ContainerGroupId"] != id {
		t.Fatalf("status: %v", st)
	}

	// Restart needs a placed group: IncorrectStatus.
	rr := ecisdk.CreateRestartContainerGroupRequest()
	rr.RegionId = testRegion
	rr.ContainerGroupId = id
	_, err = cl.RestartContainerGroup(rr)
	wantCode(t, err, 400, "IncorrectStatus")

	// Tags.
	if _, err := common(t, cl, "TagResources", map[string]string{"RegionId": testRegion, "ResourceType": "ContainerGroup", "ResourceId.1": id, "Tag.1.Key": "owner", "Tag.1.Value": "me"}); err != nil {
		t.Fatal(err)
	}
	if _, err := common(t, cl, "UntagResources", map[string]string{"RegionId": testRegion, "ResourceType": "ContainerGroup", "ResourceId.1": id, "TagKey.1": "env"}); err != nil {
		t.Fatal(err)
	}
	lt, err := common(t, cl, "ListTagResources", map[string]string{"RegionId": testRegion, "ResourceType": "ContainerGroup", "ResourceId.1": id})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(lt["TagResources"]); !strings.Contains(string(b), `"TagKey":"owner"`) || strings.Contains(string(b), `"env"`) {
		t.Fatalf("tags: %s", b)
	}
	ur := ecisdk.CreateUpdateContainerGroupRequest()
	ur.RegionId = testRegion
	ur.ContainerGroupId = id
	ur.RestartPolicy = "Never"
	ur.Tag = &[]ecisdk.UpdateContainerGroupTag{{Key: "v", Value: "2"}}
	if _, err := cl.UpdateContainerGroup(ur); err != nil {
		t.Fatal(err)
	}
	if d, _ := cl.DescribeContainerGroups(dreq); d.ContainerGroups[0].RestartPolicy != "Never" || len(d.ContainerGroups[0].Tags) != 1 {
		t.Fatalf("after update: %+v", d.ContainerGroups[0])
	}
	ur2 := ecisdk.CreateUpdateContainerGroupRequest()
	ur2.RegionId = testRegion
	ur2.ContainerGroupId = id
	ur2.Cpu = requests.NewFloat(4)
	if _, err = cl.UpdateContainerGroup(ur2); err != nil { // not placed: the scheduler places the new shape
		t.Fatal(err)
	}
	if d, _ := cl.DescribeContainerGroups(dreq); d.ContainerGroups[0].Cpu != 4 || d.ContainerGroups[0].RestartPolicy != "Never" {
		t.Fatalf("after cpu update: %+v", d.ContainerGroups[0])
	}

	ev, err := common(t, cl, "DescribeContainerGroupEvents", map[string]string{"RegionId": testRegion, "ContainerGroupIds": `["` + id + `"]`})
	if err != nil || len(ev["Data"].([]any)) != 1 {
		t.Fatalf("events: %v %v", err, ev)
	}

	// Price, regions, resources, usage.
	pr := ecisdk.CreateDescribeContainerGroupPriceRequest()
	pr.RegionId = testRegion
	pr.Cpu = requests.NewFloat(2)
	pr.Memory = requests.NewFloat(4)
	price, err := cl.DescribeContainerGroupPrice(pr)
	if err != nil || price.PriceInfo.Price.TradePrice <= 0 || price.PriceInfo.Price.Currency == "" {
		t.Fatalf("price: %v %+v", err, price)
	}
	spot, err := common(t, cl, "DescribeContainerGroupPrice", map[string]string{"RegionId": testRegion, "Cpu": "2", "Memory": "4", "SpotStrategy": "SpotAsPriceGo"})
	if err != nil {
		t.Fatal(err)
	}
	if sp := spot["PriceInfo"].(map[string]any)["Price"].(map[string]any)["TradePrice"].(float64); sp >= float64(price.PriceInfo.Price.TradePrice) {
		t.Fatalf("spot price %v not below on-demand %v", sp, price.PriceInfo.Price.TradePrice)
	}
	regions, err := cl.DescribeRegions(ecisdk.CreateDescribeRegionsRequest())
	if err != nil || len(regions.Regions) != 1 || regions.Regions[0].RegionId != testRegion {
		t.Fatalf("regions: %v %+v", err, regions)
	}
	if _, err := common(t, cl, "DescribeAvailableResource", map[string]string{"RegionId": testRegion}); err != nil {
		t.Fatal(err)
	}
	usage, err := common(t, cl, "ListUsage", map[string]string{"RegionId": testRegion})
	if err != nil || usage["Attributes"].(map[string]any)["MaxCpu"] != float64(-1) {
		t.Fatalf("usage: %v %v", err, usage)
	}

	// Delete; then it is gone, and deleting again is ResourceNotFound.
	del := ecisdk.CreateDeleteContainerGroupRequest()
	del.RegionId = testRegion
	del.ContainerGroupId = id
	if _, err := cl.DeleteContainerGroup(del); err != nil {
		t.Fatal(err)
	}
	if d, err := cl.DescribeContainerGroups(dreq); err != nil || d.TotalCount != 0 {
		t.Fatalf("after delete: %v %+v", err, d)
	}
	_, err = cl.DeleteContainerGroup(del)
	wantCode(t, err, 404, "ResourceNotFound")
}

// recorder keeps the last request the SDK sent, to replay it by hand.
type recorder struct {
	mu   sync.Mutex
	last *http.Request
	body string
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.last, r.body = req.Clone(context.Background()), string(b)
	r.mu.Unlock()
	req.Body = io.NopCloser(strings.NewReader(string(b)))
	return http.DefaultTransport.RoundTrip(req)
}

func rawECI(t *testing.T, method, u, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("reply is not JSON: %s", b)
	}
	return resp.StatusCode, out
}

// signedURL builds a signature-1.0 request by hand (for what the SDK will
// not send: stale timestamps).
func signedURL(ts *testServer, params map[string]string) string {
	params["AccessKeyId"] = ts.cfg.AccessKeyID
	params["SignatureMethod"] = "HMAC-SHA1"
	params["SignatureVersion"] = "1.0"
	params["Version"] = eci.Version
	params["Format"] = "JSON"
	params["Signature"] = eci.Sign(ts.cfg.AccessKeySecret, eci.StringToSign("GET", params))
	q := url.Values{}
	for k, v := range params {
		q.Set(k, v)
	}
	return ts.cfg.Endpoint + "/?" + q.Encode()
}

func TestECIErrors(t *testing.T) {
	ts := startServer(t)
	cl := ts.adminECI(t)
	describe := func(c *ecisdk.Client) error {
		r := ecisdk.CreateDescribeContainerGroupsRequest()
		r.RegionId = testRegion
		_, err := c.DescribeContainerGroups(r)
		return err
	}

	t.Run("bad signature", func(t *testing.T) {
		wantCode(t, describe(eciClient(t, ts, ts.cfg.AccessKeyID, "wrong-secret")), 400, "SignatureDoesNotMatch")
	})
	t.Run("unknown key", func(t *testing.T) {
		wantCode(t, describe(eciClient(t, ts, "AKnobody", "x")), 404, "InvalidAccessKeyId.NotFound")
	})
	t.Run("replayed nonce", func(t *testing.T) {
		rec := &recorder{}
		c := ts.adminECI(t)
		c.SetTransport(rec)
		if err := describe(c); err != nil {
			t.Fatal(err)
		}
		code, out := rawECI(t, rec.last.Method, rec.last.URL.String(), rec.body)
		if code != 400 || out["Code"] != "SignatureNonceUsed" {
			t.Fatalf("replay: %d %v", code, out)
		}
	})
	t.Run("stale timestamp", func(t *testing.T) {
		u := signedURL(ts, map[string]string{"Action": "DescribeRegions", "SignatureNonce": "n-stale-1",
			"Timestamp": time.Now().Add(-time.Hour).UTC().Format("2006-01-02T15:04:05Z")})
		code, out := rawECI(t, "GET", u, "")
		if code != 400 || out["Code"] != "InvalidTimeStamp.Expired" {
			t.Fatalf("stale: %d %v", code, out)
		}
		u = signedURL(ts, map[string]string{"Action": "DescribeRegions", "SignatureNonce": "n-fresh-1",
			"Timestamp": time.Now().UTC().Format("2006-01-02T15:04:05Z")})
		if code, out := rawECI(t, "GET", u, ""); code != 200 {
			t.Fatalf("hand-signed GET: %d %v", code, out)
		}
	})
	t.Run("unsigned", func(t *testing.T) {
		code, out := rawECI(t, "GET", ts.cfg.Endpoint+"/?Action=DescribeRegions&Version=2018-08-08", "")
		if code != 400 || out["Code"] != "MissingParameter" {
			t.Fatalf("unsigned: %d %v", code, out)
		}
	})
	t.Run("unknown action", func(t *testing.T) {
		_, err := common(t, cl, "LaunchMissiles", nil)
		wantCode(t, err, 404, "InvalidAction.NotFound")
	})
	t.Run("unknown group", func(t *testing.T) {
		r := ecisdk.CreateRestartContainerGroupRequest()
		r.RegionId = testRegion
		r.ContainerGroupId = "g-doesnotexist"
		_, err := cl.RestartContainerGroup(r)
		wantCode(t, err, 404, "ResourceNotFound")
	})
	before := ts.count(t)
	bad := []struct {
		name   string
		mutate func(r *ecisdk.CreateContainerGroupRequest)
		code   string
	}{
		{"no name", func(r *ecisdk.CreateContainerGroupRequest) { r.ContainerGroupName = "" }, "MissingParameter"},
		{"negative cpu", func(r *ecisdk.CreateContainerGroupRequest) { (*r.Container)[0].Cpu = requests.NewFloat(-1) }, "InvalidParameter"},
		{"bad restart policy", func(r *ecisdk.CreateContainerGroupRequest) { r.RestartPolicy = "Sometimes" }, "InvalidParameter"},
		{"bad image", func(r *ecisdk.CreateContainerGroupRequest) { (*r.Container)[0].Image = "http://x y" }, "InvalidParameter"},
		{"mount of unknown volume", func(r *ecisdk.CreateContainerGroupRequest) {
			(*(*r.Container)[0].VolumeMount)[0].Name = "nope"
		}, "InvalidParameter"},
		{"config not base64", func(r *ecisdk.CreateContainerGroupRequest) {
			(*(*r.Volume)[1].ConfigFileVolume.ConfigFileToPath)[0].Content = "%%%"
		}, "InvalidParameter"},
		{"disk volume", func(r *ecisdk.CreateContainerGroupRequest) {
			(*r.Volume)[0] = ecisdk.CreateContainerGroupVolume{Name: "scratch", Type: "DiskVolume", DiskVolume: ecisdk.CreateContainerGroupDiskVolume{DiskId: "d-1"}}
		}, "InvalidParameter.NotSupported"},
		{"nfs bad server", func(r *ecisdk.CreateContainerGroupRequest) {
			(*r.Volume)[0] = ecisdk.CreateContainerGroupVolume{Name: "scratch", Type: "NFSVolume", NFSVolume: ecisdk.CreateContainerGroupNFSVolume{Server: "nas -o x", Path: "/"}}
		}, "InvalidParameter"},
		{"nfs relative path", func(r *ecisdk.CreateContainerGroupRequest) {
			(*r.Volume)[0] = ecisdk.CreateContainerGroupVolume{Name: "scratch", Type: "NFSVolume", NFSVolume: ecisdk.CreateContainerGroupNFSVolume{Server: "nas", Path: "share"}}
		}, "InvalidParameter"},
		{"nfs without server", func(r *ecisdk.CreateContainerGroupRequest) {
			(*r.Volume)[0] = ecisdk.CreateContainerGroupVolume{Name: "scratch", Type: "NFSVolume", NFSVolume: ecisdk.CreateContainerGroupNFSVolume{Path: "/"}}
		}, "MissingParameter"},
		{"spot limit too low", func(r *ecisdk.CreateContainerGroupRequest) {
			r.SpotStrategy = "SpotWithPriceLimit"
			r.SpotPriceLimit = requests.NewFloat(0.0000001)
		}, "InvalidParameter"},
		{"bad spot strategy", func(r *ecisdk.CreateContainerGroupRequest) { r.SpotStrategy = "Cheap" }, "InvalidParameter"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			r := fullCreate("bad")
			tc.mutate(r)
			_, err := cl.CreateContainerGroup(r)
			wantCode(t, err, 400, tc.code)
		})
	}
	if after := ts.count(t); after != before {
		t.Fatalf("bad creates left %d groups behind", after-before)
	}
	t.Run("exceeded quota", func(t *testing.T) {
		acct := ts.newAccount(t, "small", api.Quota{MilliCPU: 1500, Groups: 5})
		c := eciClient(t, ts, acct.Key.ID, acct.Key.Secret)
		if _, err := c.CreateContainerGroup(fullCreate("one")); err != nil {
			t.Fatal(err)
		}
		_, err := c.CreateContainerGroup(fullCreate("two"))
		wantCode(t, err, 403, "QuotaExceeded")
	})
}

// TestIsolation tries every route of both APIs on another account's group.
func TestIsolation(t *testing.T) {
	ts := startServer(t)
	a := ts.newAccount(t, "alice", api.Quota{})
	b := ts.newAccount(t, "bob", api.Quota{})
	tsA, tsB := ts.asAccount(a.Key), ts.asAccount(b.Key)
	ca := eciClient(t, ts, a.Key.ID, a.Key.Secret)
	cb := eciClient(t, ts, b.Key.ID, b.Key.Secret)
	resp, err := ca.CreateContainerGroup(fullCreate("secret"))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.ContainerGroupId

	// ECI: every action that names a group.
	for _, tc := range []struct {
		action string
		params map[string]string
	}{
		{"DeleteContainerGroup", map[string]string{"ContainerGroupId": id}},
		{"RestartContainerGroup", map[string]string{"ContainerGroupId": id}},
		{"UpdateContainerGroup", map[string]string{"ContainerGroupId": id, "RestartPolicy": "Never"}},
		{"DescribeContainerLog", map[string]string{"ContainerGroupId": id, "ContainerName": "app"}},
		{"ExecContainerCommand", map[string]string{"ContainerGroupId": id, "ContainerName": "app", "Command": `["ls"]`, "Sync": "true"}},
		{"ExecContainerCommand", map[string]string{"ContainerGroupId": id, "ContainerName": "app", "Command": `["sh"]`, "TTY": "true"}},
		{"DescribeContainerGroupEvents", map[string]string{"ContainerGroupIds": `["` + id + `"]`}},
		{"DescribeContainerGroupMetric", map[string]string{"ContainerGroupId": id}},
		{"DescribeMultiContainerGroupMetric", map[string]string{"ContainerGroupIds": `["` + id + `"]`}},
		{"TagResources", map[string]string{"ResourceType": "ContainerGroup", "ResourceId.1": id, "Tag.1.Key": "x"}},
		{"UntagResources", map[string]string{"ResourceType": "ContainerGroup", "ResourceId.1": id, "All": "true"}},
	} {
		tc.params["RegionId"] = testRegion
		_, err := common(t, cb, tc.action, tc.params)
		wantCode(t, err, 404, "ResourceNotFound")
	}
	for _, action := range []string{"DescribeContainerGroups", "DescribeContainerGroupStatus"} {
		out, err := common(t, cb, action, map[string]string{"RegionId": testRegion, "ContainerGroupIds": `["` + id + `"]`})
		if err != nil || out["TotalCount"].(float64) != 0 {
			t.Fatalf("%s by another account: %v %v", action, err, out)
		}
	}
	if out, err := common(t, cb, "ListTagResources", map[string]string{"RegionId": testRegion, "ResourceType": "ContainerGroup", "ResourceId.1": id}); err != nil || len(out["TagResources"].([]any)) != 0 {
		t.Fatalf("ListTagResources: %v %v", err, out)
	}
	// Native: every group route, by id and by name.
	for _, ref := range []string{id, "secret"} {
		for _, rt := range []struct{ method, path string }{
			{"GET", "/v1/groups/" + ref}, {"DELETE", "/v1/groups/" + ref}, {"POST", "/v1/groups/" + ref + "/restart"},
			{"GET", "/v1/groups/" + ref + "/events"}, {"GET", "/v1/groups/" + ref + "/wait?status=Running&timeout=1ms"},
			{"GET", "/v1/groups/" + ref + "/logs"}, {"POST", "/v1/groups/" + ref + "/exec"}, {"GET", "/v1/groups/" + ref + "/exec/ws?command=sh"},
			{"GET", "/v1/groups/" + ref + "/metrics"},
		} {
			var body []byte
			if rt.method == "POST" {
				body = []byte(`{"command":["ls"]}`)
			}
			if code, out := tsB.do(t, rt.method, rt.path, body, nil); code != 404 {
				t.Errorf("bob %s %s: %d %s", rt.method, rt.path, code, out)
			}
		}
	}
	if n := tsB.count(t); n != 0 {
		t.Fatalf("bob lists %d groups", n)
	}
	// Accounts: bob cannot read or manage alice.
	for _, rt := range []struct{ method, path string }{
		{"GET", "/v1/accounts/alice"}, {"GET", "/v1/accounts/alice/keys"}, {"POST", "/v1/accounts/alice/keys"},
		{"POST", "/v1/accounts/alice/keys/" + a.Key.ID + "/disable"}, {"GET", "/v1/accounts/alice/usage"},
		{"GET", "/v1/usage?account=alice"},
	} {
		if code, out := tsB.do(t, rt.method, rt.path, nil, nil); code != 404 {
			t.Errorf("bob %s %s: %d %s", rt.method, rt.path, code, out)
		}
	}
	for _, rt := range []struct{ method, path, body string }{
		{"POST", "/v1/accounts", `{"name":"mallory"}`}, {"GET", "/v1/accounts", ""}, {"PUT", "/v1/accounts/bob/quota", `{"groups":1000}`},
		{"GET", "/v1/usage?account=*", ""},
	} {
		if code, out := tsB.do(t, rt.method, rt.path, []byte(rt.body), nil); code != 403 {
			t.Errorf("bob %s %s: %d %s", rt.method, rt.path, code, out)
		}
	}
	// Alice still has it, untouched.
	if code, out := tsA.do(t, "GET", "/v1/groups/"+id, nil, nil); code != 200 || strings.Contains(string(out), `"deleting": true`) || !strings.Contains(string(out), `"restartPolicy": "OnFailure"`) {
		t.Fatalf("alice: %d %s", code, out)
	}

	// Keys: a disabled key stops working on the ECI front at once; a
	// rotated one is replaced by the new one.
	k2code, k2 := tsA.do(t, "POST", "/v1/accounts/alice/keys", nil, nil)
	if k2code != 201 {
		t.Fatalf("create key: %d %s", k2code, k2)
	}
	var key2 api.AccessKey
	_ = json.Unmarshal(k2, &key2)
	c2 := eciClient(t, ts, key2.ID, key2.Secret)
	if _, err := c2.DescribeRegions(ecisdk.CreateDescribeRegionsRequest()); err != nil {
		t.Fatal(err)
	}
	if code, out := tsA.do(t, "POST", "/v1/accounts/alice/keys/"+key2.ID+"/disable", nil, nil); code != 200 {
		t.Fatalf("disable: %d %s", code, out)
	}
	_, err = c2.DescribeRegions(ecisdk.CreateDescribeRegionsRequest())
	wantCode(t, err, 404, "InvalidAccessKeyId.NotFound")
	code, rot := ts.do(t, "POST", "/v1/accounts/alice/keys/"+a.Key.ID+"/rotate", nil, nil)
	if code != 200 {
		t.Fatalf("rotate: %d %s", code, rot)
	}
	var key3 api.AccessKey
	_ = json.Unmarshal(rot, &key3)
	_, err = ca.DescribeRegions(ecisdk.CreateDescribeRegionsRequest())
	wantCode(t, err, 404, "InvalidAccessKeyId.NotFound")
	if _, err := eciClient(t, ts, key3.ID, key3.Secret).DescribeRegions(ecisdk.CreateDescribeRegionsRequest()); err != nil {
		t.Fatalf("rotated key: %v", err)
	}
}

// TestQuotaRace creates concurrently past a quota, through both fronts:
// exactly the quota is admitted.
func TestQuotaRace(t *testing.T) {
	ts := startServer(t)
	acct := ts.newAccount(t, "racer", api.Quota{Groups: 7, MilliCPU: 100000})
	tsR := ts.asAccount(acct.Key)
	cl := eciClient(t, ts, acct.Key.ID, acct.Key.Secret)
	var ok, quota atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 24; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if i%2 == 0 {
				r := fullCreate(fmt.Sprintf("r-%d", i))
				_, err := cl.CreateContainerGroup(r)
				var se *sdkerrors.ServerError
				switch {
				case err == nil:
					ok.Add(1)
				case errors.As(err, &se) && se.ErrorCode() == "QuotaExceeded":
					quota.Add(1)
				default:
					t.Errorf("eci create: %v", err)
				}
				return
			}
			body := fmt.Sprintf(`{"name":"n-%d","spec":{"containers":[{"name":"a","image":"busybox"}]}}`, i)
			code, out := tsR.do(t, "POST", "/v1/groups", []byte(body), nil)
			switch {
			case code == 201:
				ok.Add(1)
			case code == 403 && strings.Contains(string(out), "QuotaExceeded"):
				quota.Add(1)
			default:
				t.Errorf("native create: %d %s", code, out)
			}
		}(i)
	}
	wg.Wait()
	if ok.Load() != 7 || quota.Load() != 17 {
		t.Fatalf("admitted %d, refused %d; want 7 and 17", ok.Load(), quota.Load())
	}
	if n := tsR.count(t); n != 7 {
		t.Fatalf("%d groups exist, want 7", n)
	}
	// Deleting frees the quota.
	code, out := tsR.do(t, "DELETE", "/v1/groups/n-1", nil, nil)
	if code != 202 {
		// n-1 may have been refused: delete any one.
		var l api.List[api.Group]
		_, b := tsR.do(t, "GET", "/v1/groups", nil, nil)
		_ = json.Unmarshal(b, &l)
		code, out = tsR.do(t, "DELETE", "/v1/groups/"+l.Items[0].ID, nil, nil)
	}
	if code != 202 {
		t.Fatalf("delete: %d %s", code, out)
	}
	if code, out := tsR.do(t, "POST", "/v1/groups", []byte(`{"name":"after","spec":{"containers":[{"name":"a","image":"busybox"}]}}`), nil); code != 201 {
		t.Fatalf("create after delete: %d %s", code, out)
	}
}

func TestECIImageCacheActions(t *testing.T) {
	ts := startServer(t)
	cl := ts.adminECI(t)
	creq := ecisdk.CreateCreateImageCacheRequest()
	creq.ImageCacheName = "warm"
	creq.Image = []string{"busybox:latest"}
	creq.ImageRegistryCredential = &[]ecisdk.CreateImageCacheImageRegistryCredential{{Server: "reg.local:5000", UserName: "u", Password: "s3cret"}}
	cresp, err := cl.CreateImageCache(creq)
	if err != nil {
		t.Fatal(err)
	}
	if cresp.ImageCacheId == "" {
		t.Fatal("no ImageCacheId")
	}
	dreq := ecisdk.CreateDescribeImageCachesRequest()
	dreq.ImageCacheId = cresp.ImageCacheId
	dresp, err := cl.DescribeImageCaches(dreq)
	if err != nil {
		t.Fatal(err)
	}
	if len(dresp.ImageCaches) != 1 || dresp.ImageCaches[0].ImageCacheName != "warm" || dresp.ImageCaches[0].Status != "Creating" {
		t.Fatalf("describe: %+v", dresp.ImageCaches)
	}
	checkShape(t, "CreateImageCache", cresp.GetHttpContentBytes(), *cresp)
	checkShape(t, "DescribeImageCaches", dresp.GetHttpContentBytes(), *dresp)
	if strings.Contains(dresp.GetHttpContentString(), "s3cret") {
		t.Fatal("the registry password came back in DescribeImageCaches")
	}
	// Another account sees nothing of it and cannot delete it.
	other := ts.newAccount(t, "other-caches", api.Quota{})
	ocl := eciClient(t, ts, other.Key.ID, other.Key.Secret)
	if r, err := ocl.DescribeImageCaches(ecisdk.CreateDescribeImageCachesRequest()); err != nil || len(r.ImageCaches) != 0 {
		t.Fatalf("other account sees caches: %v %+v", err, r)
	}
	odel := ecisdk.CreateDeleteImageCacheRequest()
	odel.ImageCacheId = cresp.ImageCacheId
	if _, err := ocl.DeleteImageCache(odel); err == nil {
		t.Fatal("another account deleted the cache")
	}
	del := ecisdk.CreateDeleteImageCacheRequest()
	del.ImageCacheId = cresp.ImageCacheId
	if _, err := cl.DeleteImageCache(del); err != nil {
		t.Fatal(err)
	}
	dresp, err = cl.DescribeImageCaches(dreq)
	if err != nil || len(dresp.ImageCaches) != 1 || dresp.ImageCaches[0].Status != "Deleting" {
		t.Fatalf("after delete: %v %+v", err, dresp)
	}
}
