package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/skiffhq/skiff/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// MaxEventsPerGroup bounds the events kept for one group.
const MaxEventsPerGroup = 100

// PutHost writes a host record unconditionally.
func (s *Store) PutHost(ctx context.Context, h *api.Host) error {
	return s.putJSON(ctx, s.Key("hosts", h.ID), h)
}

// GetHost reads a host record.
func (s *Store) GetHost(ctx context.Context, id string) (*api.Host, error) {
	var h api.Host
	rev, err := s.getJSON(ctx, s.Key("hosts", id), &h)
	if err != nil {
		return nil, fmt.Errorf("host %q: %w", id, err)
	}
	h.Revision = rev
	return &h, nil
}

// ListHosts returns every host.
func (s *Store) ListHosts(ctx context.Context) ([]*api.Host, error) {
	resp, err := s.cli.Get(ctx, s.Key("hosts")+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("store: list hosts: %w", err)
	}
	out := make([]*api.Host, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var h api.Host
		if json.Unmarshal(kv.Value, &h) == nil {
			h.Revision = kv.ModRevision
			out = append(out, &h)
		}
	}
	return out, nil
}

// UpdateHost is a compare-and-swap update of a host record.
func (s *Store) UpdateHost(ctx context.Context, id string, fn func(h *api.Host) error) (*api.Host, error) {
	for attempt := 0; attempt < 50; attempt++ {
		h, err := s.GetHost(ctx, id)
		if err != nil {
			return nil, err
		}
		rev := h.Revision
		if err := fn(h); err != nil {
			return nil, err
		}
		h.Revision = 0
		b, _ := json.Marshal(h)
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(s.Key("hosts", id)), "=", rev)).
			Then(clientv3.OpPut(s.Key("hosts", id), string(b))).Commit()
		if err != nil {
			return nil, fmt.Errorf("store: update host: %w", err)
		}
		if resp.Succeeded {
			h.Revision = resp.Header.Revision
			return h, nil
		}
	}
	return nil, fmt.Errorf("store: update host %s: too much contention: %w", id, ErrConflict)
}

// AliveKey is the leased key present while a host's agent is connected.
func (s *Store) AliveKey(hostID string) string { return s.Key("alive", hostID) }

// AliveHosts returns the ids of hosts whose agents are connected.
func (s *Store) AliveHosts(ctx context.Context) (map[string]bool, error) {
	prefix := s.Key("alive") + "/"
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[string(kv.Key[len(prefix):])] = true
	}
	return out, nil
}

// AppendEvents records events, trimming each group's history to
// MaxEventsPerGroup. Events of groups that no longer exist are dropped.
func (s *Store) AppendEvents(ctx context.Context, evs ...api.Event) error {
	if len(evs) == 0 {
		return nil
	}
	ops := make([]clientv3.Op, 0, len(evs))
	for i, ev := range evs {
		if ev.Time.IsZero() {
			ev.Time = time.Now().UTC()
		}
		b, _ := json.Marshal(ev)
		// Nanosecond time keys sort in order; the index breaks ties.
		seq := fmt.Sprintf("%020d-%04d", ev.Time.UnixNano(), i)
		ops = append(ops, clientv3.OpPut(s.Key("events", ev.GroupID, seq), string(b)))
	}
	for start := 0; start < len(ops); start += 100 {
		end := min(start+100, len(ops))
		if _, err := s.cli.Txn(ctx).Then(ops[start:end]...).Commit(); err != nil {
			return fmt.Errorf("store: append events: %w", err)
		}
	}
	return nil
}

// ListEvents returns a group's events, oldest first, trimming old ones.
func (s *Store) ListEvents(ctx context.Context, groupID string) ([]api.Event, error) {
	resp, err := s.cli.Get(ctx, s.Key("events", groupID)+"/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("store: list events: %w", err)
	}
	out := make([]api.Event, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var ev api.Event
		if json.Unmarshal(kv.Value, &ev) == nil {
			out = append(out, ev)
		}
	}
	if over := len(resp.Kvs) - MaxEventsPerGroup; over > 0 {
		// Trim the oldest beyond the cap; best effort.
		_, _ = s.cli.Delete(ctx, string(resp.Kvs[0].Key), clientv3.WithRange(string(resp.Kvs[over].Key)))
		out = out[over:]
	}
	return out, nil
}

