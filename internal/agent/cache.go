package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/image"
)

// Image caches on this host: the server's cache controller asks the agent
// to pull a cache's images and pin them in the store, so that GC never
// drops them and groups using them start without a registry. Pins are
// named "imagecache:<id>" and live in the store's index, so they survive
// agent restarts.

const cachePinPrefix = "imagecache:"

// serveCachePut pulls a cache's images and pins them. The body is the
// cache record (with its credentials: the session is mutual TLS); the
// reply is this host's api.ImageCacheHost.
func (a *Agent) serveCachePut(w http.ResponseWriter, r *http.Request) error {
	var c api.ImageCache
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&c); err != nil {
		return errdefs.Invalid("malformed image cache: " + err.Error())
	}
	id := r.PathValue("id")
	if c.ID != id || len(c.Images) == 0 {
		return errdefs.Invalid("image cache id or images missing")
	}
	st := a.pullCache(r.Context(), &c)
	return writeJSONReply(w, st)
}

func (a *Agent) pullCache(ctx context.Context, c *api.ImageCache) api.ImageCacheHost {
	st := api.ImageCacheHost{HostID: a.id.HostID, Generation: c.Generation, Digests: map[string]string{}}
	opts := accessOptions(c.ImageRegistryCredentials, c.InsecureRegistries, c.PlainHTTPRegistries)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []string
	reason := ""
	sem := make(chan struct{}, 3)
	for _, ref := range c.Images {
		wg.Add(1)
		go func(ref string) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			res, err := a.images.Pull(ctx, ref, opts)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %s", ref, pullMessage(err)))
				if reason == "" {
					reason = image.PullReason(err)
				}
				return
			}
			st.Digests[ref] = res.Digest
		}(ref)
	}
	wg.Wait()
	st.UpdatedAt = time.Now().UTC()
	if len(errs) > 0 {
		st.Status, st.Reason, st.Message = api.ImageCacheFailed, reason, strings.Join(errs, "; ")
		a.log.Warn("image cache pull failed", "cache", c.ID, "err", st.Message)
		return st
	}
	digests := make([]string, 0, len(st.Digests))
	for _, d := range st.Digests {
		digests = append(digests, d)
	}
	if err := a.images.Pin(ctx, cachePinPrefix+c.ID, digests); err != nil {
		st.Status, st.Reason, st.Message = api.ImageCacheFailed, "PinFailed", err.Error()
		return st
	}
	st.Status = api.ImageCacheReady
	st.Size = a.images.SizeOf(digests)
	a.log.Info("image cache ready on this host", "cache", c.ID, "images", len(digests), "bytes", st.Size)
	return st
}

// serveCacheDelete unpins a cache; its images go when GC finds them unused.
func (a *Agent) serveCacheDelete(w http.ResponseWriter, r *http.Request) error {
	if err := a.images.Unpin(r.Context(), cachePinPrefix+r.PathValue("id")); err != nil {
		return err
	}
	a.log.Info("image cache released on this host", "cache", r.PathValue("id"))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// serveCacheList returns the caches pinned here: id -> manifest digests.
func (a *Agent) serveCacheList(w http.ResponseWriter, r *http.Request) error {
	out := map[string][]string{}
	for owner, ds := range a.images.Pins() {
		if id, ok := strings.CutPrefix(owner, cachePinPrefix); ok {
			out[id] = ds
		}
	}
	return writeJSONReply(w, out)
}

// runImageGC prunes the store down to ImageGCThreshold every few minutes,
// least recently used first, keeping every image a group on the host uses
// and every image a cache pins.
func (a *Agent) runImageGC(ctx context.Context) {
	if a.cfg.ImageGCThreshold <= 0 {
		return
	}
	// Not before the first sync: until then the groups re-adopted from the
	// last run are not known, and their images would look unused.
	select {
	case <-ctx.Done():
		return
	case <-a.ready:
	}
	t := time.NewTicker(5 * time.Minute)
	defer t.Stop()
	for {
		if err := a.pruneImages(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("image GC failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Agent) pruneImages(ctx context.Context) error {
	used, refs := a.pulls.inUse()
	for _, ref := range refs {
		if res, err := a.images.Resolve(ctx, ref); err == nil {
			used[res.Digest] = true
		} else if !errors.Is(err, image.ErrNotFound) && !errors.Is(err, image.ErrInvalid) {
			return fmt.Errorf("resolve %s: %w", ref, err)
		}
	}
	res, err := a.images.Prune(ctx, a.cfg.ImageGCThreshold, func(d string) bool { return used[d] })
	if err == nil && len(res.Removed) > 0 {
		a.log.Info("image GC", "removed", len(res.Removed), "freed", res.Freed, "used", res.Used, "threshold", a.cfg.ImageGCThreshold)
	}
	return err
}
