package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/skiffhq/skiff/api"
)

// maxJSON bounds manifests, indexes and configs read into memory.
const maxJSON = 16 << 20

// source is where an image's blobs come from: an unpacked archive, a
// registry, a v1.Image. verified reports that the stream was already checked
// against d.Digest, so the store need not hash it again.
type source interface {
	Blob(ctx context.Context, d v1.Descriptor) (rc io.ReadCloser, verified bool, err error)
}

// Put stores img, from any source (a registry pull, an archive), under the
// given references, unpacking its layers. The manifest, config and layers
// are checked against their digests and diffIDs as they stream in.
func (s *Store) Put(ctx context.Context, img v1.Image, refs []string, progress func(Progress)) (api.Image, error) {
	raw, err := img.RawManifest()
	if err != nil {
		return api.Image{}, fmt.Errorf("image manifest: %w", err)
	}
	var names []string
	for _, r := range refs {
		n, err := NormalizeRef(r)
		if err != nil {
			return api.Image{}, err
		}
		names = append(names, n)
	}
	rec, err := s.ingest(ctx, raw, v1Source{img}, names, syncProgress(progress))
	if err != nil {
		return api.Image{}, err
	}
	ref := ""
	if len(names) > 0 {
		ref = names[0]
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.apiImageLocked(rec, ref), nil
}

type v1Source struct{ img v1.Image }

func (v v1Source) Blob(ctx context.Context, d v1.Descriptor) (io.ReadCloser, bool, error) {
	if cfg, err := v.img.ConfigName(); err == nil && cfg == d.Digest {
		b, err := v.img.RawConfigFile()
		return io.NopCloser(bytes.NewReader(b)), false, err
	}
	l, err := v.img.LayerByDigest(d.Digest)
	if err != nil {
		return nil, false, err
	}
	rc, err := l.Compressed()
	return rc, false, err
}

// syncProgress serializes calls, since layers unpack in parallel.
func syncProgress(f func(Progress)) func(Progress) {
	if f == nil {
		return func(Progress) {}
	}
	var mu sync.Mutex
	return func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		f(p)
	}
}