// Account is a tenant.
type Account struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Admin     bool      `json:"admin,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

// AccessKey is one key pair of an account.
type AccessKey struct {
	ID        string    `json:"id"`
	Secret    string    `json:"secret"`
	AccountID string    `json:"accountId"`
	Disabled  bool      `json:"disabled,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

// CreateAccount writes a new account with its first key; it fails with
// ErrConflict when the account exists.
func (s *Store) CreateAccount(ctx context.Context, a *Account, k *AccessKey) error {
	ab, _ := json.Marshal(a)
	kb, _ := json.Marshal(k)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.Key("accounts", a.ID)), "=", 0)).
		Then(clientv3.OpPut(s.Key("accounts", a.ID), string(ab)), clientv3.OpPut(s.Key("keys", k.ID), string(kb))).
		Commit()
	if err != nil {
		return fmt.Errorf("store: create account: %w", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("account %q: %w", a.ID, ErrConflict)
	}
	return nil
}

// GetAccount reads an account.
func (s *Store) GetAccount(ctx context.Context, id string) (*Account, error) {
	var a Account
	if _, err := s.getJSON(ctx, s.Key("accounts", id), &a); err != nil {
		return nil, fmt.Errorf("account %q: %w", id, err)
	}
	return &a, nil
}

// GetAccessKey reads an access key by id.
func (s *Store) GetAccessKey(ctx context.Context, id string) (*AccessKey, error) {
	var k AccessKey
	if _, err := s.getJSON(ctx, s.Key("keys", id), &k); err != nil {
		return nil, fmt.Errorf("access key %q: %w", id, err)
	}
	return &k, nil
}

// GetCluster reads a cluster-wide value (CA, join token).
func (s *Store) GetCluster(ctx context.Context, name string) ([]byte, error) {
	resp, err := s.cli.Get(ctx, s.Key("cluster", name))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, ErrNotFound
	}
	return resp.Kvs[0].Value, nil
}

// PutClusterIfAbsent writes a cluster value unless one exists, and returns
// the value that is stored afterwards (so racing servers agree on one).
func (s *Store) PutClusterIfAbsent(ctx context.Context, name string, v []byte) ([]byte, error) {
	k := s.Key("cluster", name)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(v))).
		Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return nil, err
	}
	if resp.Succeeded {
		return v, nil
	}
	return resp.Responses[0].GetResponseRange().Kvs[0].Value, nil
}

// NextCounter atomically increments a named counter and returns its value.
func (s *Store) NextCounter(ctx context.Context, name string) (int64, error) {
	k := s.Key("counters", name)
	for i := 0; i < 100; i++ {
		resp, err := s.cli.Get(ctx, k)
		if err != nil {
			return 0, err
		}
		var cur, rev int64
		if len(resp.Kvs) > 0 {
			cur, _ = strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64)
			rev = resp.Kvs[0].ModRevision
		}
		tx, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).
			Then(clientv3.OpPut(k, strconv.FormatInt(cur+1, 10))).Commit()
		if err != nil {
			return 0, err
		}
		if tx.Succeeded {
			return cur + 1, nil
		}
	}
	return 0, fmt.Errorf("store: counter %s: %w", name, ErrConflict)
}

func (s *Store) putJSON(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := s.cli.Put(ctx, key, string(b)); err != nil {
		return fmt.Errorf("store: put %s: %w", key, err)
	}
	return nil
}

func (s *Store) getJSON(ctx context.Context, key string, v any) (int64, error) {
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("store: get: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, ErrNotFound
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, v); err != nil {
		return 0, fmt.Errorf("store: corrupt record %s: %w", key, err)
	}
	return resp.Kvs[0].ModRevision, nil
}
