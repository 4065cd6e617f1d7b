// Package imagetest builds image tarballs for tests, without Docker: OCI
// image layouts and docker-archives, from layers described entry by entry
// (malicious ones included), and a runnable busybox image from the host's
// /bin/busybox (Debian's busybox-static).
package imagetest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Epoch is the mtime of every generated entry, so builds are reproducible.
var Epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Entry is one tar entry of a layer. Body is a regular file's content.
type Entry struct {
	Header tar.Header
	Body   []byte
}

func hdr(name string, typ byte, mode int64) tar.Header {
	return tar.Header{Name: name, Typeflag: typ, Mode: mode, ModTime: Epoch, Format: tar.FormatPAX}
}

// File is a regular file.
func File(name, body string, mode int64) Entry {
	h := hdr(name, tar.TypeReg, mode)
	h.Size = int64(len(body))
	return Entry{Header: h, Body: []byte(body)}
}

// Dir is a directory, mode 0755.
func Dir(name string) Entry { return Entry{Header: hdr(name, tar.TypeDir, 0o755)} }

// Symlink is a symbolic link name -> target.
func Symlink(name, target string) Entry {
	h := hdr(name, tar.TypeSymlink, 0o777)
	h.Linkname = target
	return Entry{Header: h}
}

// Hardlink is a hard link name -> target (a name in the archive).
func Hardlink(name, target string) Entry {
	h := hdr(name, tar.TypeLink, 0o644)
	h.Linkname = target
	return Entry{Header: h}
}

// Whiteout deletes p (dir/base) from lower layers: an entry dir/.wh.base.
func Whiteout(p string) Entry {
	dir, base := filepath.Split(p)
	return File(dir+".wh."+base, "", 0o644)
}

// Opaque hides everything lower layers have in dir: dir/.wh..wh..opq.
func Opaque(dir string) Entry { return File(strings.TrimSuffix(dir, "/")+"/.wh..wh..opq", "", 0o644) }

// Device is a character (or block) device node.
func Device(name string, block bool, major, minor int64) Entry {
	typ := byte(tar.TypeChar)
	if block {
		typ = tar.TypeBlock
	}
	h := hdr(name, typ, 0o666)
	h.Devmajor, h.Devminor = major, minor
	return Entry{Header: h}
}

// Compression of a layer blob.
type Compression int

const (
	Gzip Compression = iota
	None
	Zstd
)

// Layer is a list of tar entries, written in order.
type Layer struct {
	Entries     []Entry
	Compression Compression
}

