package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/skiffhq/skiff/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// batchChunk bounds the groups of one transaction: each costs three
// operations (record, name, charge) and etcd refuses more than 128 by
// default.
const batchChunk = 32

// CreateGroupsCharged is CreateGroupCharged for many groups of one account
// at once: per chunk of groups, one read of the account's counters and one
// transaction that writes the groups, their names, their charges and the
// new counters — one disk sync for the chunk instead of one per group, and
// a cost that does not grow with what the account already holds. admit is
// asked about each group in order, against the usage with the groups
// before it already charged. errs[i] is group i's own failure (over quota, name
// taken), out[i] its stored record. Groups with client tokens go through
// CreateGroupCharged, one by one, to keep its token semantics.
func (s *Store) CreateGroupsCharged(ctx context.Context, gs []*api.Group, es []UsageEntry, admit func(u Usage, e UsageEntry) error) (out []*api.Group, errs []error) {
	out = make([]*api.Group, len(gs))
	errs = make([]error, len(gs))
	var plain []int
	for i, g := range gs {
		if g.ClientToken != "" || g.AccountID != gs[0].AccountID {
			out[i], errs[i] = s.CreateGroupCharged(ctx, g, es[i], admit)
			continue
		}
		plain = append(plain, i)
	}
	for len(plain) > 0 {
		n := min(len(plain), batchChunk)
		if err := s.createChunk(ctx, gs, es, plain[:n], admit, out, errs); err != nil {
			for _, i := range plain[:n] {
				if out[i] == nil && errs[i] == nil {
					errs[i] = err
				}
			}
		}
		plain = plain[n:]
	}
	return out, errs
}

func (s *Store) createChunk(ctx context.Context, gs []*api.Group, es []UsageEntry, idx []int, admit func(u Usage, e UsageEntry) error, out []*api.Group, errs []error) error {
	acct := gs[idx[0]].AccountID
	ukey := s.countersKey(acct)
	bodies := make(map[int][]byte, len(idx))
	names := map[string]bool{}
	var todo []int
	for _, i := range idx {
		g := gs[i]
		if names[g.Name] {
			errs[i] = fmt.Errorf("a group named %q already exists: %w", g.Name, ErrConflict)
			continue
		}
		names[g.Name] = true
		b, err := json.Marshal(g)
		if err != nil {
			errs[i] = err
			continue
		}
		bodies[i] = b
		todo = append(todo, i)
	}
	for attempt := 0; attempt < 100 && len(todo) > 0; attempt++ {
		u, rev, err := s.getCounters(ctx, acct)
		if err != nil {
			return err
		}
		var in []int
		for _, i := range todo {
			if err := admit(u, es[i]); err != nil {
				errs[i] = err
				continue
			}
			u = u.Add(es[i], 1)
			in = append(in, i)
		}
		if len(in) == 0 {
			return nil
		}
		ub, _ := json.Marshal(u)
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(ukey), "=", rev)}
		ops := []clientv3.Op{clientv3.OpPut(ukey, string(ub))}
		var nameGets []clientv3.Op
		for _, i := range in {
			g := gs[i]
			cmps = append(cmps,
				clientv3.Compare(clientv3.CreateRevision(s.groupKey(g.ID)), "=", 0),
				clientv3.Compare(clientv3.CreateRevision(s.nameKey(acct, g.Name)), "=", 0))
			eb, _ := json.Marshal(es[i])
			ops = append(ops, clientv3.OpPut(s.groupKey(g.ID), string(bodies[i])), clientv3.OpPut(s.nameKey(acct, g.Name), g.ID),
				clientv3.OpPut(s.chargeKey(acct, g.ID), string(eb)))
			nameGets = append(nameGets, clientv3.OpGet(s.nameKey(acct, g.Name), clientv3.WithKeysOnly()))
		}
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).
			Else(append([]clientv3.Op{clientv3.OpGet(ukey, clientv3.WithKeysOnly())}, nameGets...)...).Commit()
		if err != nil {
			return fmt.Errorf("store: create groups: %w", err)
		}
		if resp.Succeeded {
			for _, i := range in {
				g := *gs[i]
				g.Revision = resp.Header.Revision
				out[i] = &g
			}
			return nil
		}
		// Names taken fail alone; moved counters are read again.
		todo = todo[:0]
		for k, i := range in {
			if len(resp.Responses[k+1].GetResponseRange().Kvs) > 0 {
				errs[i] = fmt.Errorf("a group named %q already exists: %w", gs[i].Name, ErrConflict)
				continue
			}
			todo = append(todo, i)
		}
	}
	if len(todo) > 0 {
		return fmt.Errorf("store: create groups: too much contention on the account's usage: %w", ErrConflict)
	}
	return nil
}
