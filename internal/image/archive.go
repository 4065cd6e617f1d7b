package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	kgzip "github.com/klauspost/compress/gzip"

	"github.com/skiffhq/skiff/api"
)

// Annotations that name an image in an OCI index.
const (
	annotationRefName       = "org.opencontainers.image.ref.name"
	annotationContainerdRef = "io.containerd.image.name"
)

const maxArchiveEntries = 1 << 20

// Import reads a tarball (optionally gzipped) holding an OCI image layout
// (oci-layout, index.json, blobs/) or a docker-archive (`docker save`:
// manifest.json, layer tars, config), stores every image in it and returns
// one entry per name given to it in the archive (an unnamed image gets one
// entry with an empty Ref). The archive is spooled to disk, never held in
// memory. progress may be nil; it is never called concurrently.
func (s *Store) Import(ctx context.Context, r io.Reader, progress func(Progress)) ([]api.Image, error) {
	progress = syncProgress(progress)
	work, err := os.MkdirTemp(s.tmpDir(), "import-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	a, err := readArchive(ctx, r, work, progress)
	if err != nil {
		return nil, err
	}
	imgs, err := a.images(s.opts.platform)
	if err != nil {
		return nil, err
	}
	var out []api.Image
	for _, im := range imgs {
		rec, err := s.ingest(ctx, im.manifest, a, im.names, progress)
		if err != nil {
			return nil, err
		}
		s.mu.RLock()
		if len(im.names) == 0 {
			out = append(out, s.apiImageLocked(rec, ""))
		}
		for _, n := range im.names {
			out = append(out, s.apiImageLocked(rec, n))
		}
		s.mu.RUnlock()
	}
	return out, nil
}

// archive is a tarball spooled to a directory: regular files become
// work/<n> (never named by the archive, so its names cannot point anywhere),
// each hashed as it is copied.
type archive struct {
	files    map[string]*archiveFile // cleaned name ->
	links    map[string]string       // cleaned name -> cleaned target (symlinks, hard links)
	byDigest map[string]*archiveFile // "sha256:…" ->
}

type archiveFile struct {
	path   string
	size   int64
	digest string
	magic  []byte
}

func readArchive(ctx context.Context, r io.Reader, work string, progress func(Progress)) (*archive, error) {
	total := int64(0)
	if st, ok := r.(interface{ Stat() (os.FileInfo, error) }); ok {
		if fi, err := st.Stat(); err == nil && fi.Mode().IsRegular() {
			total = fi.Size()
		}
	}
	cr := &countingReader{ctx: ctx, r: r, total: total, phase: PhaseReading, progress: progress}
	br := bufio.NewReaderSize(cr, 1<<16)
	var in io.Reader = br
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		zr, err := kgzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%w: image archive: bad gzip: %v", ErrInvalid, err)
		}
		defer zr.Close()
		in = zr
	}
	a := &archive{files: map[string]*archiveFile{}, links: map[string]string{}, byDigest: map[string]*archiveFile{}}
	tr := tar.NewReader(in)
	buf := make([]byte, 1<<20)
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			if n == 0 {
				return nil, fmt.Errorf("%w: image archive is empty; want a tar of an OCI image layout or of `docker save`", ErrInvalid)
			}
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("%w: image archive is not a readable tar (%v); want a tar of an OCI image layout or of `docker save`", ErrInvalid, err)
		}
		if n >= maxArchiveEntries {
			return nil, fmt.Errorf("%w: image archive has more than %d entries", ErrInvalid, maxArchiveEntries)
		}
		name := archiveClean(hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeGNUSparse:
			f, err := spool(tr, filepath.Join(work, strconv.Itoa(n)), buf)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				return nil, fmt.Errorf("%w: image archive entry %q: %v", ErrInvalid, hdr.Name, err)
			}
			a.files[name] = f
			a.byDigest[f.digest] = f
		case tar.TypeSymlink:
			a.links[name] = archiveClean(path.Join(path.Dir(name), hdr.Linkname))
		case tar.TypeLink:
			a.links[name] = archiveClean(hdr.Linkname)
		}
	}
	progress(Progress{Phase: PhaseReading, Done: cr.n, Total: total})
	return a, nil
}

