package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/skiffhq/skiff/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Tenancy records, beside the accounts and keys of records.go:
//
//	quotas/<account>                       api.Quota JSON
//	counters/<account>                     Usage JSON (what the account holds; usage.go)
//	charges/<account>/<group>              UsageEntry JSON (one group's share; usage.go)
//	ledger/<account>/<group>/<start-ns>    LedgerEntry JSON (closed billing intervals)
//	exectokens/<token>                     ExecToken JSON (leased, short-lived)

// ListAccounts returns every account, by id.
func (s *Store) ListAccounts(ctx context.Context) ([]*Account, error) {
	resp, err := s.cli.Get(ctx, s.Key("accounts")+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("store: list accounts: %w", err)
	}
	out := make([]*Account, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var a Account
		if json.Unmarshal(kv.Value, &a) == nil {
			out = append(out, &a)
		}
	}
	return out, nil
}

// ListAccessKeys returns an account's keys, oldest first.
func (s *Store) ListAccessKeys(ctx context.Context, accountID string) ([]*AccessKey, error) {
	resp, err := s.cli.Get(ctx, s.Key("keys")+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("store: list keys: %w", err)
	}
	var out []*AccessKey
	for _, kv := range resp.Kvs {
		var k AccessKey
		if json.Unmarshal(kv.Value, &k) == nil && k.AccountID == accountID {
			out = append(out, &k)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// CreateAccessKey adds a key to an existing account.
func (s *Store) CreateAccessKey(ctx context.Context, k *AccessKey) error {
	b, _ := json.Marshal(k)
	resp, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(s.Key("accounts", k.AccountID)), ">", 0),
		clientv3.Compare(clientv3.CreateRevision(s.Key("keys", k.ID)), "=", 0),
	).Then(clientv3.OpPut(s.Key("keys", k.ID), string(b))).Commit()
	if err != nil {
		return fmt.Errorf("store: create key: %w", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("account %q: %w", k.AccountID, ErrNotFound)
	}
	return nil
}

// UpdateAccessKey is a compare-and-swap update of a key.
func (s *Store) UpdateAccessKey(ctx context.Context, id string, fn func(k *AccessKey) error) (*AccessKey, error) {
	key := s.Key("keys", id)
	for attempt := 0; attempt < 50; attempt++ {
		var k AccessKey
		rev, err := s.getJSON(ctx, key, &k)
		if err != nil {
			return nil, fmt.Errorf("access key %q: %w", id, err)
		}
		if err := fn(&k); err != nil {
			return nil, err
		}
		b, _ := json.Marshal(&k)
		resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, string(b))).Commit()
		if err != nil {
			return nil, fmt.Errorf("store: update key: %w", err)
		}
		if resp.Succeeded {
			return &k, nil
		}
	}
	return nil, fmt.Errorf("store: update key %s: %w", id, ErrConflict)
}

// RotateAccessKey disables old and adds next, in one transaction.
func (s *Store) RotateAccessKey(ctx context.Context, oldID string, next *AccessKey) error {
	oldKey := s.Key("keys", oldID)
	for attempt := 0; attempt < 50; attempt++ {
		var old AccessKey
		rev, err := s.getJSON(ctx, oldKey, &old)
		if err != nil {
			return fmt.Errorf("access key %q: %w", oldID, err)
		}
		if old.AccountID != next.AccountID {
			return fmt.Errorf("access key %q: %w", oldID, ErrNotFound)
		}
		old.Disabled = true
		ob, _ := json.Marshal(&old)
		nb, _ := json.Marshal(next)
		resp, err := s.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(oldKey), "=", rev),
			clientv3.Compare(clientv3.CreateRevision(s.Key("keys", next.ID)), "=", 0),
		).Then(clientv3.OpPut(oldKey, string(ob)), clientv3.OpPut(s.Key("keys", next.ID), string(nb))).Commit()
		if err != nil {
			return fmt.Errorf("store: rotate key: %w", err)
		}
		if resp.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("store: rotate key %s: %w", oldID, ErrConflict)
}

// GetQuota reads an account's quota (zero: unlimited).
func (s *Store) GetQuota(ctx context.Context, accountID string) (api.Quota, error) {
	var q api.Quota
	_, err := s.getJSON(ctx, s.Key("quotas", accountID), &q)
	if errors.Is(err, ErrNotFound) {
		return api.Quota{}, nil
	}
	return q, err
}

