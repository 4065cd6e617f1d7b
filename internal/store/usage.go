package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/skiffhq/skiff/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// What an account holds, for its quota, is kept as
//
//	counters/<account>           Usage JSON: the sums, a few bytes
//	charges/<account>/<group>    UsageEntry JSON: one group's share
//
// A group's charge is written in the transaction that creates the group
// and removed, with the counters decremented, in the one that deletes it;
// a spec update moves both in the transaction that writes the new spec.
// So the counters always equal the sum of the charges of the groups that
// exist, and a create costs the same whether the account holds ten groups
// or ten thousand. Concurrent writers of one account serialize on the
// counters' revision (compare-and-swap), which is what makes quota
// admission exact under a race.
//
// Older stores kept one usage/<account> record with every group's entry;
// it is converted on first use (migrateUsage).

// Usage is what an account holds.
type Usage struct {
	MilliCPU int64 `json:"milliCpu"`
	Memory   int64 `json:"memory"`
	Groups   int   `json:"groups"`
}

// Add returns u with e charged (n = 1) or released (n = -1).
func (u Usage) Add(e UsageEntry, n int) Usage {
	return Usage{MilliCPU: u.MilliCPU + int64(n)*e.MilliCPU, Memory: u.Memory + int64(n)*e.Memory, Groups: u.Groups + n}
}

// UsageEntry is one group's share of an account's usage.
type UsageEntry struct {
	MilliCPU int64 `json:"milliCpu"`
	Memory   int64 `json:"memory"`
}

func (s *Store) countersKey(acct string) string { return s.Key("counters", acct) }
func (s *Store) chargeKey(acct, group string) string {
	return s.Key("charges", acct, group)
}

// getCounters reads an account's counters and their revision (0: none yet).
func (s *Store) getCounters(ctx context.Context, acct string) (Usage, int64, error) {
	for attempt := 0; attempt < 10; attempt++ {
		var u Usage
		rev, err := s.getJSON(ctx, s.countersKey(acct), &u)
		if err == nil {
			return u, rev, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return Usage{}, 0, err
		}
		migrated, err := s.migrateUsage(ctx, acct)
		if err != nil {
			return Usage{}, 0, err
		}
		if !migrated {
			return Usage{}, 0, nil
		}
	}
	return Usage{}, 0, fmt.Errorf("store: usage of %s: %w", acct, ErrConflict)
}

// GetUsage reads what an account holds.
func (s *Store) GetUsage(ctx context.Context, acct string) (Usage, error) {
	u, _, err := s.getCounters(ctx, acct)
	return u, err
}

// GetCharge reads one group's charge (ErrNotFound: it has none).
func (s *Store) GetCharge(ctx context.Context, acct, group string) (UsageEntry, error) {
	var e UsageEntry
	_, err := s.getJSON(ctx, s.chargeKey(acct, group), &e)
	return e, err
}

// legacyUsage is the record older stores kept per account.
type legacyUsage struct {
	Groups map[string]UsageEntry `json:"groups"`
}

// migrateUsage converts an account's legacy usage record, if it has one,
// into charges and counters, and reports whether it found one. Every
// writer of usage reads the counters first and so migrates first; the
// conversion is idempotent and its last step is one compare-and-swap.
func (s *Store) migrateUsage(ctx context.Context, acct string) (bool, error) {
	old := s.Key("usage", acct)
	var lu legacyUsage
	rev, err := s.getJSON(ctx, old, &lu)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var u Usage
	var puts []clientv3.Op
	for id, e := range lu.Groups {
		resp, err := s.cli.Get(ctx, s.groupKey(id), clientv3.WithKeysOnly())
		if err != nil {
			return false, err
		}
		if len(resp.Kvs) == 0 {
			continue // deleted: legacy entries were pruned lazily
		}
		u = u.Add(e, 1)
		b, _ := json.Marshal(e)
		puts = append(puts, clientv3.OpPut(s.chargeKey(acct, id), string(b)))
	}
	for len(puts) > 0 { // charges first, in bounded transactions
		n := min(len(puts), 100)
		if _, err := s.cli.Txn(ctx).Then(puts[:n]...).Commit(); err != nil {
			return false, fmt.Errorf("store: migrate usage: %w", err)
		}
		puts = puts[n:]
	}
	ub, _ := json.Marshal(u)
	_, err = s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(old), "=", rev),
		clientv3.Compare(clientv3.CreateRevision(s.countersKey(acct)), "=", 0),
	).Then(clientv3.OpPut(s.countersKey(acct), string(ub)), clientv3.OpDelete(old)).Commit()
	if err != nil {
		return false, fmt.Errorf("store: migrate usage: %w", err)
	}
	return true, nil // done by us or by a racing writer: read again
}

