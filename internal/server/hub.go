package server

import (
	"bufio"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/hostapi"
	"github.com/skiffhq/skiff/internal/pki"
	"github.com/skiffhq/skiff/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Hub holds the connections of the host agents joined to this server
// replica. Agents dial in over mutual TLS and keep one yamux session; the
// hub serves the agent API on it and reaches the agent back through it.
type Hub struct {
	store     *store.Store
	ca        *pki.CA
	joinToken string
	log       *slog.Logger
	cidrs     *cidrAllocator
	onChange  func() // a host came or went: the scheduler may have work
	apiAddr   string // this replica's advertised API address
	leases    *leaseLog

	mu       sync.Mutex
	sessions map[string]*agentSession
	// pools holds the agents' last pool reports (pool.go).
	pools poolReports
}

type agentSession struct {
	hostID string
	sess   *yamux.Session
	client *http.Client
}

// Connected reports whether the host's agent is connected to this replica.
func (h *Hub) Connected(hostID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.sessions[hostID]
	return ok
}

// Client returns an HTTP client whose requests reach the host's agent, or
// ErrUnavailable when the agent is not connected here.
func (h *Hub) Client(hostID string) (*http.Client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.sessions[hostID]
	if !ok {
		return nil, errdefs.Userf(errdefs.ErrUnavailable, fmt.Sprintf("host %s is not connected to this server; its agent may be down or restarting", hostID))
	}
	return s.client, nil
}

// ConnectedHosts lists the hosts connected here.
func (h *Hub) ConnectedHosts() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.sessions))
	for id := range h.sessions {
		out = append(out, id)
	}
	return out
}

// Handler serves the agent port: /join with a token over server-only TLS,
// and /agent/v1/connect, which needs the agent's client certificate and
// turns the connection into a yamux session.
func (h *Hub) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /join", h.handleJoin)
	mux.HandleFunc("GET /agent/v1/connect", h.handleConnect)
	return mux
}

// TLSConfig is the agent port's TLS configuration.
func (h *Hub) TLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    h.ca.Pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
	}
}

func (h *Hub) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req hostapi.JoinRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		http.Error(w, "bad join request: "+err.Error(), http.StatusBadRequest)
		return
	}
	tok, err := pki.ParseJoinToken(req.Token)
	want, _ := pki.ParseJoinToken(h.joinToken)
	if err != nil || subtle.ConstantTimeCompare([]byte(tok.Secret), []byte(want.Secret)) != 1 {
		h.log.Warn("join refused: bad token", "remote", r.RemoteAddr, "name", req.Name)
		http.Error(w, "join token is not valid for this cluster", http.StatusUnauthorized)
		return
	}
	if err := api.ValidateName(req.Name); err != nil {
		http.Error(w, "host "+err.Error(), http.StatusBadRequest)
		return
	}
	hostID := newID("h-")
	cert, err := h.ca.SignAgent([]byte(req.CSR), hostID)
	if err != nil {
		http.Error(w, "bad csr: "+err.Error(), http.StatusBadRequest)
		return
	}
	now := time.Now().UTC()
	if err := h.store.PutHost(r.Context(), &api.Host{ID: hostID, Name: req.Name, State: api.HostNotReady, JoinedAt: now}); err != nil {
		http.Error(w, "cannot record host", http.StatusServiceUnavailable)
		return
	}
	h.log.Info("host joined", "host", hostID, "name", req.Name, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, hostapi.JoinReply{HostID: hostID, Cert: string(cert), CA: string(h.ca.CertPEM)})
}

func (h *Hub) handleConnect(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		http.Error(w, "a client certificate from `skiff agent` join is required", http.StatusUnauthorized)
		return
	}
	hostID := r.TLS.VerifiedChains[0][0].Subject.CommonName
	host, err := h.store.GetHost(r.Context(), hostID)
	if err != nil {
		http.Error(w, "unknown host "+hostID+": join again", http.StatusForbidden)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot upgrade", http.StatusInternalServerError)
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: skiff-yamux\r\n\r\n")
	if err := brw.Flush(); err != nil {
		conn.Close()
		return
	}
	sess, err := yamux.Server(&bufferedConn{Conn: conn, r: brw.Reader}, yamuxConfig())
	if err != nil {
		conn.Close()
		return
	}
	go h.serveSession(host, sess)
}

// bufferedConn reads first what the HTTP server had already buffered.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func yamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.LogOutput = io.Discard
	c.EnableKeepAlive = true
	c.KeepAliveInterval = 5 * time.Second
	c.ConnectionWriteTimeout = 15 * time.Second
	c.MaxStreamWindowSize = 1 << 20
	c.AcceptBacklog = 1024
	return c
}