// PutQuota sets an account's quota. It does not evict anything: an
// account over a lowered quota just cannot create more.
func (s *Store) PutQuota(ctx context.Context, accountID string, q api.Quota) error {
	b, _ := json.Marshal(q)
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(s.Key("accounts", accountID)), ">", 0)).
		Then(clientv3.OpPut(s.Key("quotas", accountID), string(b))).Commit()
	if err != nil {
		return fmt.Errorf("store: put quota: %w", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("account %q: %w", accountID, ErrNotFound)
	}
	return nil
}

// LedgerEntry is a closed billing interval of one group.
type LedgerEntry struct {
	AccountID string    `json:"accountId"`
	GroupID   string    `json:"groupId"`
	GroupName string    `json:"groupName"`
	MilliCPU  int64     `json:"milliCpu"`
	Memory    int64     `json:"memory"`
	Spot      bool      `json:"spot,omitempty"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
}

func (s *Store) ledgerKey(e *LedgerEntry) string {
	return s.Key("ledger", e.AccountID, e.GroupID, fmt.Sprintf("%020d", e.Start.UnixNano()))
}

// CloseInterval records a closed interval unless one with the same group
// and start is already recorded; it reports whether this call wrote it.
// Closing twice (two replicas, a retry after a crash) never counts twice.
func (s *Store) CloseInterval(ctx context.Context, e *LedgerEntry) (bool, error) {
	b, _ := json.Marshal(e)
	k := s.ledgerKey(e)
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(b))).Commit()
	if err != nil {
		return false, fmt.Errorf("store: close interval: %w", err)
	}
	return resp.Succeeded, nil
}

// IntervalClosed reports whether a group's interval starting at start is
// in the ledger.
func (s *Store) IntervalClosed(ctx context.Context, accountID, groupID string, start time.Time) (bool, error) {
	k := s.ledgerKey(&LedgerEntry{AccountID: accountID, GroupID: groupID, Start: start})
	resp, err := s.cli.Get(ctx, k, clientv3.WithKeysOnly())
	if err != nil {
		return false, err
	}
	return len(resp.Kvs) > 0, nil
}

// ListLedger returns the closed intervals of one account ("" for all).
func (s *Store) ListLedger(ctx context.Context, accountID string) ([]*LedgerEntry, error) {
	prefix := s.Key("ledger") + "/"
	if accountID != "" {
		prefix = s.Key("ledger", accountID) + "/"
	}
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("store: list ledger: %w", err)
	}
	out := make([]*LedgerEntry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var e LedgerEntry
		if json.Unmarshal(kv.Value, &e) == nil {
			out = append(out, &e)
		}
	}
	return out, nil
}

// ExecToken authorizes one WebSocket exec handed out by the ECI front.
type ExecToken struct {
	AccountID string   `json:"accountId"`
	GroupID   string   `json:"groupId"`
	Container string   `json:"container,omitempty"`
	Command   []string `json:"command"`
	TTY       bool     `json:"tty,omitempty"`
	Stdin     bool     `json:"stdin,omitempty"`
}

// PutExecToken stores a token that expires after ttl.
func (s *Store) PutExecToken(ctx context.Context, token string, t *ExecToken, ttl time.Duration) error {
	lease, err := s.cli.Grant(ctx, int64(max(ttl/time.Second, 1)))
	if err != nil {
		return fmt.Errorf("store: exec token lease: %w", err)
	}
	b, _ := json.Marshal(t)
	if _, err := s.cli.Put(ctx, s.Key("exectokens", token), string(b), clientv3.WithLease(lease.ID)); err != nil {
		return fmt.Errorf("store: put exec token: %w", err)
	}
	return nil
}

// TakeExecToken reads and deletes a token: each is good for one use.
func (s *Store) TakeExecToken(ctx context.Context, token string) (*ExecToken, error) {
	k := s.Key("exectokens", token)
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(k), clientv3.OpDelete(k)).Commit()
	if err != nil {
		return nil, fmt.Errorf("store: take exec token: %w", err)
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, ErrNotFound
	}
	var t ExecToken
	if err := json.Unmarshal(kvs[0].Value, &t); err != nil {
		return nil, err
	}
	return &t, nil
}