// CreateGroupCharged is CreateGroup that also charges the group to its
// account, atomically: admit is called with what the account holds and
// returns an error to refuse (over quota). A used client token returns the
// earlier group and ErrTokenUsed without charging anything.
func (s *Store) CreateGroupCharged(ctx context.Context, g *api.Group, e UsageEntry, admit func(u Usage, e UsageEntry) error) (*api.Group, error) {
	b, err := json.Marshal(g)
	if err != nil {
		return nil, err
	}
	eb, _ := json.Marshal(e)
	ckey := s.countersKey(g.AccountID)
	for attempt := 0; attempt < 100; attempt++ {
		if g.ClientToken != "" {
			if id, err := s.getString(ctx, s.tokenKey(g.AccountID, g.ClientToken)); err == nil {
				if existing, err := s.GetGroup(ctx, id); err == nil {
					return existing, fmt.Errorf("client token %q already used: %w", g.ClientToken, ErrTokenUsed)
				}
			}
		}
		u, rev, err := s.getCounters(ctx, g.AccountID)
		if err != nil {
			return nil, err
		}
		if err := admit(u, e); err != nil {
			return nil, err
		}
		ub, _ := json.Marshal(u.Add(e, 1))
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(ckey), "=", rev),
			clientv3.Compare(clientv3.CreateRevision(s.groupKey(g.ID)), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(s.nameKey(g.AccountID, g.Name)), "=", 0),
		}
		ops := []clientv3.Op{
			clientv3.OpPut(ckey, string(ub)),
			clientv3.OpPut(s.chargeKey(g.AccountID, g.ID), string(eb)),
			clientv3.OpPut(s.groupKey(g.ID), string(b)),
			clientv3.OpPut(s.nameKey(g.AccountID, g.Name), g.ID),
		}
		if g.ClientToken != "" {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.tokenKey(g.AccountID, g.ClientToken)), "=", 0))
			ops = append(ops, clientv3.OpPut(s.tokenKey(g.AccountID, g.ClientToken), g.ID))
		}
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).
			Else(clientv3.OpGet(ckey, clientv3.WithKeysOnly()), clientv3.OpGet(s.nameKey(g.AccountID, g.Name), clientv3.WithKeysOnly())).Commit()
		if err != nil {
			return nil, fmt.Errorf("store: create group: %w", err)
		}
		if resp.Succeeded {
			out := *g
			out.Revision = resp.Header.Revision
			return &out, nil
		}
		// Which condition failed? Moved counters mean a concurrent
		// create or delete: read them again. Otherwise the name or token.
		if countersMoved(resp, 0, rev) {
			continue
		}
		if len(resp.Responses[1].GetResponseRange().Kvs) > 0 {
			return nil, fmt.Errorf("a group named %q already exists: %w", g.Name, ErrConflict)
		}
		// The token was taken between our check and the write: loop to
		// return the group it names.
	}
	return nil, fmt.Errorf("store: create group: too much contention on the account's usage: %w", ErrConflict)
}

// countersMoved reads a failed transaction's keys-only get of the
// counters: did they change since revision rev?
func countersMoved(resp *clientv3.TxnResponse, i int, rev int64) bool {
	kvs := resp.Responses[i].GetResponseRange().Kvs
	return (len(kvs) == 0 && rev != 0) || (len(kvs) == 1 && kvs[0].ModRevision != rev)
}

