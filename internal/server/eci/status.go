package eci

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/skiffhq/skiff/api"
)

// The actions here have no typed reply in the Go SDK (v1.63); their shapes
// follow ECI's API metadata as the generated SDKs carry it (the
// @alicloud/eci20180808 models): Kubernetes-style pod status for
// DescribeContainerGroupStatus, Kubernetes-style events for
// DescribeContainerGroupEvents, an Attributes object for ListUsage.

// Labels the virtual kubelet puts on the groups of pods (package kubelet).
const (
	labelPodNamespace = "k8s.skiff.io/namespace"
	labelPodName      = "k8s.skiff.io/pod"
	labelPodUID       = "k8s.skiff.io/uid"
)

// podIdentity is the Name, Namespace and uuid ECI reports for a group: the
// pod's, when a pod made it, else the group's own.
func podIdentity(g *api.Group) (name, namespace, uid string) {
	name, namespace, uid = g.Name, "default", g.ID
	if v := g.Labels[labelPodName]; v != "" {
		name = v
	}
	if v := g.Labels[labelPodNamespace]; v != "" {
		namespace = v
	}
	if v := g.Labels[labelPodUID]; v != "" {
		uid = v
	}
	return name, namespace, uid
}

// sinceFilter reads SinceSecond: only what changed in the last N seconds.
func (h *Handler) sinceFilter(p *params) *time.Time {
	s := p.int("SinceSecond", 1, math.MaxInt32)
	if s == nil {
		return nil
	}
	t := h.cfg.Now().Add(-time.Duration(*s) * time.Second)
	return &t
}

// statusFilter reads the filters DescribeContainerGroupStatus and
// DescribeContainerGroupEvents share: at most 20 ids, Limit (default 200),
// tags, NextToken. ZoneId, VSwitchId and ResourceGroupId select nothing
// here (one region, no VPCs).
func statusFilter(p *params) ListOptions {
	o := ListOptions{NextToken: p.str("NextToken"), IDs: p.jsonList("ContainerGroupIds", 20), Limit: 200}
	if l := p.int("Limit", 1, 1000); l != nil {
		o.Limit = int(*l)
	}
	o.Labels = tags(p, "Tag")
	return o
}

func (h *Handler) describeContainerGroupStatus(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	o := statusFilter(p)
	since := h.sinceFilter(p)
	if p.err != nil {
		return nil, p.err
	}
	page, err := h.cfg.Backend.ListGroups(ctx, c, o)
	if err != nil {
		return nil, err
	}
	data := make([]map[string]any, 0, len(page.Items))
	for _, g := range page.Items {
		if since != nil && g.UpdatedAt.Before(*since) {
			continue
		}
		name, ns, uid := podIdentity(g)
		data = append(data, map[string]any{
			"ContainerGroupId": g.ID, "Name": name, "Namespace": ns, "uuid": uid, "Annotations": "",
			"Status": string(g.Status), "PodStatus": podStatus(g),
		})
	}
	return map[string]any{"Data": data, "TotalCount": page.Total, "NextToken": page.NextToken}, nil
}

// podStatus is a group's status as a Kubernetes PodStatus.
func podStatus(g *api.Group) map[string]any {
	var cs []map[string]any
	for _, st := range append(append([]api.ContainerStatus{}, g.InitContainers...), g.Containers...) {
		st := st
		cs = append(cs, map[string]any{"Name": st.Name, "Image": st.Image, "ImageID": st.ImageID, "Ready": st.Ready,
			"Started": st.State == api.ContainerRunning, "RestartCount": st.RestartCount,
			"State": k8sState(&st), "LastState": k8sState(st.LastState)})
	}
	ips := []map[string]any{}
	if g.IP != "" {
		ips = append(ips, map[string]any{"Ip": g.IP})
	}
	qos := "BestEffort"
	if g.Spec.CPU > 0 || g.Spec.Memory > 0 {
		qos = "Guaranteed" // the group's resources are its limits and its requests
	}
	return map[string]any{"Phase": phase(g.Status), "PodIp": g.IP, "PodIps": ips, "HostIp": g.HostIP, "QosClass": qos,
		"StartTime": eciTime(g.StartedAt), "Conditions": conditions(g), "ContainerStatuses": nonNilMaps(cs)}
}

