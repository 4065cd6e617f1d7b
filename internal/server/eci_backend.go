package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/server/eci"
	"github.com/skiffhq/skiff/internal/store"
	"github.com/skiffhq/skiff/internal/tenancy"
)

// eciBackend adapts the service layer to the ECI front's Backend: it only
// converts the caller and option types; the logic is the Service's.
type eciBackend struct {
	svc *Service
	ten *tenancy.Manager
}

var _ eci.Backend = (*eciBackend)(nil)

func fromECI(c eci.Caller) Caller { return Caller{AccountID: c.AccountID, Admin: c.Admin} }

func (b *eciBackend) CreateGroup(ctx context.Context, c eci.Caller, req *api.CreateGroupRequest) (*api.Group, bool, error) {
	return b.svc.CreateGroup(ctx, fromECI(c), req)
}

func (b *eciBackend) GetGroup(ctx context.Context, c eci.Caller, id string) (*api.Group, error) {
	return b.svc.GetGroup(ctx, fromECI(c), id)
}

func (b *eciBackend) ListGroups(ctx context.Context, c eci.Caller, o eci.ListOptions) (api.List[*api.Group], error) {
	return b.svc.ListGroups(ctx, fromECI(c), ListOptions{Name: o.Name, Labels: o.Labels, Statuses: o.Statuses, IDs: o.IDs, Limit: o.Limit, NextToken: o.NextToken})
}

func (b *eciBackend) DeleteGroup(ctx context.Context, c eci.Caller, id string) (*api.Group, error) {
	return b.svc.DeleteGroup(ctx, fromECI(c), id, false)
}

func (b *eciBackend) RestartGroup(ctx context.Context, c eci.Caller, id string) (*api.Group, error) {
	return b.svc.RestartGroup(ctx, fromECI(c), id)
}

func (b *eciBackend) UpdateGroup(ctx context.Context, c eci.Caller, id string, fn func(g *api.Group) error) (*api.Group, error) {
	return b.svc.UpdateGroupFields(ctx, fromECI(c), id, fn)
}

func (b *eciBackend) UpdateGroupSpec(ctx context.Context, c eci.Caller, id string, req *api.UpdateGroupRequest) (*api.Group, error) {
	return b.svc.UpdateGroup(ctx, fromECI(c), id, req)
}

func (b *eciBackend) Events(ctx context.Context, c eci.Caller, id string) ([]api.Event, error) {
	return b.svc.Events(ctx, fromECI(c), id)
}

func (b *eciBackend) Logs(ctx context.Context, c eci.Caller, id string, o eci.LogOptions) (string, error) {
	q := url.Values{}
	if o.Container != "" {
		q.Set("container", o.Container)
	}
	if o.Tail >= 0 {
		q.Set("tail", strconv.Itoa(o.Tail))
	}
	if o.Since != "" {
		q.Set("since", o.Since)
	}
	if o.Previous {
		q.Set("previous", "true")
	}
	if o.Timestamps {
		q.Set("timestamps", "true")
	}
	return b.svc.Logs(ctx, fromECI(c), id, q)
}

func (b *eciBackend) Exec(ctx context.Context, c eci.Caller, id string, req api.ExecRequest) (*api.ExecResult, error) {
	return b.svc.Exec(ctx, fromECI(c), id, req)
}

func (b *eciBackend) ExecWS(w http.ResponseWriter, r *http.Request, c eci.Caller, id string, q url.Values) error {
	return b.svc.ExecWS(w, r, fromECI(c), id, q)
}

func (b *eciBackend) Metrics(ctx context.Context, c eci.Caller, id string) (*api.Metrics, error) {
	return b.svc.Metrics(ctx, fromECI(c), id)
}

func (b *eciBackend) Hosts(ctx context.Context) ([]*api.Host, error) { return b.svc.Hosts(ctx) }

func (b *eciBackend) AccountUsage(ctx context.Context, c eci.Caller) (*api.AccountUsage, error) {
	return b.ten.Usage(ctx, c.AccountID)
}

func (b *eciBackend) Price(milliCPU, memory int64, spot bool) api.Price {
	return b.ten.Price(milliCPU, memory, spot)
}

