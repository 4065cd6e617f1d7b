// Package store keeps skiff's control-plane state in etcd: container groups,
// hosts, events, accounts and cluster secrets. Every write that must not be
// lost goes through an etcd transaction; updates are compare-and-swap on the
// record's modification revision, so concurrent writers never lose each
// other's changes.
//
// Key layout (under a prefix, "/skiff/" by default):
//
//	groups/<id>                  api.Group JSON
//	names/<account>/<name>       group id (names are unique per account)
//	tokens/<account>/<token>     group id (client tokens for idempotent create)
//	hosts/<id>                   api.Host JSON
//	alive/<id>                   present while the host's agent is connected (leased)
//	events/<group>/<seq>         api.Event JSON
//	accounts/<id>                Account JSON
//	keys/<accessKeyID>           AccessKey JSON
//	cluster/<name>               cluster secrets: CA, join token
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Error classes.
var (
	ErrNotFound = errdefs.ErrNotFound
	ErrConflict = errdefs.ErrConflict
)

// Store is the control plane's view of etcd.
type Store struct {
	cli    *clientv3.Client
	prefix string
}

// New returns a Store over cli with keys under prefix ("/skiff/" if empty).
func New(cli *clientv3.Client, prefix string) *Store {
	if prefix == "" {
		prefix = "/skiff/"
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return &Store{cli: cli, prefix: prefix}
}

// Client returns the underlying etcd client.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Key returns the full key for parts joined by "/".
func (s *Store) Key(parts ...string) string { return s.prefix + path.Join(parts...) }

func (s *Store) groupKey(id string) string { return s.Key("groups", id) }
func (s *Store) nameKey(acct, name string) string {
	return s.Key("names", acct, name)
}
func (s *Store) tokenKey(acct, token string) string {
	return s.Key("tokens", acct, token)
}

// CreateGroup writes a new group, reserving its name and client token.
// When the client token is already used, it returns the existing group and
// ErrConflict wrapped with "token"; a taken name returns ErrConflict.
func (s *Store) CreateGroup(ctx context.Context, g *api.Group) (*api.Group, error) {
	b, err := json.Marshal(g)
	if err != nil {
		return nil, err
	}
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(s.groupKey(g.ID)), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(s.nameKey(g.AccountID, g.Name)), "=", 0),
	}
	ops := []clientv3.Op{
		clientv3.OpPut(s.groupKey(g.ID), string(b)),
		clientv3.OpPut(s.nameKey(g.AccountID, g.Name), g.ID),
	}
	if g.ClientToken != "" {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.tokenKey(g.AccountID, g.ClientToken)), "=", 0))
		ops = append(ops, clientv3.OpPut(s.tokenKey(g.AccountID, g.ClientToken), g.ID))
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("store: create group: %w", err)
	}
	if resp.Succeeded {
		out := *g
		out.Revision = resp.Header.Revision
		return &out, nil
	}
	if g.ClientToken != "" {
		if id, err := s.getString(ctx, s.tokenKey(g.AccountID, g.ClientToken)); err == nil {
			existing, err := s.GetGroup(ctx, id)
			if err == nil {
				return existing, fmt.Errorf("client token %q already used: %w", g.ClientToken, ErrTokenUsed)
			}
		}
	}
	return nil, fmt.Errorf("a group named %q already exists: %w", g.Name, ErrConflict)
}

// ErrTokenUsed says a create's client token matched an earlier create; the
// earlier group is returned with it.
var ErrTokenUsed = errors.New("client token used")

func (s *Store) getString(ctx context.Context, key string) (string, error) {
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", ErrNotFound
	}
	return string(resp.Kvs[0].Value), nil
}

// GetGroup reads one group by id.
func (s *Store) GetGroup(ctx context.Context, id string) (*api.Group, error) {
	resp, err := s.cli.Get(ctx, s.groupKey(id))
	if err != nil {
		return nil, fmt.Errorf("store: get group: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("group %q: %w", id, ErrNotFound)
	}
	return decodeGroup(resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
}

// GroupIDByName resolves a group name within an account.
func (s *Store) GroupIDByName(ctx context.Context, acct, name string) (string, error) {
	id, err := s.getString(ctx, s.nameKey(acct, name))
	if errors.Is(err, ErrNotFound) {
		return "", fmt.Errorf("group %q: %w", name, ErrNotFound)
	}
	return id, err
}

func decodeGroup(b []byte, rev int64) (*api.Group, error) {
	var g api.Group
	if err := json.Unmarshal(b, &g); err != nil {
		return nil, fmt.Errorf("store: corrupt group record: %w", err)
	}
	g.Revision = rev
	return &g, nil
}

// ListGroups returns every group, optionally only one account's, and the
// store revision the list was read at.
func (s *Store) ListGroups(ctx context.Context) ([]*api.Group, int64, error) {
	resp, err := s.cli.Get(ctx, s.Key("groups")+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("store: list groups: %w", err)
	}
	out := make([]*api.Group, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		g, err := decodeGroup(kv.Value, kv.ModRevision)
		if err != nil {
			continue
		}
		out = append(out, g)
	}
	return out, resp.Header.Revision, nil
}

// UpdateGroup applies fn to the current record and writes it back if no one
// else wrote in between, retrying on conflict. fn may return ErrNoChange to
// skip the write.
//
// Guards are extra conditions for the write (such as "this replica still
// leads"); when one fails, UpdateGroup returns ErrGuard.
func (s *Store) UpdateGroup(ctx context.Context, id string, fn func(g *api.Group) error, guards ...clientv3.Cmp) (*api.Group, error) {
	for attempt := 0; ; attempt++ {
		g, err := s.GetGroup(ctx, id)
		if err != nil {
			return nil, err
		}
		rev := g.Revision
		if err := fn(g); err != nil {
			if errors.Is(err, ErrNoChange) {
				return g, nil
			}
			return nil, err
		}
		g.UpdatedAt = time.Now().UTC()
		g.Revision = 0
		b, err := json.Marshal(g)
		if err != nil {
			return nil, err
		}
		cmps := append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.groupKey(id)), "=", rev)}, guards...)
		resp, err := s.cli.Txn(ctx).If(cmps...).
			Then(clientv3.OpPut(s.groupKey(id), string(b))).
			Else(clientv3.OpGet(s.groupKey(id), clientv3.WithKeysOnly())).Commit()
		if err != nil {
			return nil, fmt.Errorf("store: update group: %w", err)
		}
		if resp.Succeeded {
			g.Revision = resp.Header.Revision
			return g, nil
		}
		if len(guards) > 0 {
			kvs := resp.Responses[0].GetResponseRange().Kvs
			if len(kvs) == 1 && kvs[0].ModRevision == rev {
				return nil, ErrGuard
			}
		}
		if attempt > 50 {
			return nil, fmt.Errorf("store: update group %s: too much contention: %w", id, ErrConflict)
		}
	}
}

