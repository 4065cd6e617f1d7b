package client

import (
	"context"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/skiffhq/skiff/api"
)

// CreateGroup creates a container group. created is false when the request's
// ClientToken matched a group made earlier, which is returned instead.
func (c *Client) CreateGroup(ctx context.Context, req api.CreateGroupRequest) (g *api.Group, created bool, err error) {
	g = new(api.Group)
	code, err := c.do(ctx, http.MethodPost, c.url(nil, "v1", "groups"), req, g)
	if err != nil {
		return nil, false, err
	}
	return g, code == http.StatusCreated, nil
}

// GetGroup returns the group with this id or name.
func (c *Client) GetGroup(ctx context.Context, idOrName string) (*api.Group, error) {
	g := new(api.Group)
	if _, err := c.do(ctx, http.MethodGet, c.url(nil, "v1", "groups", idOrName), nil, g); err != nil {
		return nil, err
	}
	return g, nil
}

// ListOptions filters a group listing. The zero value lists everything the
// server returns by default, one page.
type ListOptions struct {
	Name string
	// Labels must all match (k=v).
	Labels map[string]string
	// Statuses, when set, keeps groups in any of them.
	Statuses []api.Status
	// Limit is the page size; 0 leaves it to the server.
	Limit     int
	NextToken string
	// All asks the server for every group, terminal ones included.
	All bool
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	if o.Name != "" {
		q.Set("name", o.Name)
	}
	keys := make([]string, 0, len(o.Labels))
	for k := range o.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		q.Add("label", k+"="+o.Labels[k])
	}
	if len(o.Statuses) > 0 {
		q.Set("status", joinStatuses(o.Statuses))
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.NextToken != "" {
		q.Set("nextToken", o.NextToken)
	}
	if o.All {
		q.Set("all", "true")
	}
	return q
}

// ListGroups returns one page of groups; pass the answer's NextToken back in
// opts.NextToken for the next page.
func (c *Client) ListGroups(ctx context.Context, opts ListOptions) (*api.List[api.Group], error) {
	l := new(api.List[api.Group])
	if _, err := c.do(ctx, http.MethodGet, c.url(opts.query(), "v1", "groups"), nil, l); err != nil {
		return nil, err
	}
	return l, nil
}

// ListAllGroups follows NextToken through every page.
func (c *Client) ListAllGroups(ctx context.Context, opts ListOptions) ([]api.Group, error) {
	var all []api.Group
	seen := map[string]bool{}
	for {
		l, err := c.ListGroups(ctx, opts)
		if err != nil {
			return nil, err
		}
		all = append(all, l.Items...)
		if l.NextToken == "" || seen[l.NextToken] {
			return all, nil
		}
		seen[l.NextToken] = true
		opts.NextToken = l.NextToken
	}
}

// DeleteGroup starts deleting a group and returns it (now Terminating).
// force kills its containers without the grace period.
func (c *Client) DeleteGroup(ctx context.Context, idOrName string, force bool) (*api.Group, error) {
	q := url.Values{}
	if force {
		q.Set("force", "true")
	}
	g := new(api.Group)
	if _, err := c.do(ctx, http.MethodDelete, c.url(q, "v1", "groups", idOrName), nil, g); err != nil {
		return nil, err
	}
	return g, nil
}

// DeleteGroupGrace starts deleting a group with a grace period of its own
// (Kubernetes' gracePeriodSeconds), which replaces the spec's; a later
// call may shorten it. 0 kills at once, like force.
func (c *Client) DeleteGroupGrace(ctx context.Context, idOrName string, graceSeconds int64) (*api.Group, error) {
	q := url.Values{"gracePeriodSeconds": {strconv.FormatInt(graceSeconds, 10)}}
	g := new(api.Group)
	if _, err := c.do(ctx, http.MethodDelete, c.url(q, "v1", "groups", idOrName), nil, g); err != nil {
		return nil, err
	}
	return g, nil
}

