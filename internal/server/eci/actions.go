package eci

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/store"
)

func (h *Handler) createContainerGroup(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	req := decodeCreate(p)
	if p.err != nil {
		return nil, p.err
	}
	g, _, err := h.cfg.Backend.CreateGroup(ctx, c, req)
	if err != nil {
		return nil, err
	}
	return map[string]any{"ContainerGroupId": g.ID}, nil
}

// listFilter reads DescribeContainerGroups' filters.
func listFilter(p *params) ListOptions {
	o := ListOptions{Name: p.str("ContainerGroupName"), NextToken: p.str("NextToken"), IDs: p.jsonList("ContainerGroupIds", 1000)}
	if l := p.int("Limit", 1, 1000); l != nil {
		o.Limit = int(*l)
	} else {
		o.Limit = 20
	}
	if s := p.str("Status"); s != "" {
		st := api.Status(s)
		if !st.Valid() {
			p.fail(invalid("Status", "not an ECI status"))
		}
		o.Statuses = []api.Status{st}
	}
	o.Labels = tags(p, "Tag")
	return o
}

func (h *Handler) describeContainerGroups(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	o := listFilter(p)
	withEvents := p.bool("WithEvent")
	if p.err != nil {
		return nil, p.err
	}
	page, err := h.cfg.Backend.ListGroups(ctx, c, o)
	if err != nil {
		return nil, err
	}
	groups := make([]map[string]any, 0, len(page.Items))
	for _, g := range page.Items {
		var evs []api.Event
		if withEvents {
			if evs, err = h.cfg.Backend.Events(ctx, c, g.ID); err != nil {
				evs = nil
			}
		}
		groups = append(groups, describeGroup(h.cfg.Region, g, evs))
	}
	return map[string]any{"ContainerGroups": groups, "TotalCount": page.Total, "NextToken": page.NextToken}, nil
}