// Tar returns the uncompressed layer tar.
func (l Layer) Tar() ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range l.Entries {
		h := e.Header
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("entry %q: %w", h.Name, err)
		}
		if _, err := tw.Write(e.Body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Blob returns the layer as stored (compressed), its media type and diffID.
func (l Layer) Blob() (blob []byte, mediaType, diffID string, err error) {
	raw, err := l.Tar()
	if err != nil {
		return nil, "", "", err
	}
	diffID = Digest(raw)
	switch l.Compression {
	case None:
		return raw, "application/vnd.oci.image.layer.v1.tar", diffID, nil
	case Zstd:
		enc, err := zstd.NewWriter(nil)
		if err != nil {
			return nil, "", "", err
		}
		return enc.EncodeAll(raw, nil), "application/vnd.oci.image.layer.v1.tar+zstd", diffID, nil
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(raw)
	zw.Close()
	return b.Bytes(), "application/vnd.oci.image.layer.v1.tar+gzip", diffID, nil
}

// Digest is "sha256:" + the hex SHA-256 of b.
func Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// Image is an image to build.
type Image struct {
	Names      []string // refs: OCI index annotations, docker RepoTags
	Layers     []Layer  // lowest first
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
	Arch       string // default runtime.GOARCH
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
}

// Files is an archive's content: name -> bytes.
type Files map[string][]byte

func (f Files) put(b []byte) descriptor {
	d := Digest(b)
	f["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")] = b
	return descriptor{Digest: d, Size: len(b)}
}

// built is an image's blobs, added to files.
type built struct {
	manifest descriptor
	config   string   // config name in files
	layers   []string // layer names in files
	arch     string
}

func (img Image) build(f Files) (built, error) {
	arch := img.Arch
	if arch == "" {
		arch = runtime.GOARCH
	}
	var layers []descriptor
	var diffIDs, names []string
	for _, l := range img.Layers {
		blob, mt, diffID, err := l.Blob()
		if err != nil {
			return built{}, err
		}
		d := f.put(blob)
		d.MediaType = mt
		layers = append(layers, d)
		diffIDs = append(diffIDs, diffID)
		names = append(names, "blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:"))
	}
	if diffIDs == nil {
		diffIDs, layers = []string{}, []descriptor{}
	}
	cfg, err := json.Marshal(map[string]any{
		"created":      Epoch,
		"architecture": arch,
		"os":           "linux",
		"config": map[string]any{
			"Entrypoint": img.Entrypoint, "Cmd": img.Cmd, "Env": img.Env,
			"WorkingDir": img.WorkingDir, "User": img.User,
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	if err != nil {
		return built{}, err
	}
	cd := f.put(cfg)
	cd.MediaType = "application/vnd.oci.image.config.v1+json"
	man, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        cd,
		"layers":        layers,
	})
	if err != nil {
		return built{}, err
	}
	md := f.put(man)
	md.MediaType = "application/vnd.oci.image.manifest.v1+json"
	return built{manifest: md, config: "blobs/sha256/" + strings.TrimPrefix(cd.Digest, "sha256:"), layers: names, arch: arch}, nil
}

func layoutFiles(f Files, manifests []descriptor) error {
	idx, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests})
	if err != nil {
		return err
	}
	f["index.json"] = idx
	f["oci-layout"] = []byte(`{"imageLayoutVersion":"1.0.0"}`)
	return nil
}

// OCIFiles lays out imgs as an OCI image layout; each name becomes one
// index.json entry (an unnamed image gets one unnamed entry).
func OCIFiles(imgs ...Image) (Files, error) {
	f := Files{}
	var ms []descriptor
	for _, img := range imgs {
		b, err := img.build(f)
		if err != nil {
			return nil, err
		}
		names := img.Names
		if len(names) == 0 {
			names = []string{""}
		}
		for _, n := range names {
			d := b.manifest
			if n != "" {
				d.Annotations = map[string]string{"org.opencontainers.image.ref.name": n}
			}
			ms = append(ms, d)
		}
	}
	return f, layoutFiles(f, ms)
}

// OCIMultiArchFiles lays out one multi-platform image named name: an index
// listing one manifest per image (each with its Arch).
func OCIMultiArchFiles(name string, imgs ...Image) (Files, error) {
	f := Files{}
	var ms []descriptor
	for _, img := range imgs {
		b, err := img.build(f)
		if err != nil {
			return nil, err
		}
		d := b.manifest
		d.Platform = &platform{OS: "linux", Architecture: b.arch}
		ms = append(ms, d)
	}
	inner, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": ms})
	if err != nil {
		return nil, err
	}
	d := f.put(inner)
	d.MediaType = "application/vnd.oci.image.index.v1+json"
	d.Annotations = map[string]string{"io.containerd.image.name": name}
	return f, layoutFiles(f, []descriptor{d})
}

// DockerArchiveFiles lays out imgs as `docker save` does (the legacy
// format: <id>/layer.tar, <config>.json, manifest.json), with layers
// uncompressed unless a layer asks for compression.
func DockerArchiveFiles(imgs ...Image) (Files, error) {
	f := Files{}
	var entries []map[string]any
	for _, img := range imgs {
		for i := range img.Layers {
			if img.Layers[i].Compression == Gzip {
				img.Layers = append([]Layer(nil), img.Layers...)
				img.Layers[i].Compression = None
			}
		}
		blobs := Files{}
		b, err := img.build(blobs)
		if err != nil {
			return nil, err
		}
		cfg := blobs[b.config]
		cfgName := strings.TrimPrefix(Digest(cfg), "sha256:") + ".json"
		f[cfgName] = cfg
		var layers []string
		for _, l := range b.layers {
			id := strings.TrimPrefix(Digest(blobs[l]), "sha256:")
			f[id+"/layer.tar"] = blobs[l]
			f[id+"/VERSION"] = []byte("1.0")
			layers = append(layers, id+"/layer.tar")
		}
		tags := img.Names
		if tags == nil {
			tags = []string{}
		}
		entries = append(entries, map[string]any{"Config": cfgName, "RepoTags": tags, "Layers": layers})
	}
	m, err := json.Marshal(entries)
	if err != nil {
		return nil, err
	}
	f["manifest.json"] = m
	return f, nil
}

