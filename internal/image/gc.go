package image

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// Pin keeps the images with these manifest digests (and everything they
// reference) from GC and Prune on behalf of owner (an image cache id),
// replacing what owner pinned before. Pins survive restarts.
func (s *Store) Pin(ctx context.Context, owner string, digests []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range digests {
		if s.meta.Images[d] == nil {
			return fmt.Errorf("%w: cannot pin image %s: not on this host", ErrNotFound, d)
		}
	}
	s.meta.Pins[owner] = append([]string(nil), digests...)
	return s.persistLocked()
}

// Unpin drops owner's pins; the images stay until GC or Prune finds them
// unused.
func (s *Store) Unpin(ctx context.Context, owner string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.meta.Pins[owner]; !ok {
		return nil
	}
	delete(s.meta.Pins, owner)
	return s.persistLocked()
}

// Pins returns every owner's pinned digests.
func (s *Store) Pins() map[string][]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string][]string, len(s.meta.Pins))
	for k, v := range s.meta.Pins {
		out[k] = append([]string(nil), v...)
	}
	return out
}

func (s *Store) pinnedLocked() map[string]bool {
	out := map[string]bool{}
	for _, ds := range s.meta.Pins {
		for _, d := range ds {
			out[d] = true
		}
	}
	return out
}

// PruneResult says what Prune removed.
type PruneResult struct {
	Removed []string // manifest digests, least recently used first
	Freed   int64    // bytes of snapshots and blobs deleted
	Used    int64    // snapshot bytes left
}

// Prune removes images, least recently used first, until the snapshots
// take at most maxBytes. It never removes an image that inUse reports
// (called with the store locked: it must not call the Store), that a pin
// holds or that a pull or import is writing; when only such images are
// left it stops above the cap. Tags of removed images go with them.
func (s *Store) Prune(ctx context.Context, maxBytes int64, inUse func(digest string) bool) (PruneResult, error) {
	var res PruneResult
	s.mu.Lock()
	pinned := s.pinnedLocked()
	type cand struct {
		digest string
		used   time.Time
	}
	var cands []cand
	for d, rec := range s.meta.Images {
		if pinned[d] || s.leases[d] > 0 || (inUse != nil && inUse(d)) {
			continue
		}
		used := rec.LastUsed
		if used.IsZero() {
			used = rec.Imported
		}
		cands = append(cands, cand{d, used})
	}
	sort.Slice(cands, func(i, j int) bool {
		if !cands[i].used.Equal(cands[j].used) {
			return cands[i].used.Before(cands[j].used)
		}
		return cands[i].digest < cands[j].digest
	})
	// refs counts, per snapshot, the images that use it.
	refs := map[string]int{}
	var used int64
	for _, rec := range s.meta.Images {
		for _, l := range uniqueDiffIDs(rec) {
			refs[l]++
		}
	}
	for id, n := range s.meta.Snapshots {
		if refs[id] > 0 {
			used += n
		}
	}
	for _, c := range cands {
		if used <= maxBytes {
			break
		}
		rec := s.meta.Images[c.digest]
		for _, l := range uniqueDiffIDs(rec) {
			if refs[l]--; refs[l] == 0 && s.leases[l] == 0 {
				used -= s.meta.Snapshots[l]
			}
		}
		delete(s.meta.Images, c.digest)
		for t, d := range s.meta.Tags {
			if d == c.digest {
				delete(s.meta.Tags, t)
			}
		}
		res.Removed = append(res.Removed, c.digest)
	}
	if len(res.Removed) > 0 {
		if err := s.persistLocked(); err != nil {
			s.mu.Unlock()
			return res, err
		}
	}
	s.mu.Unlock()
	if len(res.Removed) > 0 {
		s.opts.log.Info("pruned least recently used images", "count", len(res.Removed), "cap", maxBytes)
	}
	freed, err := s.GC(ctx, inUse)
	res.Freed = freed
	u, _ := s.DiskUsage(ctx)
	res.Used = u.SnapshotBytes
	return res, err
}

func uniqueDiffIDs(rec *imageRecord) []string {
	seen := map[string]bool{}
	var out []string
	for _, l := range rec.Layers {
		if !seen[l.DiffID] {
			seen[l.DiffID] = true
			out = append(out, l.DiffID)
		}
	}
	return out
}

// LastUsed returns when the image with this manifest digest was last used
// (zero if unknown).
func (s *Store) LastUsed(digest string) time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if rec := s.meta.Images[digest]; rec != nil {
		return rec.LastUsed
	}
	return time.Time{}
}

// SizeOf returns the unpacked size of the images with these manifest
// digests, counting a layer they share once.
func (s *Store) SizeOf(digests []string) int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	seen := map[string]bool{}
	var n int64
	for _, d := range digests {
		rec := s.meta.Images[d]
		if rec == nil {
			continue
		}
		for _, l := range rec.Layers {
			if !seen[l.DiffID] {
				seen[l.DiffID] = true
				n += s.meta.Snapshots[l.DiffID]
			}
		}
	}
	return n
}
