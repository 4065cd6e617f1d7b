package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/skiffhq/skiff/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Warm pools and the create history behind their forecast:
//
//	pool/status/<host>                  api.HostPool, as the agent last reported it
//	pool/targets/<host>                 api.PoolTargets, set by the leader's planner
//	history/<account>/<class>/<image#>  HistorySeries: creates per time bucket

// PutPoolStatus records a host's reported warm pool.
func (s *Store) PutPoolStatus(ctx context.Context, hostID string, p *api.HostPool) error {
	return s.putJSON(ctx, s.Key("pool", "status", hostID), p)
}

// ListPoolStatus returns every host's reported pool.
func (s *Store) ListPoolStatus(ctx context.Context) (map[string]*api.HostPool, error) {
	out := map[string]*api.HostPool{}
	prefix := s.Key("pool", "status") + "/"
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("store: list pool status: %w", err)
	}
	for _, kv := range resp.Kvs {
		var p api.HostPool
		if json.Unmarshal(kv.Value, &p) == nil {
			out[string(kv.Key[len(prefix):])] = &p
		}
	}
	return out, nil
}

// PutPoolTargets sets a host's pool targets, under guards (the planner's
// leadership); a failed guard is ErrGuard.
func (s *Store) PutPoolTargets(ctx context.Context, hostID string, t api.PoolTargets, guards ...clientv3.Cmp) error {
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	resp, err := s.cli.Txn(ctx).If(guards...).Then(clientv3.OpPut(s.Key("pool", "targets", hostID), string(b))).Commit()
	if err != nil {
		return fmt.Errorf("store: put pool targets: %w", err)
	}
	if !resp.Succeeded {
		return ErrGuard
	}
	return nil
}

// GetPoolTargets reads a host's pool targets (none set: empty, no error).
func (s *Store) GetPoolTargets(ctx context.Context, hostID string) (api.PoolTargets, error) {
	t := api.PoolTargets{}
	_, err := s.getJSON(ctx, s.Key("pool", "targets", hostID), &t)
	if errors.Is(err, ErrNotFound) {
		return api.PoolTargets{}, nil
	}
	return t, err
}

// ListPoolTargets returns every host's pool targets.
func (s *Store) ListPoolTargets(ctx context.Context) (map[string]api.PoolTargets, error) {
	out := map[string]api.PoolTargets{}
	prefix := s.Key("pool", "targets") + "/"
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("store: list pool targets: %w", err)
	}
	for _, kv := range resp.Kvs {
		var t api.PoolTargets
		if json.Unmarshal(kv.Value, &t) == nil {
			out[string(kv.Key[len(prefix):])] = t
		}
	}
	return out, nil
}

// HistorySeries is the create history of one account × image × shape
// class: Counts[i] creates in bucket First+i (a bucket is Width long and
// bucket b starts at Unix time b×Width). It holds at most the number of
// buckets AddHistory was given; older ones are dropped as new ones come.
type HistorySeries struct {
	Account string `json:"account"`
	Image   string `json:"image"`
	Class   string `json:"class"`
	// WidthMs is the bucket width; a series recorded with another width
	// is started afresh.
	WidthMs int64   `json:"widthMs"`
	First   int64   `json:"first"`
	Counts  []int64 `json:"counts"`
	// Key and Revision locate the record (not stored).
	Key      string `json:"-"`
	Revision int64  `json:"-"`
}

// Last is the bucket of the newest count.
func (h *HistorySeries) Last() int64 { return h.First + int64(len(h.Counts)) - 1 }

// HistoryIncrement adds Count creates to a series' bucket.
type HistoryIncrement struct {
	Account, Image, Class string
	Bucket                int64
	Count                 int64
}

func (s *Store) historyKey(account, class, image string) string {
	sum := sha256.Sum256([]byte(image))
	return s.Key("history", account, class, hex.EncodeToString(sum[:8]))
}