// Tar writes files as a tar, sorted by name, "manifest.json" and
// "index.json" last as docker does (importers must not rely on order).
func (f Files) Tar() []byte {
	names := make([]string, 0, len(f))
	for n := range f {
		names = append(names, n)
	}
	last := func(n string) bool { return n == "manifest.json" || n == "index.json" }
	sort.Slice(names, func(i, j int) bool {
		if last(names[i]) != last(names[j]) {
			return last(names[j])
		}
		return names[i] < names[j]
	})
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, n := range names {
		tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(f[n])), ModTime: Epoch})
		tw.Write(f[n])
	}
	tw.Close()
	return b.Bytes()
}

// Write writes files as a tar at path.
func (f Files) Write(t testing.TB, path string) string {
	t.Helper()
	if err := os.WriteFile(path, f.Tar(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// WriteOCI writes imgs as an OCI layout tar at path and returns path.
func WriteOCI(t testing.TB, path string, imgs ...Image) string {
	t.Helper()
	f, err := OCIFiles(imgs...)
	if err != nil {
		t.Fatal(err)
	}
	return f.Write(t, path)
}

// WriteDockerArchive writes imgs as a docker-archive tar at path.
func WriteDockerArchive(t testing.TB, path string, imgs ...Image) string {
	t.Helper()
	f, err := DockerArchiveFiles(imgs...)
	if err != nil {
		t.Fatal(err)
	}
	return f.Write(t, path)
}

// BusyboxPath is where Debian's busybox-static puts the binary.
const BusyboxPath = "/bin/busybox"

// BusyboxLayer is a rootfs with bin/busybox, its applets as symlinks where
// `busybox --list-full` puts them, /etc/passwd, /etc/group and /tmp.
func BusyboxLayer() (Layer, error) {
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return Layer{}, fmt.Errorf("%w (apt-get install -y busybox-static)", err)
	}
	out, err := exec.Command(BusyboxPath, "--list-full").Output()
	if err != nil {
		return Layer{}, fmt.Errorf("busybox --list-full: %w", err)
	}
	l := Layer{Entries: []Entry{
		Dir("bin/"), Dir("sbin/"), Dir("usr/"), Dir("usr/bin/"), Dir("usr/sbin/"), Dir("etc/"),
		File("bin/busybox", string(bin), 0o755),
		File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644),
		File("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644),
		Dir("root/"),
	}}
	tmp := Dir("tmp/")
	tmp.Header.Mode = 0o1777
	l.Entries = append(l.Entries, tmp)
	for _, a := range strings.Fields(string(out)) {
		if a == "bin/busybox" || !strings.Contains(a, "/") {
			continue
		}
		l.Entries = append(l.Entries, Symlink(a, "/bin/busybox"))
	}
	return l, nil
}

// BusyboxImage is a one-layer busybox image running sh.
func BusyboxImage(ref string) (Image, error) {
	l, err := BusyboxLayer()
	if err != nil {
		return Image{}, err
	}
	var names []string
	if ref != "" {
		names = []string{ref}
	}
	return Image{
		Names:  names,
		Layers: []Layer{l},
		Cmd:    []string{"sh"},
		Env:    []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	}, nil
}

// BuildBusybox writes a busybox OCI layout tar named ref into dir and
// returns its path; it skips the test when /bin/busybox is missing.
func BuildBusybox(t testing.TB, dir, ref string) string {
	t.Helper()
	img, err := BusyboxImage(ref)
	if err != nil {
		t.Skipf("no busybox image: %v", err)
	}
	return WriteOCI(t, filepath.Join(dir, "busybox-oci.tar"), img)
}