// archiveClean maps any name to a clean relative one: names only key a map.
func archiveClean(name string) string { return path.Clean("/" + name)[1:] }

func spool(r io.Reader, p string, buf []byte) (*archiveFile, error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	af := &archiveFile{path: p}
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if af.magic == nil {
				af.magic = append([]byte(nil), buf[:min(n, 4)]...)
			}
			h.Write(buf[:n])
			if _, werr := f.Write(buf[:n]); werr != nil {
				return nil, werr
			}
			af.size += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	af.digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	return af, nil
}

func (a *archive) lookup(name string) *archiveFile {
	name = archiveClean(name)
	for range 16 {
		if f := a.files[name]; f != nil {
			return f
		}
		t, ok := a.links[name]
		if !ok {
			return nil
		}
		name = t
	}
	return nil
}

// Blob finds content by digest, whatever the archive named it; it was hashed
// on the way in, so it is verified.
func (a *archive) Blob(ctx context.Context, d v1.Descriptor) (io.ReadCloser, bool, error) {
	if f := a.byDigest[d.Digest.String()]; f != nil {
		rc, err := os.Open(f.path)
		return rc, true, err
	}
	if a.lookup("blobs/"+d.Digest.Algorithm+"/"+d.Digest.Hex) != nil {
		return nil, false, fmt.Errorf("%w: archive blob %s does not match its digest", ErrCorrupt, d.Digest)
	}
	return nil, false, fmt.Errorf("%w: image archive lacks blob %s", ErrInvalid, d.Digest)
}

func (a *archive) readJSON(name string, v any) error {
	f := a.lookup(name)
	if f == nil {
		return fmt.Errorf("%w: image archive lacks %s", ErrInvalid, name)
	}
	if f.size > maxJSON {
		return fmt.Errorf("%w: %s in image archive is too large", ErrInvalid, name)
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %s in image archive: %v", ErrInvalid, name, err)
	}
	return nil
}

type archiveImage struct {
	manifest []byte
	names    []string
}

// images lists the archive's images: their raw manifests and names.
func (a *archive) images(p v1.Platform) ([]archiveImage, error) {
	var out []archiveImage
	var err error
	switch {
	case a.lookup("index.json") != nil:
		out, err = a.ociImages(p)
	case a.lookup("manifest.json") != nil:
		out, err = a.dockerImages()
	default:
		return nil, fmt.Errorf("%w: tar is neither an OCI image layout (no index.json) nor a docker-archive (no manifest.json), or it is truncated", ErrInvalid)
	}
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: image archive holds no image", ErrInvalid)
	}
	// The same image listed twice (two names) is stored once.
	merged := []archiveImage{}
	seen := map[string]int{}
	for _, im := range out {
		k := string(im.manifest)
		if i, ok := seen[k]; ok {
			merged[i].names = append(merged[i].names, im.names...)
			continue
		}
		seen[k] = len(merged)
		merged = append(merged, im)
	}
	return merged, nil
}

func (a *archive) ociImages(p v1.Platform) ([]archiveImage, error) {
	var idx v1.IndexManifest
	if err := a.readJSON("index.json", &idx); err != nil {
		return nil, err
	}
	// Docker ≥ 25 writes manifest.json too; its RepoTags name images whose
	// index entries carry no name.
	repoTags := map[string][]string{} // config digest -> tags
	if a.lookup("manifest.json") != nil {
		var dm []dockerManifest
		if a.readJSON("manifest.json", &dm) == nil {
			for _, e := range dm {
				if f := a.lookup(e.Config); f != nil {
					repoTags[f.digest] = append(repoTags[f.digest], e.RepoTags...)
				}
			}
		}
	}
	var out []archiveImage
	for _, d := range idx.Manifests {
		raw, err := a.pick(d, p, 0)
		if err != nil {
			return nil, err
		}
		if raw == nil {
			continue // not an image (an attestation, an artifact)
		}
		var names []string
		ref := d.Annotations[annotationContainerdRef]
		if ref == "" {
			ref = d.Annotations[annotationRefName]
		}
		if ref != "" {
			n, err := NormalizeRef(ref)
			if err != nil {
				return nil, fmt.Errorf("index.json: %w", err)
			}
			names = append(names, n)
		} else if m, err := v1.ParseManifest(bytes.NewReader(raw)); err == nil {
			for _, t := range repoTags[m.Config.Digest.String()] {
				n, err := NormalizeRef(t)
				if err != nil {
					return nil, fmt.Errorf("manifest.json: %w", err)
				}
				names = append(names, n)
			}
		}
		out = append(out, archiveImage{manifest: raw, names: names})
	}
	return out, nil
}