// The host-bound calls of the service layer: the group is resolved within
// the caller's account first, so another account's group is never reached.

// hostOf resolves a group and the client of its host's agent.
func (s *Service) hostOf(ctx context.Context, c Caller, idOrName string) (*api.Group, *http.Client, error) {
	g, err := s.resolve(ctx, c, idOrName)
	if err != nil {
		return nil, nil, err
	}
	if g.HostID == "" {
		return nil, nil, errdefs.Userf(errdefs.ErrIncorrectStat, fmt.Sprintf("group %s is %s and not on a host yet", g.Name, g.Status))
	}
	cl, err := s.hub.Client(g.HostID)
	if err != nil {
		return nil, nil, err
	}
	return g, cl, nil
}

// Logs returns a container's log (no follow) as text.
func (s *Service) Logs(ctx context.Context, c Caller, idOrName string, q url.Values) (string, error) {
	g, cl, err := s.hostOf(ctx, c, idOrName)
	if err != nil {
		return "", err
	}
	q.Del("follow")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/host/v1/groups/"+g.ID+"/logs?"+q.Encode(), nil)
	if err != nil {
		return "", err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return "", errdefs.Userf(errdefs.ErrUnavailable, "host "+g.HostID+": "+err.Error())
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", hostError(resp)
	}
	const maxLog = 4 << 20
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxLog))
	return string(b), err
}

// Exec runs a command once in a container and returns its output.
func (s *Service) Exec(ctx context.Context, c Caller, idOrName string, req api.ExecRequest) (*api.ExecResult, error) {
	g, cl, err := s.hostOf(ctx, c, idOrName)
	if err != nil {
		return nil, err
	}
	var res api.ExecResult
	if err := hostCall(ctx, cl, http.MethodPost, "/host/v1/groups/"+g.ID+"/exec", req, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Metrics reads a group's current resource use.
func (s *Service) Metrics(ctx context.Context, c Caller, idOrName string) (*api.Metrics, error) {
	g, cl, err := s.hostOf(ctx, c, idOrName)
	if err != nil {
		return nil, err
	}
	var m api.Metrics
	if err := hostCall(ctx, cl, http.MethodGet, "/host/v1/groups/"+g.ID+"/metrics", nil, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// ExecWS proxies an interactive exec (a WebSocket upgrade) to the host.
func (s *Service) ExecWS(w http.ResponseWriter, r *http.Request, c Caller, idOrName string, q url.Values) error {
	g, cl, err := s.hostOf(r.Context(), c, idOrName)
	if err != nil {
		return err
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "agent"
			pr.Out.URL.Path = "/host/v1/groups/" + g.ID + "/exec/ws"
			pr.Out.URL.RawPath = ""
			pr.Out.URL.RawQuery = q.Encode()
			pr.Out.Host = "agent"
			pr.Out.Header.Del("Authorization")
		},
		Transport:     cl.Transport,
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, "host "+g.HostID+" did not answer", http.StatusBadGateway)
		},
	}
	rp.ServeHTTP(w, r)
	return nil
}

// Hosts lists the fleet's hosts with what is allocated on them.
func (s *Service) Hosts(ctx context.Context) ([]*api.Host, error) {
	hosts, err := s.store.ListHosts(ctx)
	if err != nil {
		return nil, err
	}
	groups, _, err := s.store.ListGroups(ctx)
	if err != nil {
		return nil, err
	}
	alive, err := s.store.AliveHosts(ctx)
	if err != nil {
		return nil, err
	}
	snap, _ := snapshot(hosts, alive, groups)
	for i, h := range hosts {
		h.Allocated = snap[i].Allocated
		if !alive[h.ID] {
			h.State = api.HostNotReady
		}
	}
	return hosts, nil
}

// eciKeys is the ECI front's key lookup.
type eciKeys struct{ ten *tenancy.Manager }

func (k eciKeys) LookupKey(ctx context.Context, id string) (*store.AccessKey, bool, error) {
	if id == "" || len(id) > 128 || strings.ContainsAny(id, "/\x00") {
		return nil, false, errdefs.Userf(errdefs.ErrUnauthorized, "bad access key id")
	}
	return k.ten.LookupKey(ctx, id)
}
