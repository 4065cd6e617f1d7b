package image_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"golang.org/x/sys/unix"

	"github.com/skiffhq/skiff/internal/image"
	"github.com/skiffhq/skiff/internal/image/imagetest"
)

var ctx = context.Background()

func openStore(t *testing.T, opts ...image.Option) *image.Store {
	t.Helper()
	s, err := image.Open(filepath.Join(t.TempDir(), "store"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func importFile(t *testing.T, s *image.Store, path string) error {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = s.Import(ctx, f, nil)
	return err
}

func importFiles(t *testing.T, s *image.Store, f imagetest.Files) error {
	t.Helper()
	_, err := s.Import(ctx, bytes.NewReader(f.Tar()), nil)
	return err
}

func snapshots(t *testing.T, s *image.Store) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(s.Dir(), "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func mustResolve(t *testing.T, s *image.Store, ref string) *image.Resolved {
	t.Helper()
	r, err := s.Resolve(ctx, ref)
	if err != nil {
		t.Fatalf("Resolve(%q): %v", ref, err)
	}
	return r
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// base and top share "base" in several tests.
var (
	baseLayer = imagetest.Layer{Entries: []imagetest.Entry{
		imagetest.Dir("etc/"), imagetest.File("etc/os-release", "base\n", 0o644),
		imagetest.Dir("a/"), imagetest.File("a/keep", "keep\n", 0o644), imagetest.File("a/gone", "gone\n", 0o644),
		imagetest.Dir("b/"), imagetest.File("b/old", "old\n", 0o644),
	}}
	topLayer = imagetest.Layer{Entries: []imagetest.Entry{
		imagetest.Whiteout("a/gone"),
		imagetest.Dir("b/"), imagetest.Opaque("b"), imagetest.File("b/new", "new\n", 0o600),
		imagetest.File("top", "top\n", 0o755),
	}, Compression: imagetest.Zstd}
)

func TestImportOCIBusybox(t *testing.T) {
	s := openStore(t)
	tarPath := imagetest.BuildBusybox(t, t.TempDir(), "busybox:latest")
	var phases []image.Phase
	f, _ := os.Open(tarPath)
	defer f.Close()
	imgs, err := s.Import(ctx, f, func(p image.Progress) { phases = append(phases, p.Phase) })
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Ref != "docker.io/library/busybox:latest" || imgs[0].Layers != 1 || imgs[0].Size < 1<<20 {
		t.Fatalf("imported %+v", imgs)
	}
	if !slices.Contains(phases, image.PhaseReading) || phases[len(phases)-1] != image.PhaseDone {
		t.Errorf("progress phases %v", phases)
	}
	r := mustResolve(t, s, "busybox")
	if r.Ref != "docker.io/library/busybox:latest" || r.Digest != imgs[0].Digest || !strings.HasPrefix(r.ID, "sha256:") {
		t.Errorf("resolved %+v", r)
	}
	if !slices.Equal(r.Config.Cmd, []string{"sh"}) || len(r.Config.Env) != 1 {
		t.Errorf("config %+v", r.Config)
	}
	bb := filepath.Join(r.LayerDirs[0], "bin", "busybox")
	out, err := exec.Command(bb, "echo", "hello").Output()
	if err != nil || string(out) != "hello\n" {
		t.Fatalf("run unpacked busybox: %q %v", out, err)
	}
	if l, err := os.Readlink(filepath.Join(r.LayerDirs[0], "bin", "sh")); err != nil || l != "/bin/busybox" {
		t.Errorf("bin/sh -> %q %v", l, err)
	}
	if fi, err := os.Stat(filepath.Join(r.LayerDirs[0], "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("tmp mode: %v %v", fi.Mode(), err)
	}
	if n, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp")); len(n) != 0 {
		t.Errorf("tmp/ not cleaned: %v", n)
	}
}

func TestBuildTestImageScript(t *testing.T) {
	if _, err := os.Stat(imagetest.BusyboxPath); err != nil {
		t.Skip("no /bin/busybox")
	}
	out := filepath.Join(t.TempDir(), "bb.tar")
	cmd := exec.Command("../../scripts/build-test-image.sh", out, "example.com/tools/bb:1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	s := openStore(t)
	if err := importFile(t, s, out); err != nil {
		t.Fatal(err)
	}
	r := mustResolve(t, s, "example.com/tools/bb:1")
	if b, err := exec.Command(filepath.Join(r.LayerDirs[0], "bin/busybox"), "true").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, b)
	}
	if !slices.Equal(r.Config.Cmd, []string{"sh"}) {
		t.Errorf("cmd %v", r.Config.Cmd)
	}
}

func TestImportDockerArchive(t *testing.T) {
	s := openStore(t)
	img := imagetest.Image{
		Names:      []string{"app:v1", "registry.local:5000/team/app:v1"},
		Layers:     []imagetest.Layer{baseLayer, topLayer},
		Entrypoint: []string{"/top"}, Cmd: []string{"-x"}, Env: []string{"A=1"}, WorkingDir: "/a", User: "65534",
	}
	p := imagetest.WriteDockerArchive(t, filepath.Join(t.TempDir(), "d.tar"), img)
	if err := importFile(t, s, p); err != nil {
		t.Fatal(err)
	}
	r := mustResolve(t, s, "docker.io/library/app:v1")
	r2 := mustResolve(t, s, "registry.local:5000/team/app:v1")
	if r.Digest != r2.Digest || len(r.LayerDirs) != 2 {
		t.Fatalf("%+v %+v", r, r2)
	}
	want := image.ImageConfig{Entrypoint: []string{"/top"}, Cmd: []string{"-x"}, Env: []string{"A=1"}, WorkingDir: "/a", User: "65534"}
	if !slices.Equal(r.Config.Entrypoint, want.Entrypoint) || !slices.Equal(r.Config.Cmd, want.Cmd) || r.Config.WorkingDir != "/a" || r.Config.User != "65534" {
		t.Errorf("config %+v", r.Config)
	}
	if got := readFile(t, filepath.Join(r.LayerDirs[0], "a/keep")); got != "keep\n" {
		t.Errorf("lowest layer first: %q", got)
	}
	if got := readFile(t, filepath.Join(r.LayerDirs[1], "top")); got != "top\n" {
		t.Errorf("top layer: %q", got)
	}
	list, _ := s.List(ctx)
	if len(list) != 2 {
		t.Errorf("list %+v", list)
	}
}

func TestResolveForms(t *testing.T) {
	s := openStore(t)
	if err := importFiles(t, s, must(imagetest.OCIFiles(imagetest.Image{Names: []string{"busybox"}, Layers: []imagetest.Layer{baseLayer}}))); err != nil {
		t.Fatal(err)
	}
	r := mustResolve(t, s, "busybox")
	hex := strings.TrimPrefix(r.Digest, "sha256:")
	for _, ref := range []string{"busybox:latest", "docker.io/library/busybox", "index.docker.io/library/busybox:latest",
		r.Digest, r.ID, hex[:12], strings.TrimPrefix(r.ID, "sha256:")[:8], "busybox@" + r.Digest} {
		if got := mustResolve(t, s, ref); got.Digest != r.Digest {
			t.Errorf("%s resolved to %s", ref, got.Digest)
		}
	}
	for _, ref := range []string{"busybox:other", "nginx", "sha256:" + strings.Repeat("0", 64), "busybox@sha256:" + strings.Repeat("1", 64), "ffff"} {
		_, err := s.Resolve(ctx, ref)
		if !errors.Is(err, image.ErrNotFound) || !strings.Contains(err.Error(), "skiff image import") {
			t.Errorf("Resolve(%q) = %v, want ErrNotFound with a hint", ref, err)
		}
	}
	for _, ref := range []string{"", "Busybox", "sha256:xyz", "a b"} {
		if _, err := s.Resolve(ctx, ref); !errors.Is(err, image.ErrInvalid) {
			t.Errorf("Resolve(%q) = %v, want ErrInvalid", ref, err)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestSharedLayerUnpackedOnce(t *testing.T) {
	s := openStore(t)
	other := imagetest.Layer{Entries: []imagetest.Entry{imagetest.File("other", "x", 0o644)}, Compression: imagetest.None}
	if err := importFiles(t, s, must(imagetest.OCIFiles(imagetest.Image{Names: []string{"one"}, Layers: []imagetest.Layer{baseLayer, topLayer}}))); err != nil {
		t.Fatal(err)
	}
	// The same base again, in another archive format and another image.
	if err := importFiles(t, s, must(imagetest.DockerArchiveFiles(imagetest.Image{Names: []string{"two"}, Layers: []imagetest.Layer{baseLayer, other}}))); err != nil {
		t.Fatal(err)
	}
	one, two := mustResolve(t, s, "one"), mustResolve(t, s, "two")
	if one.LayerDirs[0] != two.LayerDirs[0] {
		t.Errorf("base layer not shared: %v %v", one.LayerDirs, two.LayerDirs)
	}
	if n := snapshots(t, s); len(n) != 3 {
		t.Errorf("snapshots %v, want 3", n)
	}
}

func TestWhiteoutsAndOverlay(t *testing.T) {
	s := openStore(t)
	if err := importFiles(t, s, must(imagetest.OCIFiles(imagetest.Image{Names: []string{"wh"}, Layers: []imagetest.Layer{baseLayer, topLayer}}))); err != nil {
		t.Fatal(err)
	}
	r := mustResolve(t, s, "wh")
	base, top := r.LayerDirs[0], r.LayerDirs[1]
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(top, "a/gone"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("a/gone is not a 0/0 whiteout: %+v %v", st, err)
	}
	if _, err := os.Lstat(filepath.Join(top, "a/.wh.gone")); err == nil {
		t.Error(".wh. file left in snapshot")
	}
	buf := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(top, "b"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("b not opaque: %q %v", buf[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(top, "b/.wh..wh..opq")); err == nil {
		t.Error("opaque marker file left in snapshot")
	}
	if fi, err := os.Stat(filepath.Join(top, "b/new")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("b/new: %v %v", fi, err)
	}

	// The merged view, as a sandbox will mount it.
	mnt := t.TempDir()
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+top+":"+base); err != nil {
		t.Skipf("cannot mount overlayfs here (needs root): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	for p, want := range map[string]bool{"a/keep": true, "a/gone": false, "b/old": false, "b/new": true, "top": true, "etc/os-release": true} {
		if _, err := os.Lstat(filepath.Join(mnt, p)); (err == nil) != want {
			t.Errorf("merged %s: exists=%v, want %v", p, err == nil, want)
		}
	}
}

func TestTamperedBlobRejected(t *testing.T) {
	img := imagetest.Image{Names: []string{"t"}, Layers: []imagetest.Layer{baseLayer}}
	t.Run("layer blob", func(t *testing.T) {
		s := openStore(t)
		f := must(imagetest.OCIFiles(img))
		blob, _, _, _ := baseLayer.Blob()
		name := "blobs/sha256/" + strings.TrimPrefix(imagetest.Digest(blob), "sha256:")
		evil := imagetest.Layer{Entries: []imagetest.Entry{imagetest.File("etc/os-release", "evil\n", 0o644)}}
		f[name], _, _, _ = evil.Blob()
		err := importFiles(t, s, f)
		if !errors.Is(err, image.ErrCorrupt) {
			t.Fatalf("got %v, want ErrCorrupt", err)
		}
		assertEmpty(t, s)
	})
	t.Run("diffID", func(t *testing.T) {
		// Blobs match their digests, but the config lies about the layer's
		// content: caught after unpacking, before the snapshot is visible.
		s := openStore(t)
		f := must(imagetest.OCIFiles(img))
		_, _, diffID, _ := baseLayer.Blob()
		for name, b := range f {
			if bytes.Contains(b, []byte(diffID)) {
				delete(f, name)
				cfg := bytes.ReplaceAll(b, []byte(diffID), []byte("sha256:"+strings.Repeat("a", 64)))
				f = rewriteConfig(t, f, b, cfg)
				break
			}
		}
		err := importFiles(t, s, f)
		if !errors.Is(err, image.ErrCorrupt) {
			t.Fatalf("got %v, want ErrCorrupt", err)
		}
		assertEmpty(t, s)
	})
	t.Run("manifest", func(t *testing.T) {
		s := openStore(t)
		f := must(imagetest.OCIFiles(img))
		for name, b := range f {
			if bytes.Contains(b, []byte(`"layers"`)) {
				f[name] = bytes.Replace(b, []byte(`"schemaVersion":2`), []byte(`"schemaVersion":2 `), 1)
			}
		}
		if err := importFiles(t, s, f); !errors.Is(err, image.ErrCorrupt) {
			t.Fatalf("got %v, want ErrCorrupt", err)
		}
		assertEmpty(t, s)
	})
}

// rewriteConfig replaces config blob old with cfg and fixes the manifest and
// index digests so that only the config's content is wrong.
func rewriteConfig(t *testing.T, f imagetest.Files, old, cfg []byte) imagetest.Files {
	t.Helper()
	oldD, newD := imagetest.Digest(old), imagetest.Digest(cfg)
	f["blobs/sha256/"+strings.TrimPrefix(newD, "sha256:")] = cfg
	for name, b := range f {
		if bytes.Contains(b, []byte(oldD)) && strings.HasPrefix(name, "blobs/") {
			m := bytes.ReplaceAll(b, []byte(oldD), []byte(newD))
			m = bytes.ReplaceAll(m, []byte(`"size":`+itoa(len(old))), []byte(`"size":`+itoa(len(cfg))))
			delete(f, name)
			md := imagetest.Digest(m)
			f["blobs/sha256/"+strings.TrimPrefix(md, "sha256:")] = m
			f["index.json"] = bytes.ReplaceAll(f["index.json"], []byte(imagetest.Digest(b)), []byte(md))
			f["index.json"] = bytes.ReplaceAll(f["index.json"], []byte(`"size":`+itoa(len(b))), []byte(`"size":`+itoa(len(m))))
		}
	}
	return f
}

func itoa(n int) string { return strconv.Itoa(n) }

func assertEmpty(t *testing.T, s *image.Store) {
	t.Helper()
	if n := snapshots(t, s); len(n) != 0 {
		t.Errorf("snapshots left: %v", n)
	}
	if l, _ := s.List(ctx); len(l) != 0 {
		t.Errorf("images left: %+v", l)
	}
	if n, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp")); len(n) != 0 {
		t.Errorf("tmp/ not cleaned: %v", n)
	}
}

func TestMultiArchPicksHostPlatform(t *testing.T) {
	mk := func(arch string) imagetest.Image {
		return imagetest.Image{Arch: arch, Layers: []imagetest.Layer{{Entries: []imagetest.Entry{imagetest.File("arch", arch, 0o644)}}}}
	}
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	f := must(imagetest.OCIMultiArchFiles("multi:1", mk(other), mk(runtime.GOARCH), mk("s390x")))
	s := openStore(t)
	if err := importFiles(t, s, f); err != nil {
		t.Fatal(err)
	}
	r := mustResolve(t, s, "multi:1")
	if got := readFile(t, filepath.Join(r.LayerDirs[0], "arch")); got != runtime.GOARCH {
		t.Errorf("picked %s", got)
	}
	s2 := openStore(t, image.WithPlatform(platform("linux", "riscv64")))
	if err := importFiles(t, s2, f); !errors.Is(err, image.ErrInvalid) || !strings.Contains(err.Error(), "linux/riscv64") {
		t.Errorf("no matching platform: %v", err)
	}
}

func TestConcurrentImports(t *testing.T) {
	s := openStore(t, image.WithParallelUnpack(2))
	big := imagetest.Layer{}
	for i := range 200 {
		big.Entries = append(big.Entries, imagetest.File("f/"+strconv.Itoa(i), strings.Repeat("x", 10000), 0o644))
	}
	tarball := must(imagetest.OCIFiles(imagetest.Image{Names: []string{"c"}, Layers: []imagetest.Layer{baseLayer, big, topLayer}})).Tar()
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Go(func() { _, errs[i] = s.Import(ctx, bytes.NewReader(tarball), nil) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := snapshots(t, s); len(n) != 3 {
		t.Errorf("snapshots %v", n)
	}
	if l, _ := s.List(ctx); len(l) != 1 {
		t.Errorf("list %+v", l)
	}
	if n, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp")); len(n) != 0 {
		t.Errorf("tmp/ not cleaned: %v", n)
	}
}

func TestGarbageInput(t *testing.T) {
	s := openStore(t)
	notImage := imagetest.Files{"hello.txt": []byte("hi")}.Tar()
	badIndex := imagetest.Files{"index.json": []byte("{not json"), "oci-layout": []byte("{}")}.Tar()
	missing := imagetest.Files{"index.json": []byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + strings.Repeat("b", 64) + `","size":3}]}`)}.Tar()
	for name, in := range map[string][]byte{
		"empty":        nil,
		"random":       bytes.Repeat([]byte("garbage!"), 1000),
		"gzip garbage": {0x1f, 0x8b, 8, 0, 0, 0},
		"not an image": notImage,
		"bad index":    badIndex,
		"missing blob": missing,
		"truncated":    must(imagetest.OCIFiles(imagetest.Image{Layers: []imagetest.Layer{baseLayer}})).Tar()[:3000],
	} {
		_, err := s.Import(ctx, bytes.NewReader(in), nil)
		if !errors.Is(err, image.ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	assertEmpty(t, s)
}

func TestRemoveAndGC(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := image.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	other := imagetest.Layer{Entries: []imagetest.Entry{imagetest.File("other", "x", 0o644)}}
	if err := importFiles(t, s, must(imagetest.OCIFiles(
		imagetest.Image{Names: []string{"one"}, Layers: []imagetest.Layer{baseLayer, topLayer}},
		imagetest.Image{Names: []string{"two", "two:alias"}, Layers: []imagetest.Layer{baseLayer, other}}))); err != nil {
		t.Fatal(err)
	}
	one := mustResolve(t, s, "one")
	before, _ := s.DiskUsage(ctx)
	if before.Images != 2 || before.Snapshots != 3 || before.SnapshotBytes == 0 || before.BlobBytes == 0 {
		t.Fatalf("usage %+v", before)
	}
	if err := s.Remove(ctx, "nope"); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("remove missing: %v", err)
	}
	if err := s.Remove(ctx, "one"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(ctx, "one"); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("resolve removed tag: %v", err)
	}
	// In use: kept, still resolvable by digest.
	if _, err := s.GC(ctx, func(d string) bool { return d == one.Digest }); err != nil {
		t.Fatal(err)
	}
	mustResolve(t, s, one.Digest)
	freed, err := s.GC(ctx, nil)
	if err != nil || freed == 0 {
		t.Fatalf("gc: %d %v", freed, err)
	}
	if n := snapshots(t, s); len(n) != 2 {
		t.Errorf("snapshots after gc %v", n)
	}
	if _, err := os.Stat(one.LayerDirs[0]); err != nil {
		t.Errorf("shared base removed: %v", err)
	}
	// Remove by digest drops every tag.
	two := mustResolve(t, s, "two")
	if err := s.Remove(ctx, two.Digest); err != nil {
		t.Fatal(err)
	}
	if err := s.Tag(ctx, two.Digest, "three:1"); err != nil {
		t.Fatal(err)
	}
	// State survives a reopen; a second Open of a live dir is refused.
	if _, err := image.Open(dir); err == nil {
		t.Error("second Open of a locked store succeeded")
	}
	s.Close()
	s, err = image.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	list, _ := s.List(ctx)
	if len(list) != 1 || list[0].Ref != "docker.io/library/three:1" || list[0].Digest != two.Digest {
		t.Errorf("after reopen: %+v", list)
	}
	mustResolve(t, s, "three:1")
}

func TestPutFromV1Image(t *testing.T) {
	// Put accepts any v1.Image; round-trip one through go-containerregistry's
	// OCI layout reader, the shape a registry pull will have.
	src := openStore(t)
	img := imagetest.Image{Layers: []imagetest.Layer{baseLayer, topLayer}, Cmd: []string{"x"}}
	v1img := layoutImage(t, must(imagetest.OCIFiles(img)))
	got, err := src.Put(ctx, v1img, []string{"put:1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := mustResolve(t, src, "put:1")
	if got.Digest != r.Digest || len(r.LayerDirs) != 2 || r.Config.Cmd[0] != "x" {
		t.Errorf("%+v %+v", got, r)
	}
}

func BenchmarkImportBusybox(b *testing.B) {
	img, err := imagetest.BusyboxImage("busybox")
	if err != nil {
		b.Skip(err)
	}
	tarball := must(imagetest.OCIFiles(img)).Tar()
	b.SetBytes(int64(len(tarball)))
	for b.Loop() {
		s, err := image.Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Import(ctx, bytes.NewReader(tarball), nil); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

func platform(os, arch string) v1.Platform { return v1.Platform{OS: os, Architecture: arch} }

// layoutImage writes f as a directory and opens its one image with
// go-containerregistry's layout package.
func layoutImage(t *testing.T, f imagetest.Files) v1.Image {
	t.Helper()
	dir := t.TempDir()
	for name, b := range f {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}