// releaseOps returns the operations and conditions that release a group's
// charge in the transaction that deletes it, or none for a group that was
// never charged (created by a bare store, or before charges existed).
func (s *Store) releaseOps(ctx context.Context, g *api.Group) ([]clientv3.Cmp, []clientv3.Op, error) {
	ck, uk := s.chargeKey(g.AccountID, g.ID), s.countersKey(g.AccountID)
	// Both reads in one round trip: deletes are on the teardown path.
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(ck), clientv3.OpGet(uk)).Commit()
	if err != nil {
		return nil, nil, fmt.Errorf("store: read charge: %w", err)
	}
	charge, counters := resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs
	if len(charge) == 0 {
		return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(ck), "=", 0)}, nil, nil
	}
	var e UsageEntry
	if err := json.Unmarshal(charge[0].Value, &e); err != nil {
		return nil, nil, fmt.Errorf("store: corrupt charge %s: %w", ck, err)
	}
	var u Usage
	var urev int64
	if len(counters) == 1 {
		if err := json.Unmarshal(counters[0].Value, &u); err != nil {
			return nil, nil, fmt.Errorf("store: corrupt counters %s: %w", uk, err)
		}
		urev = counters[0].ModRevision
	} else if u, urev, err = s.getCounters(ctx, g.AccountID); err != nil { // none yet, or a legacy record to convert
		return nil, nil, err
	}
	ub, _ := json.Marshal(u.Add(e, -1))
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(ck), "=", charge[0].ModRevision),
		clientv3.Compare(clientv3.ModRevision(uk), "=", urev),
	}
	return cmps, []clientv3.Op{clientv3.OpDelete(ck), clientv3.OpPut(uk, string(ub))}, nil
}

// ChargeChange is what a spec update does to a group's charge.
type ChargeChange struct {
	// Entry is the group's charge from now on.
	Entry UsageEntry
	// Close, when set, is a billing interval the update ends; it is
	// written with the update unless that interval is already recorded.
	Close *LedgerEntry
}

// UpdateGroupCharged is UpdateGroup for a change that may move the
// group's charge: fn edits the record and returns the change (nil: the
// charge stays). admit sees what the account holds and the group's old
// and new charge, and refuses with an error. The record, the charge, the
// counters and a closed interval are one transaction, so a quota is never
// over-admitted and no billing second is lost or counted twice.
func (s *Store) UpdateGroupCharged(ctx context.Context, id string, fn func(g *api.Group) (*ChargeChange, error), admit func(u Usage, old, new UsageEntry) error) (*api.Group, error) {
	for attempt := 0; attempt < 100; attempt++ {
		g, err := s.GetGroup(ctx, id)
		if err != nil {
			return nil, err
		}
		rev := g.Revision
		ch, err := fn(g)
		if err != nil {
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
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.groupKey(id)), "=", rev)}
		ops := []clientv3.Op{clientv3.OpPut(s.groupKey(id), string(b))}
		if ch != nil {
			ck := s.chargeKey(g.AccountID, g.ID)
			var old UsageEntry
			crev, err := s.getJSON(ctx, ck, &old)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return nil, err
			}
			u, urev, err := s.getCounters(ctx, g.AccountID)
			if err != nil {
				return nil, err
			}
			next := u
			if crev != 0 {
				next = next.Add(old, -1)
			}
			next = next.Add(ch.Entry, 1)
			if err := admit(u, old, ch.Entry); err != nil {
				return nil, err
			}
			eb, _ := json.Marshal(ch.Entry)
			ub, _ := json.Marshal(next)
			cmps = append(cmps,
				clientv3.Compare(clientv3.ModRevision(ck), "=", crev),
				clientv3.Compare(clientv3.ModRevision(s.countersKey(g.AccountID)), "=", urev))
			ops = append(ops, clientv3.OpPut(ck, string(eb)), clientv3.OpPut(s.countersKey(g.AccountID), string(ub)))
			if ch.Close != nil {
				lk := s.ledgerKey(ch.Close)
				if resp, err := s.cli.Get(ctx, lk, clientv3.WithKeysOnly()); err != nil {
					return nil, err
				} else if len(resp.Kvs) == 0 {
					lb, _ := json.Marshal(ch.Close)
					cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(lk), "=", 0))
					ops = append(ops, clientv3.OpPut(lk, string(lb)))
				}
			}
		}
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("store: update group: %w", err)
		}
		if resp.Succeeded {
			g.Revision = resp.Header.Revision
			return g, nil
		}
	}
	return nil, fmt.Errorf("store: update group %s: too much contention: %w", id, ErrConflict)
}

// ListCharges returns an account's charges by group id (for checks).
func (s *Store) ListCharges(ctx context.Context, acct string) (map[string]UsageEntry, error) {
	prefix := s.Key("charges", acct) + "/"
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("store: list charges: %w", err)
	}
	out := make(map[string]UsageEntry, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var e UsageEntry
		if json.Unmarshal(kv.Value, &e) == nil {
			out[strings.TrimPrefix(string(kv.Key), prefix)] = e
		}
	}
	return out, nil
}
