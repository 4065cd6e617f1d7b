package server

import (
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	ecisdk "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"

	"github.com/skiffhq/skiff/internal/sandbox"
	"github.com/skiffhq/skiff/internal/sandbox/sim"
)

// missingFields lists the JSON fields of the SDK's typed reply t that the
// raw reply lacks, as dotted paths ("ContainerGroups.Containers.Ports").
// Lists are checked on their first item.
func missingFields(raw any, t reflect.Type, path string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	switch t.Kind() {
	case reflect.Struct:
		m, ok := raw.(map[string]any)
		if !ok {
			return []string{path + " (not an object)"}
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.Anonymous {
				continue // the SDK's BaseResponse
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			p := name
			if path != "" {
				p = path + "." + name
			}
			v, ok := m[name]
			if !ok {
				if f.Type.Kind() != reflect.Pointer { // a pointer is one of several (k8s states)
					out = append(out, p)
				}
				continue
			}
			out = append(out, missingFields(v, f.Type, p)...)
		}
	case reflect.Slice:
		l, ok := raw.([]any)
		if !ok {
			return []string{path + " (not a list)"}
		}
		et := t.Elem()
		for et.Kind() == reflect.Pointer {
			et = et.Elem()
		}
		if et.Kind() == reflect.Struct && len(l) > 0 { // an empty list is complete
			out = append(out, missingFields(l[0], et, path)...)
		}
	}
	return out
}

// checkShape fails t when the reply to action lacks a field of its SDK
// type, other than those in allowed (fields skiff has no value for, which
// the reference lets an implementation leave out).
func checkShape(t *testing.T, action string, body []byte, typ any, allowed ...string) {
	t.Helper()
	var raw any
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("%s: %v", action, err)
	}
	ok := map[string]bool{}
	for _, a := range allowed {
		ok[a] = true
	}
	var bad []string
	for _, m := range missingFields(raw, reflect.TypeOf(typ), "") {
		if !ok[m] {
			bad = append(bad, m)
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		t.Errorf("%s: the reply lacks fields of the SDK's %T: %s", action, typ, strings.Join(bad, ", "))
	}
}

// TestECIResponseShapes checks that every reply the Go SDK has a typed
// struct for carries all of that struct's fields, for a running group with
// every feature the create takes.
func TestECIResponseShapes(t *testing.T) {
	ts := startServer(t)
	// The init container (echo) exits at once; the rest run until stopped.
	startSimAgentWith(t, ts, 8000, 16<<30, sim.Config{Exit: func(_ string, c sandbox.ContainerConfig) (time.Duration, int, bool) {
		return 10 * time.Millisecond, 0, len(c.Args) > 0 && c.Args[0] == "echo"
	}})
	cl := ts.adminECI(t)

	cr := fullCreate("shapes")
	cr.SpotStrategy = ""
	c := (*cr.Container)[0]
	c.ReadinessProbe, c.LivenessProbe = ecisdk.CreateContainerGroupReadinessProbe{}, ecisdk.CreateContainerGroupLivenessProbe{}
	c.LifecyclePostStartHandlerTcpSocketPort = ""
	(*cr.Container)[0] = c
	created, err := cl.CreateContainerGroup(cr)
	if err != nil {
		t.Fatal(err)
	}
	checkShape(t, "CreateContainerGroup", created.GetHttpContentBytes(), *created)
	id := created.ContainerGroupId
	waitStatus(t, cl, id, "Running")

	dr := ecisdk.CreateDescribeContainerGroupsRequest()
	dr.RegionId = testRegion
	dr.ContainerGroupIds = `["` + id + `"]`
	dr.QueryParams["WithEvent"] = "true"
	d, err := cl.DescribeContainerGroups(dr)
	if err != nil {
		t.Fatal(err)
	}
	checkShape(t, "DescribeContainerGroups", d.GetHttpContentBytes(), *d)
	if d.TotalCount != 1 || len(d.ContainerGroups) != 1 {
		t.Fatalf("describe: %+v", d)
	}
	g := d.ContainerGroups[0]
	app, init := g.Containers[0], g.InitContainers[0]
	switch {
	case g.ContainerGroupId != id || g.ContainerGroupName != "shapes" || g.RegionId != testRegion || g.Status != "Running" || g.Cpu != 1 || g.Memory != 2:
		t.Errorf("group: %+v", g)
	case g.RestartPolicy != "OnFailure" || g.IntranetIp == "" || g.CreationTime == "" || len(g.Tags) != 2 || len(g.Events) == 0:
		t.Errorf("group: %+v", g)
	case len(g.Volumes) != 2 || g.Volumes[0].Type != "ConfigFileVolume" && g.Volumes[1].Type != "ConfigFileVolume":
		t.Errorf("volumes: %+v", g.Volumes)
	case len(g.HostAliases) != 1 || g.HostAliases[0].Ip != "10.1.1.1" || len(g.DnsConfig.NameServers) != 1 || len(g.EciSecurityContext.Sysctls) != 1:
		t.Errorf("aliases, dns, sysctls: %+v %+v %+v", g.HostAliases, g.DnsConfig, g.EciSecurityContext)
	case app.Name != "app" || app.Image != "busybox" || app.Cpu != 1 || app.Memory != 2 || app.WorkingDir != "/tmp" || !app.Stdin || !app.Tty:
		t.Errorf("container: %+v", app)
	case strings.Join(app.Commands, " ") != "sleep" || strings.Join(app.Args, " ") != "3600" || len(app.Ports) != 1 || app.Ports[0].Port != 8080:
		t.Errorf("container: %+v", app)
	case len(app.EnvironmentVars) != 2 || app.EnvironmentVars[1].ValueFrom.FieldRef.FieldPath != "status.podIP" || len(app.VolumeMounts) != 2:
		t.Errorf("container env, mounts: %+v", app)
	case app.CurrentState.State != "Running" || app.CurrentState.StartTime == "" || !app.Ready:
		t.Errorf("container state: %+v", app.CurrentState)
	case init.Name != "init" || init.CurrentState.State != "Terminated" || init.CurrentState.ExitCode != 0 || init.CurrentState.FinishTime == "":
		t.Errorf("init container: %+v", init)
	}

	lr := ecisdk.CreateDescribeContainerLogRequest()
	lr.RegionId, lr.ContainerGroupId, lr.ContainerName = testRegion, id, "app"
	logs, err := cl.DescribeContainerLog(lr)
	if err != nil {
		t.Fatal(err)
	}
	checkShape(t, "DescribeContainerLog", logs.GetHttpContentBytes(), *logs)
	if logs.ContainerName != "app" || !strings.Contains(logs.Content, "sleep 3600") || logs.RequestId == "" {
		t.Errorf("logs: %+v", logs)
	}

	er := ecisdk.CreateExecContainerCommandRequest()
	er.RegionId, er.ContainerGroupId, er.ContainerName, er.Command = testRegion, id, "app", `["ls"]`
	ex, err := cl.ExecContainerCommand(er)
	if err != nil {
		t.Fatal(err)
	}
	checkShape(t, "ExecContainerCommand", ex.GetHttpContentBytes(), *ex)
	if !strings.HasPrefix(ex.WebSocketUri, "ws://") || !strings.Contains(ex.WebSocketUri, "token=") {
		t.Errorf("exec: %+v", ex)
	}

	mr := ecisdk.CreateDescribeContainerGroupMetricRequest()
	mr.RegionId, mr.ContainerGroupId = testRegion, id
	m, err := cl.DescribeContainerGroupMetric(mr)
	if err != nil {
		t.Fatal(err)
	}
	checkShape(t, "DescribeContainerGroupMetric", m.GetHttpContentBytes(), *m)
	if m.ContainerGroupId != id || len(m.Records) != 1 || m.Records[0].CPU.Limit != 1000 || m.Records[0].Memory.AvailableBytes <= 0 ||
		m.Records[0].Timestamp == "" || len(m.Records[0].Network.Interfaces) != 1 {
		t.Errorf("metric: %+v", m)
	}

	mm := ecisdk.CreateDescribeMultiContainerGroupMetricRequest()
	mm.RegionId, mm.ContainerGroupIds = testRegion, `["`+id+`"]`
	mmr, err := cl.DescribeMultiContainerGroupMetric(mm)
	if err != nil {
		t.Fatal(err)
	}
	checkShape(t, "DescribeMultiContainerGroupMetric", mmr.GetHttpContentBytes(), *mmr)
	if len(mmr.MonitorDatas) != 1 || mmr.MonitorDatas[0].ContainerGroupId != id || len(mmr.MonitorDatas[0].Records) != 1 {
		t.Errorf("multi metric: %+v", mmr)
	}

	pr := ecisdk.CreateDescribeContainerGroupPriceRequest()
	pr.RegionId, pr.Cpu, pr.Memory = testRegion, requests.NewFloat(2), requests.NewFloat(4)
	pr.QueryParams["SpotStrategy"] = "SpotAsPriceGo"
	price, err := cl.DescribeContainerGroupPrice(pr)
	if err != nil {
		t.Fatal(err)
	}
	checkShape(t, "DescribeContainerGroupPrice", price.GetHttpContentBytes(), *price)
	if p := price.PriceInfo; p.Price.TradePrice <= 0 || p.Price.Currency == "" || len(p.Price.DetailInfos) != 2 ||
		p.Price.DetailInfos[0].Resource != "Cpu" || p.Price.DetailInfos[0].TradePrice <= 0 ||
		!strings.Contains(price.GetHttpContentString(), `"SpotPrices":{"SpotPrice":[{"OriginPrice":`) {
		t.Errorf("price: %+v %s", p, price.GetHttpContentString())
	}

	regions, err := cl.DescribeRegions(ecisdk.CreateDescribeRegionsRequest())
	if err != nil {
		t.Fatal(err)
	}
	checkShape(t, "DescribeRegions", regions.GetHttpContentBytes(), *regions)
	if len(regions.Regions) != 1 || regions.Regions[0].RegionId != testRegion || regions.Regions[0].RegionEndpoint == "" || len(regions.Regions[0].Zones) != 1 {
		t.Errorf("regions: %+v", regions)
	}

	// The actions the Go SDK has no typed reply for, against the reply
	// models of ECI's metadata (as @alicloud/eci20180808 carries them).
	raw := func(action string, params map[string]string) []byte {
		t.Helper()
		params["RegionId"] = testRegion
		out, err := common(t, cl, action, params)
		if err != nil {
			t.Fatalf("%s: %v", action, err)
		}
		b, _ := json.Marshal(out)
		return b
	}
	b := raw("DescribeContainerGroupStatus", map[string]string{"ContainerGroupIds": `["` + id + `"]`})
	var st statusReply
	checkShape(t, "DescribeContainerGroupStatus", b, st)
	_ = json.Unmarshal(b, &st)
	if len(st.Data) != 1 {
		t.Fatalf("status: %s", b)
	}
	ps := st.Data[0].PodStatus
	switch {
	case st.TotalCount != 1 || st.Data[0].ContainerGroupId != id || st.Data[0].Name != "shapes" || st.Data[0].Status != "Running":
		t.Errorf("status: %s", b)
	case ps.Phase != "Running" || ps.PodIp == "" || len(ps.PodIps) != 1 || ps.StartTime == "" || len(ps.Conditions) != 4 || ps.Conditions[0].Status != "True":
		t.Errorf("pod status: %s", b)
	case len(ps.ContainerStatuses) != 2 || ps.ContainerStatuses[0].State.Terminated == nil || ps.ContainerStatuses[1].State.Running == nil ||
		ps.ContainerStatuses[1].State.Running.StartedAt == "" || !ps.ContainerStatuses[1].Started:
		t.Errorf("container statuses: %s", b)
	}
	if b := raw("DescribeContainerGroupStatus", map[string]string{"SinceSecond": "1", "Limit": "5"}); !strings.Contains(string(b), `"TotalCount":1`) {
		t.Errorf("status with SinceSecond: %s", b)
	}
	b = raw("DescribeContainerGroupEvents", map[string]string{})
	var evs eventsReply
	checkShape(t, "DescribeContainerGroupEvents", b, evs)
	_ = json.Unmarshal(b, &evs)
	if evs.TotalCount != 1 || len(evs.Data) != 1 || evs.Data[0].ContainerGroupId != id || len(evs.Data[0].Events) == 0 ||
		evs.Data[0].Events[0].InvolvedObject.Kind != "Pod" || evs.Data[0].Events[0].Reason == "" || evs.Data[0].Events[0].FirstTimestamp == "" {
		t.Errorf("events: %s", b)
	}
	b = raw("ListUsage", map[string]string{})
	var lu struct {
		RequestId  string
		Attributes map[string]float64
	}
	_ = json.Unmarshal(b, &lu)
	if lu.Attributes["UsedCpu"] != 1 || lu.Attributes["MaxCpu"] != -1 || lu.Attributes["UsedContainerGroupCount"] != 1 {
		t.Errorf("usage: %s", b)
	}
	b = raw("DescribeAvailableResource", map[string]string{})
	var ar availableReply
	checkShape(t, "DescribeAvailableResource", b, ar)
	_ = json.Unmarshal(b, &ar)
	if z := ar.AvailableZones.AvailableZone; len(z) != 1 || z[0].RegionId != testRegion || len(z[0].AvailableResources.AvailableResource) != 2 ||
		z[0].AvailableResources.AvailableResource[0].SupportedResources.SupportedResource[0].StatusCategory != "WithStock" ||
		z[0].AvailableResources.AvailableResource[0].SupportedResources.SupportedResource[0].Value != "7" {
		t.Errorf("available resource: %s", b)
	}

	for name, resp := range map[string]interface{ GetHttpContentBytes() []byte }{
		"RestartContainerGroup": must(cl.RestartContainerGroup(func() *ecisdk.RestartContainerGroupRequest {
			r := ecisdk.CreateRestartContainerGroupRequest()
			r.RegionId, r.ContainerGroupId = testRegion, id
			return r
		}())),
	} {
		checkShape(t, name, resp.GetHttpContentBytes(), struct {
			RequestId string `json:"RequestId"`
		}{})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Reply models of the actions the Go SDK (v1.63) has no struct for, after
// ECI's API metadata (the @alicloud/eci20180808 models).
type k8sState struct {
	Running *struct {
		StartedAt string `json:"StartedAt"`
	} `json:"Running"`
	Terminated *struct {
		ExitCode   int    `json:"ExitCode"`
		FinishedAt string `json:"FinishedAt"`
		Reason     string `json:"Reason"`
	} `json:"Terminated"`
	Waiting *struct {
		Reason string `json:"Reason"`
	} `json:"Waiting"`
}

type statusReply struct {
	RequestId  string `json:"RequestId"`
	TotalCount int    `json:"TotalCount"`
	NextToken  string `json:"NextToken"`
	Data       []struct {
		Annotations      string `json:"Annotations"`
		ContainerGroupId string `json:"ContainerGroupId"`
		Name             string `json:"Name"`
		Namespace        string `json:"Namespace"`
		Status           string `json:"Status"`
		UUID             string `json:"uuid"`
		PodStatus        struct {
			Phase      string                `json:"Phase"`
			PodIp      string                `json:"PodIp"`
			HostIp     string                `json:"HostIp"`
			QosClass   string                `json:"QosClass"`
			StartTime  string                `json:"StartTime"`
			PodIps     []struct{ Ip string } `json:"PodIps"`
			Conditions []struct {
				Type               string `json:"type"`
				Status             string `json:"status"`
				LastTransitionTime string `json:"lastTransitionTime"`
				Reason             string `json:"Reason"`
				Message            string `json:"Message"`
			} `json:"Conditions"`
			ContainerStatuses []struct {
				Name         string   `json:"Name"`
				Image        string   `json:"Image"`
				ImageID      string   `json:"ImageID"`
				Ready        bool     `json:"Ready"`
				Started      bool     `json:"Started"`
				RestartCount int      `json:"RestartCount"`
				State        k8sState `json:"State"`
				LastState    k8sState `json:"LastState"`
			} `json:"ContainerStatuses"`
		} `json:"PodStatus"`
	} `json:"Data"`
}

type eventsReply struct {
	RequestId  string `json:"RequestId"`
	TotalCount int    `json:"TotalCount"`
	Data       []struct {
		Annotations      string `json:"Annotations"`
		ContainerGroupId string `json:"ContainerGroupId"`
		Name             string `json:"Name"`
		Namespace        string `json:"Namespace"`
		UUID             string `json:"uuid"`
		Events           []struct {
			Count              int    `json:"Count"`
			FirstTimestamp     string `json:"FirstTimestamp"`
			LastTimestamp      string `json:"LastTimestamp"`
			Message            string `json:"Message"`
			Reason             string `json:"Reason"`
			Type               string `json:"Type"`
			ReportingComponent string `json:"ReportingComponent"`
			ReportingInstance  string `json:"ReportingInstance"`
			Metadata           struct {
				Name      string `json:"Name"`
				Namespace string `json:"Namespace"`
			} `json:"Metadata"`
			Source struct {
				Component string `json:"Component"`
				Host      string `json:"Host"`
			} `json:"Source"`
			InvolvedObject struct {
				ApiVersion string `json:"ApiVersion"`
				Kind       string `json:"Kind"`
				Name       string `json:"Name"`
				Namespace  string `json:"Namespace"`
				Uid        string `json:"Uid"`
			} `json:"involvedObject"`
		} `json:"Events"`
	} `json:"Data"`
}

type availableReply struct {
	RequestId      string `json:"RequestId"`
	AvailableZones struct {
		AvailableZone []struct {
			RegionId           string `json:"RegionId"`
			ZoneId             string `json:"ZoneId"`
			AvailableResources struct {
				AvailableResource []struct {
					Type               string `json:"Type"`
					SupportedResources struct {
						SupportedResource []struct {
							Value          string `json:"Value"`
							StatusCategory string `json:"StatusCategory"`
						} `json:"SupportedResource"`
					} `json:"SupportedResources"`
				} `json:"AvailableResource"`
			} `json:"AvailableResources"`
		} `json:"AvailableZone"`
	} `json:"AvailableZones"`
}