// ErrGuard says a guard of a conditional write failed.
var ErrGuard = errors.New("store: write guard failed")

// ErrNoChange tells UpdateGroup that fn decided not to write.
var ErrNoChange = errors.New("no change")

// DeleteGroup removes a group with its name, token and events, and
// releases its charge to its account's usage (usage.go), provided the
// record is still at g.Revision (when set); otherwise ErrConflict.
func (s *Store) DeleteGroup(ctx context.Context, g *api.Group) error {
	// Delete only the record the caller read: if it changed meanwhile (the
	// scheduler placed the group, say), the caller must look again.
	inner := s.groupDeleteOp(g)
	for attempt := 0; attempt < 100; attempt++ {
		rcmps, rops, err := s.releaseOps(ctx, g)
		if err != nil {
			return err
		}
		var guard []clientv3.Cmp
		if g.Revision > 0 {
			guard = append(guard, clientv3.Compare(clientv3.ModRevision(s.groupKey(g.ID)), "=", g.Revision))
		}
		resp, err := s.cli.Txn(ctx).If(append(guard, rcmps...)...).Then(append([]clientv3.Op{inner}, rops...)...).
			Else(clientv3.OpGet(s.groupKey(g.ID), clientv3.WithKeysOnly())).Commit()
		if err != nil {
			return fmt.Errorf("store: delete group: %w", err)
		}
		if resp.Succeeded {
			return nil
		}
		// The record moved, or the charge or the counters did (a racing
		// create, delete or update of the same account): look again.
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if g.Revision > 0 && (len(kvs) == 0 || kvs[0].ModRevision != g.Revision) {
			return fmt.Errorf("group %s changed while being deleted: %w", g.ID, ErrConflict)
		}
		if g.Revision == 0 && len(kvs) == 0 {
			return nil // already gone
		}
	}
	return fmt.Errorf("store: delete group %s: too much contention on the account's usage: %w", g.ID, ErrConflict)
}

// groupDeleteOp removes a group's record, events and token, and its name
// if the name still points at it.
func (s *Store) groupDeleteOp(g *api.Group) clientv3.Op {
	ops := []clientv3.Op{
		clientv3.OpDelete(s.groupKey(g.ID)),
		clientv3.OpDelete(s.Key("events", g.ID)+"/", clientv3.WithPrefix()),
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.Value(s.nameKey(g.AccountID, g.Name)), "=", g.ID)}
	nameOps := []clientv3.Op{clientv3.OpDelete(s.nameKey(g.AccountID, g.Name))}
	if g.ClientToken != "" {
		ops = append(ops, clientv3.OpDelete(s.tokenKey(g.AccountID, g.ClientToken)))
	}
	return clientv3.OpTxn(cmps, append(ops, nameOps...), ops)
}

// WatchGroups streams changes to groups after revision rev (0: from now).
// The channel closes when ctx ends or the watch fails; callers re-list.
func (s *Store) WatchGroups(ctx context.Context, rev int64) <-chan GroupChange {
	out := make(chan GroupChange, 256)
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev+1))
	}
	wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), s.Key("groups")+"/", opts...)
	go func() {
		defer close(out)
		for resp := range wch {
			if resp.Err() != nil {
				return
			}
			for _, ev := range resp.Events {
				var ch GroupChange
				switch {
				case ev.Type == clientv3.EventTypeDelete:
					ch.Type = "DELETED"
					if ev.PrevKv != nil {
						ch.Group, _ = decodeGroup(ev.PrevKv.Value, ev.Kv.ModRevision)
					}
					if ch.Group == nil {
						ch.Group = &api.Group{ID: path.Base(string(ev.Kv.Key))}
					}
				case ev.IsCreate():
					ch.Type = "ADDED"
					ch.Group, _ = decodeGroup(ev.Kv.Value, ev.Kv.ModRevision)
				default:
					ch.Type = "MODIFIED"
					ch.Group, _ = decodeGroup(ev.Kv.Value, ev.Kv.ModRevision)
				}
				if ch.Group == nil {
					continue
				}
				ch.Group.Revision = ev.Kv.ModRevision
				select {
				case out <- ch:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// GroupChange is one watch event.
type GroupChange struct {
	Type  string
	Group *api.Group
}