// phase maps a group status to a Kubernetes pod phase.
func phase(s api.Status) string {
	switch s {
	case api.StatusRunning, api.StatusRestarting, api.StatusUpdating:
		return "Running"
	case api.StatusSucceeded:
		return "Succeeded"
	case api.StatusFailed, api.StatusExpired:
		return "Failed"
	case api.StatusTerminating:
		return "Running"
	}
	return "Pending"
}

// k8sState renders a container state the Kubernetes way: one of Running,
// Terminated or Waiting.
func k8sState(cs *api.ContainerStatus) map[string]any {
	if cs == nil {
		return map[string]any{}
	}
	switch cs.State {
	case api.ContainerRunning:
		return map[string]any{"Running": map[string]any{"StartedAt": eciTime(cs.StartedAt)}}
	case api.ContainerTerminated:
		code := 0
		if cs.ExitCode != nil {
			code = *cs.ExitCode
		}
		return map[string]any{"Terminated": map[string]any{"ContainerID": "", "ExitCode": code, "FinishedAt": eciTime(cs.FinishedAt),
			"Message": cs.Message, "Reason": cs.Reason, "Signal": cs.Signal, "StartedAt": eciTime(cs.StartedAt)}}
	case "":
		return map[string]any{}
	}
	return map[string]any{"Waiting": map[string]any{"Message": cs.Message, "Reason": cs.Reason}}
}

// conditions are the pod conditions Kubernetes reports, from the group's
// times (skiff keeps no separate transition times).
func conditions(g *api.Group) []map[string]any {
	cond := func(typ string, ok bool, at *time.Time) map[string]any {
		st := "False"
		if ok {
			st = "True"
		}
		return map[string]any{"type": typ, "status": st, "lastTransitionTime": eciTime(at), "Reason": "", "Message": ""}
	}
	initialized := len(g.InitContainers) == 0
	if !initialized {
		initialized = true
		for _, c := range g.InitContainers {
			initialized = initialized && c.State == api.ContainerTerminated && c.ExitCode != nil && *c.ExitCode == 0
		}
	}
	ready := g.Status == api.StatusRunning && len(g.Containers) > 0
	for _, c := range g.Containers {
		ready = ready && c.Ready
	}
	return []map[string]any{
		cond("PodScheduled", g.ScheduledAt != nil, g.ScheduledAt),
		cond("Initialized", initialized && g.StartedAt != nil, g.StartedAt),
		cond("ContainersReady", ready, g.RunningAt),
		cond("Ready", ready, g.RunningAt),
	}
}

// describeContainerGroupEvents returns the events of the groups named, or
// of every group of the caller's (paged like DescribeContainerGroups), as
// Kubernetes events.
func (h *Handler) describeContainerGroupEvents(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	o := statusFilter(p)
	if id := p.str("ContainerGroupId"); id != "" { // accepted alongside the documented list
		o.IDs = append(o.IDs, id)
	}
	since := h.sinceFilter(p)
	p.oneOf("EventSource", "", "EciService", "K8S")
	if p.err != nil {
		return nil, p.err
	}
	var groups []*api.Group
	total, next := 0, ""
	if len(o.IDs) > 0 {
		// Named groups: an unknown one is an error, as elsewhere.
		for _, id := range o.IDs {
			g, err := h.cfg.Backend.GetGroup(ctx, c, id)
			if err != nil {
				return nil, err
			}
			groups = append(groups, g)
		}
		total = len(groups)
	} else {
		page, err := h.cfg.Backend.ListGroups(ctx, c, o)
		if err != nil {
			return nil, err
		}
		groups, total, next = page.Items, page.Total, page.NextToken
	}
	data := make([]map[string]any, 0, len(groups))
	for _, g := range groups {
		evs, err := h.cfg.Backend.Events(ctx, c, g.ID)
		if err != nil {
			return nil, err
		}
		name, ns, uid := podIdentity(g)
		out := make([]map[string]any, 0, len(evs))
		for i, e := range evs {
			if since != nil && e.Time.Before(*since) {
				continue
			}
			t := e.Time
			count := max(e.Count, 1)
			out = append(out, map[string]any{"Count": count, "Type": e.Type, "Reason": e.Reason, "Message": e.Message,
				"FirstTimestamp": eciTime(&t), "LastTimestamp": eciTime(&t),
				"Metadata":           map[string]any{"Name": name + "." + strconv.FormatInt(t.UnixNano(), 16) + strconv.Itoa(i), "Namespace": ns},
				"Source":             map[string]any{"Component": "EciService", "Host": e.HostID},
				"ReportingComponent": "EciService", "ReportingInstance": e.HostID,
				"involvedObject": map[string]any{"ApiVersion": "v1", "Kind": "Pod", "Name": name, "Namespace": ns, "Uid": uid,
					"FieldPath": fieldPath(e.Container)}})
		}
		data = append(data, map[string]any{"ContainerGroupId": g.ID, "Name": name, "Namespace": ns, "uuid": uid, "Annotations": "", "Events": out})
	}
	res := map[string]any{"Data": data, "TotalCount": total}
	if next != "" {
		res["NextToken"] = next
	}
	return res, nil
}