func (h *Hub) serveSession(host *api.Host, sess *yamux.Session) {
	hostID := host.ID
	as := &agentSession{hostID: hostID, sess: sess, client: &http.Client{Transport: &http.Transport{
		DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return sess.Open() },
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}}}
	h.mu.Lock()
	if old, ok := h.sessions[hostID]; ok {
		old.sess.Close()
	}
	h.sessions[hostID] = as
	h.mu.Unlock()
	h.log.Info("agent connected", "host", hostID, "name", host.Name)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.keepAlive(ctx, hostID, sess)

	srv := &http.Server{Handler: h.agentAPI(hostID), ReadHeaderTimeout: 30 * time.Second}
	_ = srv.Serve(sess) // returns when the session closes
	cancel()
	h.mu.Lock()
	if h.sessions[hostID] == as {
		delete(h.sessions, hostID)
	}
	h.mu.Unlock()
	h.log.Info("agent disconnected", "host", hostID)
	h.forgetPool(hostID)
	dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, _ = h.store.Client().Delete(dctx, h.store.AliveKey(hostID))
	dcancel()
	if h.onChange != nil {
		h.onChange()
	}
}

// keepAlive holds the host's alive key on a lease for as long as the
// session lives; the leader marks hosts without one NotReady.
func (h *Hub) keepAlive(ctx context.Context, hostID string, sess *yamux.Session) {
	cli := h.store.Client()
	for ctx.Err() == nil {
		lease, err := cli.Grant(ctx, 10)
		if err == nil && h.leases != nil {
			h.leases.record(lease.ID)
		}
		if err == nil {
			_, err = cli.Put(ctx, h.store.AliveKey(hostID), time.Now().UTC().Format(time.RFC3339), clientv3.WithLease(lease.ID))
		}
		if err == nil {
			h.ensureReady(ctx, hostID)
		}
		if err == nil {
			var ka <-chan *clientv3.LeaseKeepAliveResponse
			ka, err = cli.KeepAlive(ctx, lease.ID)
			if err == nil {
				for range ka {
					h.ensureReady(ctx, hostID) // every few seconds
				}
			}
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, _ = cli.Revoke(rctx, lease.ID)
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-sess.CloseChan():
			return
		case <-time.After(time.Second):
		}
	}
}

// ensureReady marks a host whose session and alive key hold Ready again:
// the leader may have marked it NotReady between the hello (which set
// Ready) and the alive key's write, having read the alive keys before it.
func (h *Hub) ensureReady(ctx context.Context, hostID string) {
	_, _ = h.store.UpdateHost(ctx, hostID, func(host *api.Host) error {
		if host.State != api.HostNotReady {
			return store.ErrNoChange
		}
		host.State = api.HostReady
		return nil
	})
}

