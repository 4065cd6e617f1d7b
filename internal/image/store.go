package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/singleflight"
	"golang.org/x/sys/unix"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
)

// Error classes. Errors from this package wrap one of them with %w.
var (
	// ErrNotFound: no such image, tag or blob on this host.
	ErrNotFound = errdefs.ErrNotFound
	// ErrInvalid: the input is not an image we understand, or is unsafe.
	ErrInvalid = errdefs.ErrInvalid
	// ErrCorrupt: content does not match its digest (a tampered or truncated
	// blob or layer), or the store on disk is damaged. It is also an
	// ErrInvalid, since the usual cause is a bad input.
	ErrCorrupt = fmt.Errorf("corrupt content: %w", errdefs.ErrInvalid)
)

const notFoundHint = "import it with `skiff image import FILE`"

// Store is a host's image store. All methods are safe for concurrent use.
// One process at a time may open a directory (an flock guards it).
type Store struct {
	dir  string
	opts options
	lock *os.File

	mu     sync.RWMutex
	meta   meta
	leases map[string]int // digests pinned by imports in flight, kept by GC

	unpacks  singleflight.Group // by diffID
	unpacked atomic.Int64       // layers unpacked, for tests

	flights    flights // registry pulls in progress, by ref and by digest
	transports *transports
}

// ImageConfig is the part of an image's config a sandbox needs to run it.
type ImageConfig struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
	StopSignal string   `json:"stopSignal,omitempty"`
}

// Resolved is what Resolve returns: everything needed to build a rootfs.
type Resolved struct {
	// Ref is the normalized reference resolved ("docker.io/library/busybox:latest"),
	// or the manifest digest when ref named the image by digest or id.
	Ref string
	// Digest is the manifest digest ("sha256:…").
	Digest string
	// ID is the config digest, Docker's image id.
	ID string
	// LayerDirs are the read-only snapshot directories, LOWEST first.
	// overlayfs lists lowerdirs top first: reverse them for lowerdir=.
	LayerDirs []string
	Config    ImageConfig
}

// Phase is a step of an import.
type Phase string

const (
	PhaseReading   Phase = "reading"   // copying the archive in; Layer is ""
	PhaseUnpacking Phase = "unpacking" // Done of Total compressed bytes of Layer
	PhaseDone      Phase = "done"      // Layer is unpacked (or was already)
)

// Progress reports an import's progress. Done and Total are bytes; Total is
// 0 when unknown.
type Progress struct {
	Layer string
	Phase Phase
	Done  int64
	Total int64
}

// Usage is the store's disk usage as recorded when content was written.
type Usage struct {
	Images        int
	Snapshots     int
	SnapshotBytes int64 // sum of file sizes in snapshots
	BlobBytes     int64
}

// Option configures Open.
type Option func(*options)