func (h *Handler) deleteContainerGroup(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	id := p.required("ContainerGroupId")
	if p.err != nil {
		return nil, p.err
	}
	if _, err := h.cfg.Backend.DeleteGroup(ctx, c, id); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

func (h *Handler) restartContainerGroup(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	id := p.required("ContainerGroupId")
	if p.err != nil {
		return nil, p.err
	}
	if _, err := h.cfg.Backend.RestartGroup(ctx, c, id); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

func (h *Handler) describeContainerLog(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	id := p.required("ContainerGroupId")
	o := LogOptions{Container: p.required("ContainerName"), Tail: -1, Previous: p.bool("LastTime"), Timestamps: p.bool("Timestamps")}
	if t := p.int("Tail", 0, 100000); t != nil {
		o.Tail = int(*t)
	}
	if s := p.int("SinceSeconds", 1, 1<<31-1); s != nil {
		o.Since = (time.Duration(*s) * time.Second).String()
	}
	if st := p.str("StartTime"); st != "" {
		t, err := time.Parse("2006-01-02T15:04:05Z", st)
		if err != nil {
			p.fail(invalid("StartTime", "must be a UTC time such as 2024-01-02T15:04:05Z"))
		}
		o.Since = t.Format(time.RFC3339)
	}
	if p.err != nil {
		return nil, p.err
	}
	content, err := h.cfg.Backend.Logs(ctx, c, id, o)
	if err != nil {
		return nil, err
	}
	return map[string]any{"ContainerName": o.Container, "Content": content}, nil
}

func (h *Handler) execContainerCommand(ctx context.Context, c Caller, p *params, r *http.Request) (map[string]any, error) {
	id := p.required("ContainerGroupId")
	ctr := p.required("ContainerName")
	cmd := p.jsonList("Command", 1000)
	if p.err == nil && len(cmd) == 0 {
		p.fail(missing("Command"))
	}
	tty := p.bool("TTY")
	stdin := p.bool("Stdin")
	sync := p.bool("Sync")
	if sync && tty {
		p.fail(invalid("TTY", "a synchronous exec has no terminal"))
	}
	if p.err != nil {
		return nil, p.err
	}
	if sync {
		res, err := h.cfg.Backend.Exec(ctx, c, id, api.ExecRequest{Container: ctr, Command: cmd})
		if err != nil {
			return nil, err
		}
		return map[string]any{"SyncResponse": res.Stdout + res.Stderr, "ExitCode": res.ExitCode, "WebSocketUri": ""}, nil
	}
	// Check the group and container now, so that a bad call fails here
	// and not when the client dials the WebSocket.
	g, err := h.cfg.Backend.GetGroup(ctx, c, id)
	if err != nil {
		return nil, err
	}
	found := false
	for _, ct := range append(append([]api.Container{}, g.Spec.Containers...), g.Spec.InitContainers...) {
		found = found || ct.Name == ctr
	}
	if !found {
		return nil, invalid("ContainerName", fmt.Sprintf("group %s has no container %q", g.ID, ctr))
	}
	if g.HostID == "" {
		return nil, &Error{Status: http.StatusBadRequest, Code: "IncorrectStatus", Message: fmt.Sprintf("The container group is %s and not on a host yet.", g.Status)}
	}
	token := strings.ToLower(h.newID("")) + randomHex(16)
	if err := h.cfg.Tokens.PutExecToken(ctx, token, &store.ExecToken{AccountID: c.AccountID, GroupID: g.ID, Container: ctr, Command: cmd, TTY: tty, Stdin: stdin || tty}, time.Minute); err != nil {
		return nil, err
	}
	scheme := "ws"
	if r.TLS != nil {
		scheme = "wss"
	}
	u := url.URL{Scheme: scheme, Host: r.Host, Path: ExecWSPath, RawQuery: url.Values{"token": {token}}.Encode()}
	return map[string]any{"WebSocketUri": u.String()}, nil
}

// serveExecWS runs the exec a token from ExecContainerCommand names. The
// token is the credential: one use, one minute, bound to the account.
// Frames are skiff's exec channels (api.ExecChannel*).
func (h *Handler) serveExecWS(w http.ResponseWriter, r *http.Request) error {
	tok := r.URL.Query().Get("token")
	if tok == "" || len(tok) > 200 {
		return missing("token")
	}
	t, err := h.cfg.Tokens.TakeExecToken(r.Context(), tok)
	if err != nil {
		return &Error{Status: http.StatusForbidden, Code: "Forbidden.Token", Message: "The exec token is unknown, used or expired: call ExecContainerCommand again."}
	}
	q := url.Values{"command": t.Command}
	if t.Container != "" {
		q.Set("container", t.Container)
	}
	if t.TTY {
		q.Set("tty", "true")
	}
	if t.Stdin {
		q.Set("stdin", "true")
	}
	return h.cfg.Backend.ExecWS(w, r, Caller{AccountID: t.AccountID}, t.GroupID, q)
}

func metricRecord(m *api.Metrics, g *api.Group) map[string]any {
	r := g.Spec.Requests()
	limits := map[string]api.Container{}
	for _, c := range g.Spec.Containers {
		limits[c.Name] = c
	}
	ctrs := make([]map[string]any, 0, len(m.Containers))
	for _, c := range m.Containers {
		lim := limits[c.Name].Resources.Limits
		ctrs = append(ctrs, map[string]any{"Name": c.Name,
			"CPU": map[string]any{"UsageCoreNanoSeconds": c.CPUNanos, "Limit": int64(lim.CPU), "Load": 0, "UsageNanoCores": 0},
			"Memory": map[string]any{"UsageBytes": c.MemoryUsed, "WorkingSet": c.MemoryUsed, "Rss": 0, "Cache": 0,
				"AvailableBytes": max(int64(lim.Memory)-int64(c.MemoryUsed), 0)}})
	}
	// One reading, no history: rates (Load, UsageNanoCores) and the page
	// cache are not measured and read 0.
	return map[string]any{
		"Timestamp": eciTime(&m.Time),
		"CPU":       map[string]any{"UsageCoreNanoSeconds": m.CPUNanos, "Limit": r.MilliCPU, "Load": 0, "UsageNanoCores": 0},
		"Memory": map[string]any{"UsageBytes": m.MemoryUsed, "Rss": m.MemoryRSS, "WorkingSet": m.MemoryUsed, "Cache": 0,
			"AvailableBytes": max(r.Memory-int64(m.MemoryUsed), 0)},
		"Network":    map[string]any{"Interfaces": []map[string]any{{"Name": "eth0", "RxBytes": m.RxBytes, "TxBytes": m.TxBytes, "RxErrors": 0, "TxErrors": 0}}},
		"Containers": ctrs,
	}
}

// describeContainerGroupMetric returns the current reading: skiff keeps no
// metric history, so StartTime, EndTime and Period select nothing more.
func (h *Handler) describeContainerGroupMetric(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	id := p.required("ContainerGroupId")
	if p.err != nil {
		return nil, p.err
	}
	rec, err := h.metric(ctx, c, id)
	if err != nil {
		return nil, err
	}
	return map[string]any{"ContainerGroupId": id, "Records": []map[string]any{rec}}, nil
}

func (h *Handler) metric(ctx context.Context, c Caller, id string) (map[string]any, error) {
	g, err := h.cfg.Backend.GetGroup(ctx, c, id)
	if err != nil {
		return nil, err
	}
	m, err := h.cfg.Backend.Metrics(ctx, c, g.ID)
	if err != nil {
		return nil, err
	}
	return metricRecord(m, g), nil
}

func (h *Handler) describeMultiContainerGroupMetric(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	ids := p.jsonList("ContainerGroupIds", 50)
	if p.err == nil && len(ids) == 0 {
		p.fail(missing("ContainerGroupIds"))
	}
	p.oneOf("MetricType", "summary", "")
	if p.err != nil {
		return nil, p.err
	}
	out := make([]map[string]any, 0, len(ids))
	for _, id := range ids {
		rec, err := h.metric(ctx, c, id)
		if err != nil {
			return nil, err
		}
		out = append(out, map[string]any{"ContainerGroupId": id, "Records": []map[string]any{rec}, "ContainerInfos": []any{}})
	}
	return map[string]any{"MonitorDatas": out}, nil
}

func (h *Handler) describeContainerGroupPrice(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	cpu := p.float("Cpu", 0.01, 1024)
	mem := p.float("Memory", 0.01, 4096)
	if p.err == nil && (cpu == nil || mem == nil) {
		if cpu == nil {
			p.fail(missing("Cpu"))
		} else {
			p.fail(missing("Memory"))
		}
	}
	spot := api.IsSpot(p.oneOf("SpotStrategy", api.SpotNone, api.SpotAsPriceGo, api.SpotWithLimit))
	if p.err != nil {
		return nil, p.err
	}
	pr := h.cfg.Backend.Price(int64(cpuOf(cpu)), int64(memOf(mem)), spot)
	detail := []map[string]any{
		{"Resource": "Cpu", "OriginalPrice": pr.VCPUHour, "DiscountPrice": 0, "TradePrice": pr.VCPUHour, "Rules": []any{}},
		{"Resource": "Memory", "OriginalPrice": pr.MemHour, "DiscountPrice": 0, "TradePrice": pr.MemHour, "Rules": []any{}},
	}
	info := map[string]any{
		"Rules": []any{},
		"Price": map[string]any{"OriginalPrice": pr.Hourly, "DiscountPrice": 0, "TradePrice": pr.Hourly, "Currency": pr.Currency, "DetailInfos": detail},
	}
	if spot {
		info["SpotPrices"] = map[string]any{"SpotPrice": []map[string]any{{"SpotPrice": pr.Hourly, "OriginPrice": h.cfg.Backend.Price(int64(cpuOf(cpu)), int64(memOf(mem)), false).Hourly}}}
	}
	return map[string]any{"PriceInfo": info}, nil
}

func (h *Handler) zones(ctx context.Context) ([]string, []*api.Host, error) {
	hosts, err := h.cfg.Backend.Hosts(ctx)
	if err != nil {
		return nil, nil, err
	}
	set := map[string]bool{}
	for _, host := range hosts {
		z := host.Zone
		if z == "" {
			z = h.cfg.Region + "-default"
		}
		set[z] = true
	}
	var zs []string
	for z := range set {
		zs = append(zs, z)
	}
	sort.Strings(zs)
	return zs, hosts, nil
}

func (h *Handler) describeRegions(ctx context.Context, c Caller, p *params, r *http.Request) (map[string]any, error) {
	zs, _, err := h.zones(ctx)
	if err != nil {
		return nil, err
	}
	return map[string]any{"Regions": []map[string]any{{"RegionId": h.cfg.Region, "RegionEndpoint": r.Host, "Zones": nonNil(zs)}}}, nil
}

func resourceIDs(p *params) []string {
	if rt := p.required("ResourceType"); rt != "" && rt != "ContainerGroup" {
		p.fail(invalid("ResourceType", "only ContainerGroup resources have tags here"))
	}
	ids := p.strList("ResourceId")
	if p.err == nil && len(ids) == 0 {
		p.fail(missing("ResourceId.1"))
	}
	if len(ids) > 50 {
		p.fail(invalid("ResourceId", "at most 50 resources"))
	}
	return ids
}

// resolveAll checks every group first, so that a bad id changes nothing.
func (h *Handler) resolveAll(ctx context.Context, c Caller, ids []string) error {
	for _, id := range ids {
		if _, err := h.cfg.Backend.GetGroup(ctx, c, id); err != nil {
			return err
		}
	}
	return nil
}

func (h *Handler) tagResources(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	ids := resourceIDs(p)
	add := tags(p, "Tag")
	if p.err == nil && len(add) == 0 {
		p.fail(missing("Tag.1.Key"))
	}
	if p.err != nil {
		return nil, p.err
	}
	if err := h.resolveAll(ctx, c, ids); err != nil {
		return nil, err
	}
	for _, id := range ids {
		if _, err := h.cfg.Backend.UpdateGroup(ctx, c, id, func(g *api.Group) error {
			if g.Spec.Tags == nil {
				g.Spec.Tags = map[string]string{}
			}
			for k, v := range add {
				g.Spec.Tags[k] = v
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return map[string]any{}, nil
}

func (h *Handler) untagResources(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	ids := resourceIDs(p)
	keys := p.strList("TagKey")
	all := p.bool("All")
	if p.err == nil && len(keys) == 0 && !all {
		p.fail(missing("TagKey.1"))
	}
	if p.err != nil {
		return nil, p.err
	}
	if err := h.resolveAll(ctx, c, ids); err != nil {
		return nil, err
	}
	for _, id := range ids {
		if _, err := h.cfg.Backend.UpdateGroup(ctx, c, id, func(g *api.Group) error {
			if all {
				g.Spec.Tags = nil
				return nil
			}
			for _, k := range keys {
				delete(g.Spec.Tags, k)
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return map[string]any{}, nil
}

func (h *Handler) listTagResources(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	if rt := p.required("ResourceType"); rt != "" && rt != "ContainerGroup" {
		p.fail(invalid("ResourceType", "only ContainerGroup resources have tags here"))
	}
	o := ListOptions{IDs: p.strList("ResourceId"), Labels: tags(p, "Tag"), NextToken: p.str("NextToken"), Limit: 1000}
	if p.err != nil {
		return nil, p.err
	}
	page, err := h.cfg.Backend.ListGroups(ctx, c, o)
	if err != nil {
		return nil, err
	}
	var out []map[string]any
	for _, g := range page.Items {
		for _, t := range tagList(g.Spec.Tags) {
			out = append(out, map[string]any{"ResourceId": g.ID, "ResourceType": "ContainerGroup", "TagKey": t["Key"], "TagValue": t["Value"]})
		}
	}
	return map[string]any{"TagResources": nonNilMaps(out), "NextToken": page.NextToken}, nil
}