// ingest stores the image whose manifest is raw, reading blobs from src,
// and tags it with names (already normalized).
func (s *Store) ingest(ctx context.Context, raw []byte, src source, names []string, progress func(Progress)) (*imageRecord, error) {
	sum := sha256.Sum256(raw)
	mdig := "sha256:" + hex.EncodeToString(sum[:])
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: image manifest %s: %v", ErrInvalid, mdig, err)
	}
	if m.MediaType != "" && !m.MediaType.IsImage() {
		return nil, fmt.Errorf("%w: manifest %s has media type %s, not an image manifest", ErrInvalid, mdig, m.MediaType)
	}
	if err := checkDigest(m.Config.Digest); err != nil {
		return nil, err
	}
	cfgRaw, err := readBlob(ctx, src, m.Config)
	if err != nil {
		return nil, fmt.Errorf("image %s config: %w", mdig, err)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(cfgRaw))
	if err != nil {
		return nil, fmt.Errorf("%w: image %s config: %v", ErrInvalid, mdig, err)
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("%w: image %s: manifest has %d layers, config has %d diff_ids", ErrInvalid, mdig, len(m.Layers), len(cf.RootFS.DiffIDs))
	}
	rec := &imageRecord{
		Digest: mdig, ConfigID: m.Config.Digest.String(), Imported: time.Now().UTC(),
		Created:   cf.Created.Time.UTC(),
		BlobBytes: int64(len(raw) + len(cfgRaw)),
		Config: ImageConfig{
			Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd, Env: cf.Config.Env,
			WorkingDir: cf.Config.WorkingDir, User: cf.Config.User, StopSignal: cf.Config.StopSignal,
		},
	}
	pins := []string{mdig, rec.ConfigID}
	for i, l := range m.Layers {
		if err := checkDigest(l.Digest); err != nil {
			return nil, err
		}
		if err := checkDigest(cf.RootFS.DiffIDs[i]); err != nil {
			return nil, err
		}
		rec.Layers = append(rec.Layers, layerRecord{Digest: l.Digest.String(), DiffID: cf.RootFS.DiffIDs[i].String(), Size: l.Size})
		pins = append(pins, l.Digest.String(), cf.RootFS.DiffIDs[i].String())
		if s.opts.keepLayers {
			rec.BlobBytes += l.Size
		}
	}
	release := s.lease(pins...)
	defer release()

	if err := s.putBlob(mdig, raw); err != nil {
		return nil, err
	}
	if err := s.putBlob(rec.ConfigID, cfgRaw); err != nil {
		return nil, err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.opts.parallel)
	for i, l := range m.Layers {
		g.Go(func() error {
			return s.ensureSnapshot(gctx, src, l, rec.Layers[i].DiffID, progress)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.meta.Images[mdig]; old != nil {
		rec.Imported = old.Imported
	}
	s.meta.Images[mdig] = rec
	for _, n := range names {
		s.meta.Tags[n] = mdig
	}
	if err := s.persistLocked(); err != nil {
		return nil, err
	}
	return rec, nil
}

func checkDigest(h v1.Hash) error {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 || !isHex(h.Hex) {
		return fmt.Errorf("%w: unsupported digest %q (want sha256)", ErrInvalid, h.String())
	}
	return nil
}

func readBlob(ctx context.Context, src source, d v1.Descriptor) ([]byte, error) {
	rc, _, err := src.Blob(ctx, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxJSON+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxJSON {
		return nil, fmt.Errorf("%w: blob %s is larger than %d bytes", ErrInvalid, d.Digest, maxJSON)
	}
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != d.Digest.Hex {
		return nil, fmt.Errorf("%w: blob %s does not match its digest", ErrCorrupt, d.Digest)
	}
	return b, nil
}

// putBlob writes a small, already verified blob unless it is there.
func (s *Store) putBlob(d string, b []byte) error {
	p := s.blobPath(d)
	if _, err := os.Lstat(p); err == nil {
		return nil
	}
	return s.writeFileAtomic(p, b)
}

// ensureSnapshot makes sure the layer's snapshot exists, unpacking it if
// not. Concurrent calls for one diffID unpack it once.
func (s *Store) ensureSnapshot(ctx context.Context, src source, l v1.Descriptor, diffID string, progress func(Progress)) error {
	done := Progress{Layer: l.Digest.String(), Phase: PhaseDone, Done: l.Size, Total: l.Size}
	for {
		if s.haveSnapshot(diffID) {
			progress(done)
			return nil
		}
		_, err, _ := s.unpacks.Do(diffID, func() (any, error) {
			if s.haveSnapshot(diffID) {
				return nil, nil
			}
			return nil, s.unpack(ctx, src, l, diffID, progress)
		})
		if err != nil && ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			continue // another caller's unpack was cancelled; ours is not
		}
		if err != nil {
			return fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		progress(done)
		return nil
	}
}

func (s *Store) haveSnapshot(diffID string) bool {
	s.mu.RLock()
	_, ok := s.meta.Snapshots[diffID]
	s.mu.RUnlock()
	if !ok {
		return false
	}
	if _, err := os.Lstat(s.snapshotDir(diffID)); err != nil {
		s.mu.Lock()
		delete(s.meta.Snapshots, diffID) // removed behind our back: unpack again
		s.mu.Unlock()
		return false
	}
	return true
}

// unpack streams one layer from src into a temp dir, verifying its digest
// and diffID, and renames it into snapshots/ only if both match.
func (s *Store) unpack(ctx context.Context, src source, l v1.Descriptor, diffID string, progress func(Progress)) (err error) {
	s.unpacked.Add(1)
	rc, verified, err := src.Blob(ctx, l)
	if err != nil {
		return err
	}
	defer rc.Close()
	tmp, err := os.MkdirTemp(s.tmpDir(), "unpack-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	root := filepath.Join(tmp, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		return err
	}

	cr := &countingReader{ctx: ctx, r: rc, layer: l.Digest.String(), total: l.Size, progress: progress}
	var in io.Reader = cr
	var blobHash hash.Hash
	if !verified {
		blobHash = sha256.New()
		in = io.TeeReader(in, blobHash)
	}
	var keep *os.File
	if s.opts.keepLayers {
		if keep, err = os.CreateTemp(tmp, "blob-"); err != nil {
			return err
		}
		defer keep.Close()
		in = io.TeeReader(in, keep)
	}
	br := bufio.NewReaderSize(in, 1<<16)
	dr, closeDR, err := decompress(br)
	if err != nil {
		return err
	}
	defer closeDR()
	var diffHash hash.Hash
	var tr io.Reader = dr
	if !(verified && l.Digest.String() == diffID) { // uncompressed and verified: diffID == digest
		diffHash = sha256.New()
		tr = io.TeeReader(dr, diffHash)
	}
	size, err := extractTar(ctx, root, tr)
	if err != nil {
		return err
	}
	// Read what the tar reader left (end-of-archive padding, trailers) so
	// the digests cover every byte.
	if _, err := io.Copy(io.Discard, tr); err != nil {
		return fmt.Errorf("%w: layer stream: %v", ErrCorrupt, err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return err
	}
	if l.Size > 0 && cr.n != l.Size {
		return fmt.Errorf("%w: layer is %d bytes, manifest says %d", ErrCorrupt, cr.n, l.Size)
	}
	if blobHash != nil && hex.EncodeToString(blobHash.Sum(nil)) != l.Digest.Hex {
		return fmt.Errorf("%w: layer blob does not match its digest", ErrCorrupt)
	}
	if diffHash != nil && "sha256:"+hex.EncodeToString(diffHash.Sum(nil)) != diffID {
		return fmt.Errorf("%w: unpacked layer does not match its diffID %s", ErrCorrupt, diffID)
	}
	if s.opts.durable {
		syncFS(root)
	}
	if keep != nil {
		if err := os.Rename(keep.Name(), s.blobPath(l.Digest.String())); err != nil {
			return err
		}
	}
	dst := s.snapshotDir(diffID)
	if err := os.Rename(root, dst); err != nil {
		if _, serr := os.Lstat(dst); serr != nil {
			return err
		}
		// Already there (a concurrent writer won): ours is identical.
	}
	if s.opts.durable {
		syncDir(filepath.Dir(dst))
	}
	os.RemoveAll(tmp)
	s.mu.Lock()
	s.meta.Snapshots[diffID] = size
	s.mu.Unlock()
	s.opts.log.Debug("unpacked layer", "digest", l.Digest.String(), "diffID", diffID, "bytes", size)
	return nil
}

func decompress(br *bufio.Reader) (io.Reader, func(), error) {
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := kgzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: layer gzip: %v", ErrCorrupt, err)
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: layer zstd: %v", ErrCorrupt, err)
		}
		return zr, zr.Close, nil
	}
	return br, func() {}, nil
}

// mediaTypeOf guesses a layer's media type from its first bytes.
func mediaTypeOf(magic []byte) types.MediaType {
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		return types.OCILayer
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return types.OCILayerZStd
	}
	return types.OCIUncompressedLayer
}

// countingReader counts bytes, reports progress every 4 MiB and stops when
// ctx is done.
type countingReader struct {
	ctx      context.Context
	r        io.Reader
	n, last  int64
	layer    string
	total    int64
	phase    Phase
	progress func(Progress)
}

func (c *countingReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.progress != nil && (c.n-c.last >= 4<<20 || (err == io.EOF && c.n != c.last)) {
		c.last = c.n
		ph := c.phase
		if ph == "" {
			ph = PhaseUnpacking
		}
		c.progress(Progress{Layer: c.layer, Phase: ph, Done: c.n, Total: c.total})
	}
	return n, err
}