type options struct {
	log        *slog.Logger
	platform   v1.Platform
	durable    bool
	keepLayers bool
	parallel   int
	registry   RegistryConfig
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithPlatform sets the platform picked from multi-platform indexes
// (default linux/runtime.GOARCH).
func WithPlatform(p v1.Platform) Option { return func(o *options) { o.platform = p } }

// WithDurable makes the store fsync snapshots, blobs and metadata before they
// become visible, so that they also survive a power loss (not only a crash
// of the process, which the default already survives). Slower imports.
func WithDurable(on bool) Option { return func(o *options) { o.durable = on } }

// WithLayerBlobs keeps the compressed layer blobs in blobs/ after unpacking
// (default: only manifests and configs are kept; the snapshot is the layer).
func WithLayerBlobs(on bool) Option { return func(o *options) { o.keepLayers = on } }

// WithParallelUnpack sets how many layers of one image unpack at once
// (default GOMAXPROCS).
func WithParallelUnpack(n int) Option { return func(o *options) { o.parallel = max(n, 1) } }

// meta is the store's index, kept in meta.json and rewritten atomically.
type meta struct {
	Version   int                     `json:"version"`
	Images    map[string]*imageRecord `json:"images"`    // manifest digest ->
	Tags      map[string]string       `json:"tags"`      // normalized ref -> manifest digest
	Snapshots map[string]int64        `json:"snapshots"` // diffID -> bytes of files
	// Pins: owner (an image cache) -> manifest digests GC must keep.
	Pins map[string][]string `json:"pins,omitempty"`
}

type imageRecord struct {
	Digest    string        `json:"digest"`
	ConfigID  string        `json:"config"`
	Layers    []layerRecord `json:"layers"`
	Config    ImageConfig   `json:"runConfig"`
	Created   time.Time     `json:"created,omitzero"`
	Imported  time.Time     `json:"imported"`
	BlobBytes int64         `json:"blobBytes"` // manifest + config (+ layers when kept)
	// LastUsed is when the image was last resolved for a sandbox, pulled
	// or imported: the LRU order of Prune.
	LastUsed time.Time `json:"lastUsed,omitzero"`
}

type layerRecord struct {
	Digest string `json:"digest"`
	DiffID string `json:"diffID"`
	Size   int64  `json:"size"`
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts ...Option) (*Store, error) {
	o := options{log: slog.Default(), platform: v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, parallel: runtime.GOMAXPROCS(0)}
	for _, f := range opts {
		f(&o)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{abs, filepath.Join(abs, "blobs", "sha256"), filepath.Join(abs, "snapshots"), filepath.Join(abs, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(abs, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("%w: image store %s is open in another process or Store", errdefs.ErrUnavailable, abs)
	}
	o.registry = o.registry.withDefaults()
	s := &Store{dir: abs, opts: o, lock: lock, leases: map[string]int{}, transports: newTransports(o.registry)}
	if err := s.load(); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the store's directory lock.
func (s *Store) Close() error { return s.lock.Close() }

// Dir is the store's root directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) tmpDir() string { return filepath.Join(s.dir, "tmp") }

func (s *Store) snapshotDir(diffID string) string {
	return filepath.Join(s.dir, "snapshots", strings.TrimPrefix(diffID, "sha256:"))
}

func (s *Store) blobPath(d string) string {
	return filepath.Join(s.dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:"))
}

// load reads meta.json, empties tmp/ (we hold the lock: whatever is there is
// left by a crash) and registers snapshots that a crash left unrecorded.
func (s *Store) load() error {
	s.meta = meta{Version: 1, Images: map[string]*imageRecord{}, Tags: map[string]string{}, Snapshots: map[string]int64{}, Pins: map[string][]string{}}
	b, err := os.ReadFile(filepath.Join(s.dir, "meta.json"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("image store: %w", err)
	default:
		if err := json.Unmarshal(b, &s.meta); err != nil {
			return fmt.Errorf("%w: image store index %s: %v; move the directory away and re-import the images", ErrCorrupt, filepath.Join(s.dir, "meta.json"), err)
		}
		if s.meta.Images == nil {
			s.meta.Images = map[string]*imageRecord{}
		}
		if s.meta.Tags == nil {
			s.meta.Tags = map[string]string{}
		}
		if s.meta.Snapshots == nil {
			s.meta.Snapshots = map[string]int64{}
		}
		if s.meta.Pins == nil {
			s.meta.Pins = map[string][]string{}
		}
	}
	ents, _ := os.ReadDir(s.tmpDir())
	for _, e := range ents {
		os.RemoveAll(filepath.Join(s.tmpDir(), e.Name()))
	}
	snaps, err := os.ReadDir(filepath.Join(s.dir, "snapshots"))
	if err != nil {
		return fmt.Errorf("image store: %w", err)
	}
	onDisk := map[string]bool{}
	for _, e := range snaps {
		id := "sha256:" + e.Name()
		onDisk[id] = true
		if _, ok := s.meta.Snapshots[id]; !ok {
			s.meta.Snapshots[id] = duSize(filepath.Join(s.dir, "snapshots", e.Name()))
		}
	}
	for id := range s.meta.Snapshots {
		if !onDisk[id] {
			delete(s.meta.Snapshots, id)
		}
	}
	return nil
}

func duSize(root string) int64 {
	var n int64
	filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// persistLocked rewrites meta.json atomically. s.mu must be held for writing.
func (s *Store) persistLocked() error {
	b, err := json.Marshal(&s.meta)
	if err != nil {
		return err
	}
	return s.writeFileAtomic(filepath.Join(s.dir, "meta.json"), b)
}

func (s *Store) writeFileAtomic(dst string, b []byte) error {
	f, err := os.CreateTemp(s.tmpDir(), "file-")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil && s.opts.durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), dst)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("image store: write %s: %w", filepath.Base(dst), err)
	}
	if s.opts.durable {
		syncDir(filepath.Dir(dst))
	}
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// lease pins digests (blobs, snapshots) against GC until release is called.
func (s *Store) lease(digests ...string) (release func()) {
	s.mu.Lock()
	for _, d := range digests {
		s.leases[d]++
	}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		for _, d := range digests {
			if s.leases[d]--; s.leases[d] <= 0 {
				delete(s.leases, d)
			}
		}
		s.mu.Unlock()
	}
}

// Resolve finds an image by reference ("busybox", "docker.io/library/busybox:latest",
// "busybox@sha256:…"), by manifest or config digest, or by a unique prefix
// of at least 4 hex digits of either.
func (s *Store) Resolve(ctx context.Context, ref string) (*Resolved, error) {
	s.mu.Lock()
	rec, canon, err := s.lookupLocked(ref)
	if err == nil {
		rec.LastUsed = time.Now().UTC() // in memory; written with the next change
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	r := &Resolved{Ref: canon, Digest: rec.Digest, ID: rec.ConfigID, Config: rec.Config, LayerDirs: make([]string, len(rec.Layers))}
	r.Config.Entrypoint = cloneStrings(rec.Config.Entrypoint)
	r.Config.Cmd = cloneStrings(rec.Config.Cmd)
	r.Config.Env = cloneStrings(rec.Config.Env)
	for i, l := range rec.Layers {
		r.LayerDirs[i] = s.snapshotDir(l.DiffID)
		// One stat per layer: a clear error here beats a failed mount later.
		if _, err := os.Lstat(r.LayerDirs[i]); err != nil {
			return nil, fmt.Errorf("%w: image %s: snapshot of layer %s is missing; remove the image and import it again", ErrCorrupt, ref, l.DiffID)
		}
	}
	return r, nil
}

func cloneStrings(s []string) []string {
	if s == nil {
		return nil
	}
	return append([]string(nil), s...)
}

func (s *Store) lookupLocked(ref string) (*imageRecord, string, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return nil, "", fmt.Errorf("%w: empty image reference", ErrInvalid)
	}
	if hex, ok := strings.CutPrefix(ref, "sha256:"); ok {
		if rec := s.byIDLocked(hex); rec != nil {
			return rec, rec.Digest, nil
		}
		if !isHex(hex) {
			return nil, "", fmt.Errorf("%w: bad digest %q", ErrInvalid, ref)
		}
		return s.byPrefixLocked(ref, hex)
	}
	canon, err := NormalizeRef(ref)
	if err == nil {
		if i := strings.LastIndex(canon, "@"); i >= 0 {
			if rec := s.meta.Images[canon[i+1:]]; rec != nil {
				return rec, canon, nil
			}
		} else if d, ok := s.meta.Tags[canon]; ok {
			if rec := s.meta.Images[d]; rec != nil {
				return rec, canon, nil
			}
		}
	}
	if isHex(ref) && len(ref) >= 4 {
		return s.byPrefixLocked(ref, ref)
	}
	if err != nil {
		return nil, "", err
	}
	return nil, "", fmt.Errorf("%w: image %q is not on this host; %s", ErrNotFound, ref, notFoundHint)
}

func (s *Store) byIDLocked(hex string) *imageRecord {
	if rec := s.meta.Images["sha256:"+hex]; rec != nil {
		return rec
	}
	for _, rec := range s.meta.Images {
		if rec.ConfigID == "sha256:"+hex {
			return rec
		}
	}
	return nil
}

func (s *Store) byPrefixLocked(ref, hex string) (*imageRecord, string, error) {
	var found *imageRecord
	if len(hex) >= 4 {
		for _, rec := range s.meta.Images {
			if strings.HasPrefix(rec.Digest, "sha256:"+hex) || strings.HasPrefix(rec.ConfigID, "sha256:"+hex) {
				if found != nil && found != rec {
					return nil, "", fmt.Errorf("%w: id prefix %q matches more than one image; give more digits", ErrInvalid, ref)
				}
				found = rec
			}
		}
	}
	if found == nil {
		return nil, "", fmt.Errorf("%w: image %q is not on this host; %s", ErrNotFound, ref, notFoundHint)
	}
	return found, found.Digest, nil
}

func isHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return s != ""
}

// List returns one entry per tag, plus one with an empty Ref for each
// untagged image, sorted by Ref then Digest.
func (s *Store) List(ctx context.Context) ([]api.Image, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	tagged := map[string]bool{}
	var out []api.Image
	for ref, d := range s.meta.Tags {
		if rec := s.meta.Images[d]; rec != nil {
			out = append(out, s.apiImageLocked(rec, ref))
			tagged[d] = true
		}
	}
	for d, rec := range s.meta.Images {
		if !tagged[d] {
			out = append(out, s.apiImageLocked(rec, ""))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Ref != out[j].Ref {
			return out[i].Ref < out[j].Ref
		}
		return out[i].Digest < out[j].Digest
	})
	return out, nil
}

// apiImageLocked: Size is the unpacked size, what the image costs this host.
func (s *Store) apiImageLocked(rec *imageRecord, ref string) api.Image {
	var size int64
	for _, l := range rec.Layers {
		size += s.meta.Snapshots[l.DiffID]
	}
	created := rec.Created
	if created.IsZero() {
		created = rec.Imported
	}
	return api.Image{Ref: ref, Digest: rec.Digest, Size: size, Layers: len(rec.Layers), CreatedAt: created}
}

// Tag points the normalized ref dst at the image src resolves to.
func (s *Store) Tag(ctx context.Context, src, dst string) error {
	canon, err := NormalizeRef(dst)
	if err != nil {
		return err
	}
	if strings.Contains(canon, "@") {
		return fmt.Errorf("%w: cannot tag with a digest reference %q", ErrInvalid, dst)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, _, err := s.lookupLocked(src)
	if err != nil {
		return err
	}
	s.meta.Tags[canon] = rec.Digest
	return s.persistLocked()
}

// Remove removes a tag, or, given a digest or id, every tag of that image.
// Content stays until GC finds it unreferenced.
func (s *Store) Remove(ctx context.Context, ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if canon, err := NormalizeRef(ref); err == nil && !strings.Contains(canon, "@") {
		if _, ok := s.meta.Tags[canon]; ok {
			delete(s.meta.Tags, canon)
			return s.persistLocked()
		}
	}
	rec, _, err := s.lookupLocked(ref)
	if err != nil {
		return err
	}
	for t, d := range s.meta.Tags {
		if d == rec.Digest {
			delete(s.meta.Tags, t)
		}
	}
	// An untagged image is dropped by the next GC unless it is in use.
	return s.persistLocked()
}

// GC drops untagged images for which inUse(manifestDigest) is false (inUse
// may be nil), then deletes snapshots and blobs that no remaining image
// references, and returns the bytes freed. inUse is called with the store
// locked: it must not call the Store. Callers starting sandboxes should
// report an image in use from before Resolve until its sandboxes are gone.
func (s *Store) GC(ctx context.Context, inUse func(digest string) bool) (freed int64, err error) {
	s.mu.Lock()
	pinned := s.pinnedLocked()
	for d := range s.meta.Images {
		if pinned[d] {
			continue
		}
		tagged := false
		for _, td := range s.meta.Tags {
			if td == d {
				tagged = true
				break
			}
		}
		if !tagged && s.leases[d] == 0 && (inUse == nil || !inUse(d)) {
			delete(s.meta.Images, d)
		}
	}
	live := map[string]bool{}
	for d := range s.leases {
		live[d] = true
	}
	for _, rec := range s.meta.Images {
		live[rec.Digest], live[rec.ConfigID] = true, true
		for _, l := range rec.Layers {
			live[l.Digest], live[l.DiffID] = true, true
		}
	}
	var doomed []string
	for id, size := range s.meta.Snapshots {
		if live[id] {
			continue
		}
		tmp, err := os.MkdirTemp(s.tmpDir(), "gc-")
		if err != nil {
			break
		}
		// Rename under the lock so no import sees a half-deleted snapshot.
		if err := os.Rename(s.snapshotDir(id), filepath.Join(tmp, "s")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			os.Remove(tmp)
			continue
		}
		delete(s.meta.Snapshots, id)
		doomed = append(doomed, tmp)
		freed += size
	}
	blobs, _ := os.ReadDir(filepath.Join(s.dir, "blobs", "sha256"))
	for _, b := range blobs {
		if !live["sha256:"+b.Name()] {
			p := filepath.Join(s.dir, "blobs", "sha256", b.Name())
			if fi, err := os.Lstat(p); err == nil {
				freed += fi.Size()
			}
			os.Remove(p)
		}
	}
	err = s.persistLocked()
	s.mu.Unlock()
	for _, d := range doomed {
		os.RemoveAll(d)
	}
	return freed, err
}

// DiskUsage reports what the store holds: snapshot sizes as recorded when
// they were unpacked (no walk of the snapshots), blobs as listed.
func (s *Store) DiskUsage(ctx context.Context) (Usage, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	u := Usage{Images: len(s.meta.Images), Snapshots: len(s.meta.Snapshots)}
	for _, n := range s.meta.Snapshots {
		u.SnapshotBytes += n
	}
	blobs, _ := os.ReadDir(filepath.Join(s.dir, "blobs", "sha256"))
	for _, b := range blobs {
		if fi, err := b.Info(); err == nil {
			u.BlobBytes += fi.Size()
		}
	}
	return u, nil
}