// AddHistory adds increments to their series, each series keeping at
// most maxBuckets buckets. Concurrent writers (every replica records the
// creates it served) merge through compare-and-swap.
func (s *Store) AddHistory(ctx context.Context, width time.Duration, maxBuckets int, incs []HistoryIncrement) error {
	if maxBuckets < 1 {
		maxBuckets = 1
	}
	bySeries := map[string][]HistoryIncrement{}
	for _, in := range incs {
		k := s.historyKey(in.Account, in.Class, in.Image)
		bySeries[k] = append(bySeries[k], in)
	}
	var firstErr error
	for key, ins := range bySeries {
		if err := s.addSeries(ctx, key, width, maxBuckets, ins); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

func (s *Store) addSeries(ctx context.Context, key string, width time.Duration, maxBuckets int, ins []HistoryIncrement) error {
	for attempt := 0; attempt < 20; attempt++ {
		var h HistorySeries
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("store: history: %w", err)
		}
		var rev int64
		if len(resp.Kvs) == 1 {
			rev = resp.Kvs[0].ModRevision
			if json.Unmarshal(resp.Kvs[0].Value, &h) != nil || h.WidthMs != width.Milliseconds() {
				h = HistorySeries{}
			}
		}
		h.Account, h.Image, h.Class, h.WidthMs = ins[0].Account, ins[0].Image, ins[0].Class, width.Milliseconds()
		for _, in := range ins {
			addBucket(&h, in.Bucket, in.Count, maxBuckets)
		}
		b, _ := json.Marshal(&h)
		cmp := clientv3.Compare(clientv3.ModRevision(key), "=", rev)
		tr, err := s.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(b))).Commit()
		if err != nil {
			return fmt.Errorf("store: history: %w", err)
		}
		if tr.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("store: history %s: too much contention: %w", key, ErrConflict)
}

// addBucket adds n to bucket b of h, growing the series forward and
// dropping its oldest buckets past maxBuckets. A bucket older than the
// series keeps is ignored.
func addBucket(h *HistorySeries, b, n int64, maxBuckets int) {
	if len(h.Counts) == 0 {
		h.First, h.Counts = b, []int64{0}
	}
	if b < h.First {
		if h.Last()-b >= int64(maxBuckets) {
			return // older than what is kept
		}
		pad := make([]int64, h.First-b)
		h.Counts = append(pad, h.Counts...)
		h.First = b
	}
	for h.Last() < b {
		if gap := b - h.Last(); gap > int64(maxBuckets) { // a long silence: start over
			h.First, h.Counts = b, []int64{0}
			break
		}
		h.Counts = append(h.Counts, 0)
	}
	h.Counts[b-h.First] += n
	if over := len(h.Counts) - maxBuckets; over > 0 {
		h.Counts = append([]int64(nil), h.Counts[over:]...)
		h.First += int64(over)
	}
}

// ListHistory returns every series.
func (s *Store) ListHistory(ctx context.Context) ([]*HistorySeries, error) {
	resp, err := s.cli.Get(ctx, s.Key("history")+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("store: list history: %w", err)
	}
	out := make([]*HistorySeries, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var h HistorySeries
		if json.Unmarshal(kv.Value, &h) != nil {
			continue
		}
		h.Key, h.Revision = string(kv.Key), kv.ModRevision
		out = append(out, &h)
	}
	return out, nil
}

// DeleteHistory removes a series if it is still at the revision read
// (an expired series that just got a create stays).
func (s *Store) DeleteHistory(ctx context.Context, h *HistorySeries) error {
	_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(h.Key), "=", h.Revision)).
		Then(clientv3.OpDelete(h.Key)).Commit()
	return err
}

// PutPoolImages sets the images a host should hold ahead of demand (the
// rootfs of its predicted groups), under guards like PutPoolTargets.
func (s *Store) PutPoolImages(ctx context.Context, hostID string, images []string, guards ...clientv3.Cmp) error {
	b, err := json.Marshal(images)
	if err != nil {
		return err
	}
	resp, err := s.cli.Txn(ctx).If(guards...).Then(clientv3.OpPut(s.Key("pool", "images", hostID), string(b))).Commit()
	if err != nil {
		return fmt.Errorf("store: put pool images: %w", err)
	}
	if !resp.Succeeded {
		return ErrGuard
	}
	return nil
}

// ListPoolImages returns every host's predicted images.
func (s *Store) ListPoolImages(ctx context.Context) (map[string][]string, error) {
	out := map[string][]string{}
	prefix := s.Key("pool", "images") + "/"
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("store: list pool images: %w", err)
	}
	for _, kv := range resp.Kvs {
		var imgs []string
		if json.Unmarshal(kv.Value, &imgs) == nil {
			out[string(kv.Key[len(prefix):])] = imgs
		}
	}
	return out, nil
}

// GetPoolImages reads a host's predicted images (none: nil, no error).
func (s *Store) GetPoolImages(ctx context.Context, hostID string) ([]string, error) {
	var imgs []string
	_, err := s.getJSON(ctx, s.Key("pool", "images", hostID), &imgs)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return imgs, err
}