// RestartGroup restarts every container of a group.
func (c *Client) RestartGroup(ctx context.Context, idOrName string) (*api.Group, error) {
	g := new(api.Group)
	if _, err := c.do(ctx, http.MethodPost, c.url(nil, "v1", "groups", idOrName, "restart"), nil, g); err != nil {
		return nil, err
	}
	return g, nil
}

// Events returns a group's events, oldest first.
func (c *Client) Events(ctx context.Context, idOrName string) ([]api.Event, error) {
	return listAll[api.Event](ctx, c, "v1", "groups", idOrName, "events")
}

// Metrics returns a point-in-time resource reading of a group.
func (c *Client) Metrics(ctx context.Context, idOrName string) (*api.Metrics, error) {
	m := new(api.Metrics)
	if _, err := c.do(ctx, http.MethodGet, c.url(nil, "v1", "groups", idOrName, "metrics"), nil, m); err != nil {
		return nil, err
	}
	return m, nil
}

// Exec runs a command in a container once and returns its output.
func (c *Client) Exec(ctx context.Context, idOrName string, req api.ExecRequest) (*api.ExecResult, error) {
	r := new(api.ExecResult)
	if _, err := c.do(ctx, http.MethodPost, c.url(nil, "v1", "groups", idOrName, "exec"), req, r); err != nil {
		return nil, err
	}
	return r, nil
}

// WaitTimeoutCode is the error code of a wait that ran out of time.
const WaitTimeoutCode = "WaitTimeout"

// Wait blocks until the group is in status, or the server gives up after
// timeout (0: the server's default, 30 s) with an error of code
// WaitTimeoutCode.
func (c *Client) Wait(ctx context.Context, idOrName string, status api.Status, timeout time.Duration) (*api.Group, error) {
	return c.WaitAny(ctx, idOrName, []api.Status{status}, timeout)
}

// WaitAny is Wait for the first of several statuses; the caller reads
// g.Status to see which. Waiting for Running together with the terminal
// statuses and ScheduleFailed (see Unreachable) answers as soon as the
// group can no longer get there.
func (c *Client) WaitAny(ctx context.Context, idOrName string, statuses []api.Status, timeout time.Duration) (*api.Group, error) {
	q := url.Values{}
	q.Set("status", joinStatuses(statuses))
	if timeout > 0 {
		q.Set("timeout", timeout.String())
	}
	g := new(api.Group)
	if _, err := c.do(ctx, http.MethodGet, c.url(q, "v1", "groups", idOrName, "wait"), nil, g); err != nil {
		return nil, err
	}
	return g, nil
}

// Unreachable lists the statuses from which a group will never reach want
// (statuses it stays in for good), for use with WaitAny.
func Unreachable(want api.Status) []api.Status {
	var out []api.Status
	for _, s := range api.AllStatuses {
		if s != want && (s.Terminal() || s == api.StatusScheduleFailed) {
			out = append(out, s)
		}
	}
	return out
}

func joinStatuses(ss []api.Status) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = string(s)
	}
	return strings.Join(parts, ",")
}

// Hosts lists the hosts of the fleet, every page.
func (c *Client) Hosts(ctx context.Context) ([]api.Host, error) {
	return listAll[api.Host](ctx, c, "v1", "hosts")
}

// Images lists the images in the hosts' stores, every page.
func (c *Client) Images(ctx context.Context) ([]api.Image, error) {
	return listAll[api.Image](ctx, c, "v1", "images")
}

// listAll fetches a listing at path segs, following nextToken.
func listAll[T any](ctx context.Context, c *Client, segs ...string) ([]T, error) {
	var all []T
	q := url.Values{}
	seen := map[string]bool{}
	for {
		var l api.List[T]
		if _, err := c.do(ctx, http.MethodGet, c.url(q, segs...), nil, &l); err != nil {
			return nil, err
		}
		all = append(all, l.Items...)
		if l.NextToken == "" || seen[l.NextToken] {
			return all, nil
		}
		seen[l.NextToken] = true
		q.Set("nextToken", l.NextToken)
	}
}