func fieldPath(container string) string {
	if container == "" {
		return ""
	}
	return fmt.Sprintf("spec.containers{%s}", container)
}

// describeAvailableResource lists, per zone, the largest group shape a
// host there can take now.
func (h *Handler) describeAvailableResource(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	want := p.str("ZoneId")
	p.oneOf("DestinationResource.Category", "", "InstanceType", "SystemDisk")
	if p.err != nil {
		return nil, p.err
	}
	_, hosts, err := h.zones(ctx)
	if err != nil {
		return nil, err
	}
	type best struct{ cpu, mem int64 }
	byZone := map[string]*best{}
	for _, host := range hosts {
		z := host.Zone
		if z == "" {
			z = h.cfg.Region + "-default"
		}
		if want != "" && z != want {
			continue
		}
		b := byZone[z]
		if b == nil {
			b = &best{}
			byZone[z] = b
		}
		if host.State == api.HostReady {
			b.cpu = max(b.cpu, host.Capacity.MilliCPU-host.Allocated.MilliCPU)
			b.mem = max(b.mem, host.Capacity.Memory-host.Allocated.Memory)
		}
	}
	zonesOut := []map[string]any{}
	for z, b := range byZone {
		// ECS's StatusCategory values: WithStock, ClosedWithStock, WithoutStock.
		status := "WithStock"
		if b.cpu <= 0 || b.mem <= 0 {
			status = "WithoutStock"
		}
		res := func(typ, value string) map[string]any {
			return map[string]any{"Type": typ, "SupportedResources": map[string]any{"SupportedResource": []map[string]any{{"Value": value, "StatusCategory": status}}}}
		}
		zonesOut = append(zonesOut, map[string]any{"RegionId": h.cfg.Region, "ZoneId": z,
			"AvailableResources": map[string]any{"AvailableResource": []map[string]any{
				res("Cpu", strconv.FormatFloat(float64(max(b.cpu, 0))/1000, 'f', -1, 64)),
				res("Memory", strconv.FormatFloat(float64(max(b.mem, 0))/gib, 'f', 2, 64)),
			}}})
	}
	sort.Slice(zonesOut, func(i, j int) bool { return zonesOut[i]["ZoneId"].(string) < zonesOut[j]["ZoneId"].(string) })
	return map[string]any{"AvailableZones": map[string]any{"AvailableZone": zonesOut}}, nil
}

// listUsage reports the account's use against its quota as ECI's
// Attributes: UsedCpu/MaxCpu and the image cache counts as ECI names them,
// and skiff's other quotas (memory in GiB, container groups) alongside. A
// Max of -1 is no limit.
func (h *Handler) listUsage(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	u, err := h.cfg.Backend.AccountUsage(ctx, c)
	if err != nil {
		return nil, err
	}
	limit := func(v float64) float64 {
		if v == 0 {
			return -1
		}
		return v
	}
	caches := 0
	if h.cfg.ImageCaches != nil {
		if cs, err := h.cfg.ImageCaches.ListImageCaches(ctx, c); err == nil {
			caches = len(cs)
		}
	}
	attrs := map[string]any{
		"UsedCpu": float64(u.MilliCPU) / 1000, "MaxCpu": limit(float64(u.Quota.MilliCPU) / 1000),
		"UsedMemory": float64(u.Memory) / gib, "MaxMemory": limit(float64(u.Quota.Memory) / gib),
		"UsedContainerGroupCount": u.Groups, "MaxContainerGroupCount": limit(float64(u.Quota.Groups)),
		"UsedImageCacheCount": caches, "MaxImageCacheCount": -1,
		"UsedAutoImageCacheCount": 0, "MaxAutoImageCacheCount": -1,
		"UsedDataCacheCount": 0, "MaxDataCacheCount": 0,
	}
	return map[string]any{"Attributes": attrs}, nil
}