// pick returns the image manifest d leads to, choosing platform p in an
// index; nil for descriptors that are not images.
func (a *archive) pick(d v1.Descriptor, p v1.Platform, depth int) ([]byte, error) {
	if depth > 4 {
		return nil, fmt.Errorf("%w: image indexes nested too deep", ErrInvalid)
	}
	if err := checkDigest(d.Digest); err != nil {
		return nil, err
	}
	switch {
	case d.MediaType.IsImage():
	case d.MediaType.IsIndex():
	default:
		return nil, nil
	}
	raw, err := readBlob(context.Background(), a, d)
	if err != nil {
		return nil, err
	}
	if d.MediaType.IsImage() {
		return raw, nil
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: image index %s: %v", ErrInvalid, d.Digest, err)
	}
	var have []string
	var best *v1.Descriptor
	for i, m := range idx.Manifests {
		if m.Platform == nil || m.Platform.OS == "unknown" {
			continue
		}
		have = append(have, m.Platform.String())
		if m.Platform.OS != p.OS || m.Platform.Architecture != p.Architecture || a.byDigest[m.Digest.String()] == nil {
			continue // wrong platform, or not saved in this archive
		}
		if best == nil || (p.Variant != "" && m.Platform.Variant == p.Variant) {
			best = &idx.Manifests[i]
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%w: image index %s has no %s image in this archive (it lists: %s)", ErrInvalid, d.Digest, p.String(), strings.Join(have, ", "))
	}
	return a.pick(*best, p, depth+1)
}

// dockerManifest is one entry of a docker-archive's manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// dockerImages synthesizes an OCI manifest for each docker-archive image, so
// that every image in the store has one; its digest is therefore ours, not
// a registry's.
func (a *archive) dockerImages() ([]archiveImage, error) {
	var dm []dockerManifest
	if err := a.readJSON("manifest.json", &dm); err != nil {
		return nil, err
	}
	var out []archiveImage
	for _, e := range dm {
		cfg := a.lookup(e.Config)
		if cfg == nil {
			return nil, fmt.Errorf("%w: docker-archive lacks config %q", ErrInvalid, e.Config)
		}
		m := v1.Manifest{
			SchemaVersion: 2,
			MediaType:     types.OCIManifestSchema1,
			Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Size: cfg.size, Digest: mustHash(cfg.digest)},
		}
		for _, lp := range e.Layers {
			l := a.lookup(lp)
			if l == nil {
				return nil, fmt.Errorf("%w: docker-archive lacks layer %q", ErrInvalid, lp)
			}
			m.Layers = append(m.Layers, v1.Descriptor{MediaType: mediaTypeOf(l.magic), Size: l.size, Digest: mustHash(l.digest)})
		}
		raw, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		var names []string
		for _, t := range e.RepoTags {
			n, err := NormalizeRef(t)
			if err != nil {
				return nil, fmt.Errorf("manifest.json: %w", err)
			}
			names = append(names, n)
		}
		out = append(out, archiveImage{manifest: raw, names: names})
	}
	return out, nil
}

func mustHash(s string) v1.Hash {
	h, err := v1.NewHash(s)
	if err != nil {
		panic(err) // we computed s ourselves
	}
	return h
}
