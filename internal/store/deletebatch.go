package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/skiffhq/skiff/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// GetGroups reads several groups by id in one round trip per chunk; ids
// with no group are left out.
func (s *Store) GetGroups(ctx context.Context, ids []string) ([]*api.Group, error) {
	var out []*api.Group
	for len(ids) > 0 {
		n := min(len(ids), 100)
		ops := make([]clientv3.Op, n)
		for i, id := range ids[:n] {
			ops[i] = clientv3.OpGet(s.groupKey(id))
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("store: get groups: %w", err)
		}
		for _, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().Kvs {
				if g, err := decodeGroup(kv.Value, kv.ModRevision); err == nil {
					out = append(out, g)
				}
			}
		}
		ids = ids[n:]
	}
	return out, nil
}

// DeleteGroups is DeleteGroup for many groups (a host's teardown report):
// per chunk of one account's groups, one read of their charges and the
// account's counters and one transaction that deletes them all and
// releases the charges. errs[i] is ErrConflict when group i changed since
// it was read (the caller looks again), or the chunk's failure.
func (s *Store) DeleteGroups(ctx context.Context, gs []*api.Group) []error {
	errs := make([]error, len(gs))
	byAcct := map[string][]int{}
	for i, g := range gs {
		byAcct[g.AccountID] = append(byAcct[g.AccountID], i)
	}
	for _, idx := range byAcct {
		for len(idx) > 0 {
			n := min(len(idx), batchChunk)
			s.deleteChunk(ctx, gs, idx[:n], errs)
			idx = idx[n:]
		}
	}
	return errs
}

func (s *Store) deleteChunk(ctx context.Context, gs []*api.Group, idx []int, errs []error) {
	acct := gs[idx[0]].AccountID
	uk := s.countersKey(acct)
	todo := append([]int(nil), idx...)
	for attempt := 0; attempt < 50 && len(todo) > 0; attempt++ {
		reads := []clientv3.Op{clientv3.OpGet(uk)}
		for _, i := range todo {
			reads = append(reads, clientv3.OpGet(s.chargeKey(acct, gs[i].ID)))
		}
		rresp, err := s.cli.Txn(ctx).Then(reads...).Commit()
		if err != nil {
			setErrs(errs, todo, fmt.Errorf("store: delete groups: %w", err))
			return
		}
		var u Usage
		var urev int64
		if kvs := rresp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
			if err := json.Unmarshal(kvs[0].Value, &u); err != nil {
				setErrs(errs, todo, fmt.Errorf("store: corrupt counters %s: %w", uk, err))
				return
			}
			urev = kvs[0].ModRevision
		} else if u, urev, err = s.getCounters(ctx, acct); err != nil {
			setErrs(errs, todo, err)
			return
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(uk), "=", urev)}
		var ops []clientv3.Op
		released := false
		for k, i := range todo {
			g := gs[i]
			ck := s.chargeKey(acct, g.ID)
			kvs := rresp.Responses[k+1].GetResponseRange().Kvs
			var e UsageEntry
			if len(kvs) == 1 {
				if err := json.Unmarshal(kvs[0].Value, &e); err != nil {
					errs[i] = fmt.Errorf("store: corrupt charge %s: %w", ck, err)
					continue
				}
			}
			if g.Revision > 0 {
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.groupKey(g.ID)), "=", g.Revision))
			}
			ops = append(ops, s.groupDeleteOp(g))
			if len(kvs) == 0 {
				cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(ck), "=", 0))
				continue
			}
			u, released = u.Add(e, -1), true
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(ck), "=", kvs[0].ModRevision))
			ops = append(ops, clientv3.OpDelete(ck))
		}
		if released {
			ub, _ := json.Marshal(u)
			ops = append(ops, clientv3.OpPut(uk, string(ub)))
		}
		var checks []clientv3.Op
		for _, i := range todo {
			checks = append(checks, clientv3.OpGet(s.groupKey(gs[i].ID), clientv3.WithKeysOnly()))
		}
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Else(checks...).Commit()
		if err != nil {
			setErrs(errs, todo, fmt.Errorf("store: delete groups: %w", err))
			return
		}
		if resp.Succeeded {
			return
		}
		// Groups that moved fail alone; the rest try again (the counters
		// or a charge moved under a racing create, delete or update).
		var next []int
		for k, i := range todo {
			kvs := resp.Responses[k].GetResponseRange().Kvs
			g := gs[i]
			switch {
			case errs[i] != nil:
				// failed on its own above
			case g.Revision > 0 && (len(kvs) == 0 || kvs[0].ModRevision != g.Revision):
				errs[i] = fmt.Errorf("group %s changed while being deleted: %w", g.ID, ErrConflict)
			case g.Revision == 0 && len(kvs) == 0:
				// already gone
			default:
				next = append(next, i)
			}
		}
		todo = next
	}
	setErrs(errs, todo, fmt.Errorf("store: delete groups: too much contention on the account's usage: %w", ErrConflict))
}

func setErrs(errs []error, idx []int, err error) {
	for _, i := range idx {
		if errs[i] == nil {
			errs[i] = err
		}
	}
}