// agentAPI is what an agent calls on its session.
func (h *Hub) agentAPI(hostID string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /agent/v1/hello", func(w http.ResponseWriter, r *http.Request) {
		var hello hostapi.Hello
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&hello); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var allocated string
		host, err := h.store.UpdateHost(r.Context(), hostID, func(host *api.Host) error {
			host.Name = hello.Name
			host.Address = hello.Address
			host.Zone = hello.Zone
			host.Labels = hello.Labels
			host.Capacity = hello.Capacity
			host.Runtime = hello.Runtime
			host.Version = hello.Version
			host.State = api.HostReady
			host.Server = h.apiAddr
			host.LastHeartbeat = time.Now().UTC()
			if hello.PodCIDR != "" {
				host.PodCIDR = hello.PodCIDR
			}
			if host.PodCIDR == "" {
				// Allocate once, even if this update is retried: a retry
				// must not burn another range.
				if allocated == "" {
					cidr, err := h.cidrs.allocate(r.Context())
					if err != nil {
						return err
					}
					allocated = cidr
				}
				host.PodCIDR = allocated
			}
			return nil
		})
		if err != nil {
			h.log.Error("hello", "host", hostID, "err", err)
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if h.onChange != nil {
			h.onChange()
		}
		writeJSON(w, http.StatusOK, hostapi.HelloReply{HostID: hostID, PodCIDR: host.PodCIDR})
	})
	mux.HandleFunc("POST /agent/v1/pool", func(w http.ResponseWriter, r *http.Request) {
		h.handlePoolReport(w, r, hostID) // pool.go
	})
	mux.HandleFunc("GET /agent/v1/assignments", func(w http.ResponseWriter, r *http.Request) {
		h.streamAssignments(w, r, hostID)
	})
	mux.HandleFunc("POST /agent/v1/status", func(w http.ResponseWriter, r *http.Request) {
		var rep hostapi.StatusReport
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<20)).Decode(&rep); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := h.applyStatus(r.Context(), hostID, rep.Updates); err != nil {
			h.log.Error("status report", "host", hostID, "err", err)
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func (h *Hub) streamAssignments(w http.ResponseWriter, r *http.Request, hostID string) {
	ctx := r.Context()
	groups, rev, err := h.store.ListGroups(ctx)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	fl, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	for _, g := range groups {
		if g.HostID == hostID {
			if enc.Encode(hostapi.Assignment{Type: "ADDED", Group: g}) != nil {
				return
			}
		}
	}
	if enc.Encode(hostapi.Assignment{Type: "SYNCED"}) != nil {
		return
	}
	if fl != nil {
		fl.Flush()
	}
	for ev := range h.store.WatchGroups(ctx, rev) {
		if ev.Group.HostID != hostID {
			continue
		}
		if enc.Encode(hostapi.Assignment{Type: ev.Type, Group: ev.Group}) != nil {
			return
		}
		if fl != nil {
			fl.Flush()
		}
	}
	// The watch ended (compaction, etcd trouble, or the agent left); the
	// agent reconnects the stream and gets a fresh list.
}

// applyStatus records what an agent observed.
func (h *Hub) applyStatus(ctx context.Context, hostID string, ups []hostapi.GroupUpdate) error {
	var events []api.Event
	var updates []hostapi.GroupUpdate // batched: statusbatch.go
	var removed []string
	for _, u := range ups {
		for i := range u.Events {
			u.Events[i].GroupID = u.ID
			u.Events[i].HostID = hostID
		}
		events = append(events, u.Events...)
		if u.Removed {
			removed = append(removed, u.ID)
			continue
		}
		updates = append(updates, u)
	}
	if err := h.removeGroups(ctx, hostID, removed); err != nil {
		return err
	}
	if err := h.applyUpdates(ctx, hostID, updates); err != nil {
		return err
	}
	if len(events) > 0 {
		// Events of deleted groups would linger: drop those groups' events.
		if err := h.store.AppendEvents(ctx, events...); err != nil {
			return err
		}
	}
	return nil
}

// removeGroups deletes the records of groups their host has torn down, in
// batched transactions (a teardown reports many at once); a group that
// changed meanwhile is looked at again alone.
func (h *Hub) removeGroups(ctx context.Context, hostID string, ids []string) error {
	if len(ids) <= 1 {
		for _, id := range ids {
			if err := h.removeGroup(ctx, hostID, id); err != nil {
				return err
			}
		}
		return nil
	}
	gs, err := h.store.GetGroups(ctx, ids)
	if err != nil {
		return err
	}
	var del []*api.Group
	for _, g := range gs {
		if g.Deleting && g.HostID == hostID {
			del = append(del, g)
		}
	}
	for i, err := range h.store.DeleteGroups(ctx, del) {
		if err != nil {
			if err := h.removeGroup(ctx, hostID, del[i].ID); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeGroup deletes the record of a group its host has torn down.
func (h *Hub) removeGroup(ctx context.Context, hostID, id string) error {
	for attempt := 0; ; attempt++ {
		g, err := h.store.GetGroup(ctx, id)
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if !g.Deleting || g.HostID != hostID {
			return nil
		}
		err = h.store.DeleteGroup(ctx, g)
		if errors.Is(err, store.ErrConflict) && attempt < 10 {
			continue
		}
		return err
	}
}

func applyUpdate(g *api.Group, u *hostapi.GroupUpdate) {
	if g.Deleting {
		if !u.Status.Terminal() {
			u.Status = api.StatusTerminating
		}
	}
	if g.RestartGeneration > u.RestartGeneration && u.Status == api.StatusRunning {
		u.Status = api.StatusRestarting // the host has not acted on the restart yet
	}
	if g.SpecGeneration > u.SpecGeneration && !g.Deleting && !u.Status.Terminal() {
		u.Status, u.Reason, u.Message = api.StatusUpdating, "", "" // nor on the update
	}
	if u.SpecGeneration > g.AppliedSpecGeneration {
		g.AppliedSpecGeneration = u.SpecGeneration
	}
	if g.Status == api.StatusExpired && g.SpotReclaimAt != nil && u.Status.Terminal() {
		// A reclaimed spot group's final status is the control plane's.
		u.Status, u.Reason, u.Message = g.Status, g.Reason, g.Message
	}
	if u.Status == api.StatusRunning && g.Status != api.StatusRunning {
		now := time.Now().UTC()
		g.RunningAt = &now
	}
	g.Status = u.Status
	g.Reason = u.Reason
	g.Message = u.Message
	if u.IP != "" {
		g.IP = u.IP
	}
	if u.StartedAt != nil {
		g.StartedAt = u.StartedAt
	}
	g.FinishedAt = u.FinishedAt
	if u.Containers != nil {
		g.Containers = u.Containers
	}
	if u.InitContainers != nil {
		g.InitContainers = u.InitContainers
	}
}
