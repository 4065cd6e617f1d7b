package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/skiffhq/skiff/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Image caches live under
//
//	imagecaches/<id>                   api.ImageCache JSON
//	imagecachenames/<account>/<name>   cache id (names are unique per account)

func (s *Store) imageCacheKey(id string) string { return s.Key("imagecaches", id) }
func (s *Store) imageCacheNameKey(acct, name string) string {
	return s.Key("imagecachenames", acct, name)
}

// CreateImageCache writes a new cache, reserving its name in its account.
func (s *Store) CreateImageCache(ctx context.Context, c *api.ImageCache) (*api.ImageCache, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	resp, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(s.imageCacheKey(c.ID)), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(s.imageCacheNameKey(c.AccountID, c.Name)), "=", 0),
	).Then(
		clientv3.OpPut(s.imageCacheKey(c.ID), string(b)),
		clientv3.OpPut(s.imageCacheNameKey(c.AccountID, c.Name), c.ID),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("store: create image cache: %w", err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("an image cache named %q already exists: %w", c.Name, ErrConflict)
	}
	out := *c
	out.Revision = resp.Header.Revision
	return &out, nil
}

// GetImageCache reads one cache by id.
func (s *Store) GetImageCache(ctx context.Context, id string) (*api.ImageCache, error) {
	var c api.ImageCache
	rev, err := s.getJSON(ctx, s.imageCacheKey(id), &c)
	if err != nil {
		return nil, fmt.Errorf("image cache %q: %w", id, err)
	}
	c.Revision = rev
	return &c, nil
}

// ImageCacheIDByName resolves a cache name within an account.
func (s *Store) ImageCacheIDByName(ctx context.Context, acct, name string) (string, error) {
	id, err := s.getString(ctx, s.imageCacheNameKey(acct, name))
	if errors.Is(err, ErrNotFound) {
		return "", fmt.Errorf("image cache %q: %w", name, ErrNotFound)
	}
	return id, err
}

// ListImageCaches returns every cache of every account.
func (s *Store) ListImageCaches(ctx context.Context) ([]*api.ImageCache, error) {
	resp, err := s.cli.Get(ctx, s.Key("imagecaches")+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("store: list image caches: %w", err)
	}
	out := make([]*api.ImageCache, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var c api.ImageCache
		if json.Unmarshal(kv.Value, &c) == nil {
			c.Revision = kv.ModRevision
			out = append(out, &c)
		}
	}
	return out, nil
}

// UpdateImageCache applies fn to the current record and writes it back
// unless someone wrote in between (then it retries). fn may return
// ErrNoChange to skip the write.
func (s *Store) UpdateImageCache(ctx context.Context, id string, fn func(c *api.ImageCache) error) (*api.ImageCache, error) {
	for attempt := 0; attempt < 50; attempt++ {
		c, err := s.GetImageCache(ctx, id)
		if err != nil {
			return nil, err
		}
		rev := c.Revision
		if err := fn(c); err != nil {
			if errors.Is(err, ErrNoChange) {
				return c, nil
			}
			return nil, err
		}
		c.Revision = 0
		c.UpdatedAt = time.Now().UTC()
		b, err := json.Marshal(c)
		if err != nil {
			return nil, err
		}
		resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(s.imageCacheKey(id)), "=", rev)).
			Then(clientv3.OpPut(s.imageCacheKey(id), string(b))).Commit()
		if err != nil {
			return nil, fmt.Errorf("store: update image cache: %w", err)
		}
		if resp.Succeeded {
			c.Revision = resp.Header.Revision
			return c, nil
		}
	}
	return nil, fmt.Errorf("store: update image cache %s: too much contention: %w", id, ErrConflict)
}

// DeleteImageCache removes a cache record and its name.
func (s *Store) DeleteImageCache(ctx context.Context, c *api.ImageCache) error {
	_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(s.imageCacheNameKey(c.AccountID, c.Name)), "=", c.ID)).
		Then(clientv3.OpDelete(s.imageCacheKey(c.ID)), clientv3.OpDelete(s.imageCacheNameKey(c.AccountID, c.Name))).
		Else(clientv3.OpDelete(s.imageCacheKey(c.ID))).Commit()
	if err != nil {
		return fmt.Errorf("store: delete image cache: %w", err)
	}
	return nil
}
