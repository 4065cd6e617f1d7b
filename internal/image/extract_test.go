//go:build linux

package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	it "github.com/skiffhq/skiff/internal/image/imagetest"
)

// sandboxDirs makes base/root (the snapshot) and base/outside/victim (a file
// a malicious layer would like to touch), and returns a check that nothing
// outside root changed.
func sandboxDirs(t testing.TB) (base, root, outside string, check func()) {
	base = t.TempDir()
	root, outside = filepath.Join(base, "root"), filepath.Join(base, "outside")
	for _, d := range []string{root, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("intact"), 0o644); err != nil {
		t.Fatal(err)
	}
	check = func() {
		t.Helper()
		var got []string
		filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
			if p == root {
				return filepath.SkipDir
			}
			got = append(got, p)
			return nil
		})
		want := []string{base, outside, filepath.Join(outside, "victim")}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("outside the snapshot: %v", got)
		}
		if b, err := os.ReadFile(filepath.Join(outside, "victim")); err != nil || string(b) != "intact" {
			t.Errorf("victim: %q %v", b, err)
		}
	}
	return base, root, outside, check
}

func layerTar(t testing.TB, es ...it.Entry) []byte {
	b, err := it.Layer{Entries: es}.Tar()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExtractMalicious(t *testing.T) {
	type tc struct {
		name    string
		entries func(outside string) []it.Entry
		reject  bool
		inside  func(t *testing.T, root string) // what must be true inside
	}
	isFile := func(p, body string) func(*testing.T, string) {
		return func(t *testing.T, root string) {
			fi, err := os.Lstat(filepath.Join(root, p))
			if err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("%s: %v %v", p, fi, err)
			}
			if b, _ := os.ReadFile(filepath.Join(root, p)); string(b) != body {
				t.Errorf("%s = %q", p, b)
			}
		}
	}
	absent := func(p string) func(*testing.T, string) {
		return func(t *testing.T, root string) {
			if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
				t.Errorf("%s exists", p)
			}
		}
	}
	for _, c := range []tc{
		{name: "dotdot", reject: true, entries: func(string) []it.Entry { return []it.Entry{it.File("../outside/victim", "pwned", 0o644)} }},
		{name: "dotdot deep", reject: true, entries: func(string) []it.Entry { return []it.Entry{it.File("a/../../x", "pwned", 0o644)} }},
		{name: "absolute path is made relative", entries: func(string) []it.Entry { return []it.Entry{it.File("/etc/abs", "ok", 0o644)} },
			inside: isFile("etc/abs", "ok")},
		{name: "write through absolute dir symlink", entries: func(o string) []it.Entry {
			return []it.Entry{it.Symlink("evil", o), it.File("evil/pwned", "pwned", 0o644)}
		}, reject: true},
		{name: "write through relative dir symlink", entries: func(o string) []it.Entry {
			return []it.Entry{it.Symlink("evil", "../../../../../../../../"+o), it.File("evil/victim", "pwned", 0o644)}
		}, reject: true},
		{name: "symlink resolved in root", entries: func(o string) []it.Entry {
			return []it.Entry{it.Dir("real/"), it.Symlink("lnk", "/real"), it.File("lnk/f", "in", 0o644)}
		}, inside: isFile("real/f", "in")},
		{name: "overwrite file symlink", entries: func(o string) []it.Entry {
			return []it.Entry{it.Symlink("victim", filepath.Join(o, "victim")), it.File("victim", "pwned", 0o644)}
		}, inside: isFile("victim", "pwned")},
		{name: "dir replaced by symlink", entries: func(o string) []it.Entry {
			return []it.Entry{it.Dir("d/"), it.File("d/f", "x", 0o644), it.Symlink("d", o), it.File("d/g", "pwned", 0o644)}
		}, reject: true},
		{name: "hardlink dotdot", reject: true, entries: func(string) []it.Entry { return []it.Entry{it.Hardlink("hl", "../outside/victim")} }},
		{name: "hardlink absolute", reject: true, entries: func(o string) []it.Entry { return []it.Entry{it.Hardlink("hl", filepath.Join(o, "victim"))} }},
		{name: "hardlink via symlink", reject: true, entries: func(o string) []it.Entry {
			return []it.Entry{it.Symlink("d", o), it.Hardlink("hl", "d/victim")}
		}},
		{name: "hardlink to symlink to outside links the symlink", entries: func(o string) []it.Entry {
			return []it.Entry{it.Symlink("s", filepath.Join(o, "victim")), it.Hardlink("hl", "s"), it.File("hl", "new", 0o644)}
		}, inside: isFile("hl", "new")},
		{name: "devices skipped", entries: func(string) []it.Entry {
			return []it.Entry{it.Dir("dev/"), it.Device("dev/null", false, 1, 3), it.Device("dev/sda", true, 8, 0), it.File("ok", "ok", 0o644)}
		}, inside: func(t *testing.T, root string) {
			absent("dev/null")(t, root)
			absent("dev/sda")(t, root)
			isFile("ok", "ok")(t, root)
		}},
		{name: "bad whiteout", reject: true, entries: func(string) []it.Entry { return []it.Entry{it.File(".wh..", "", 0o644)} }},
		{name: "whiteout of parent via dotdot", reject: true, entries: func(string) []it.Entry { return []it.Entry{it.File("a/../.wh.x", "", 0o644)} }},
		{name: "forged overlay xattr dropped", entries: func(string) []it.Entry {
			d := it.Dir("d/")
			d.Header.PAXRecords = map[string]string{"SCHILY.xattr.trusted.overlay.opaque": "y", "SCHILY.xattr.user.note": "hi"}
			return []it.Entry{d}
		}, inside: func(t *testing.T, root string) {
			buf := make([]byte, 8)
			if _, err := unix.Lgetxattr(filepath.Join(root, "d"), "trusted.overlay.opaque", buf); err == nil {
				t.Error("trusted.overlay.opaque from the tar was applied")
			}
			if n, err := unix.Lgetxattr(filepath.Join(root, "d"), "user.note", buf); err != nil || string(buf[:n]) != "hi" {
				t.Logf("user xattr: %v (filesystem may not support it)", err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, root, outside, check := sandboxDirs(t)
			_, err := extractTar(context.Background(), root, bytes.NewReader(layerTar(t, c.entries(outside)...)))
			t.Logf("err: %v", err)
			if c.reject && !errors.Is(err, ErrInvalid) {
				t.Errorf("got %v, want ErrInvalid", err)
			}
			if !c.reject && err != nil {
				t.Errorf("got %v, want success", err)
			}
			if c.inside != nil && err == nil {
				c.inside(t, root)
			}
			check()
		})
	}
}

func TestExtractPreservesMetadata(t *testing.T) {
	_, root, _, check := sandboxDirs(t)
	mtime := time.Date(2020, 5, 6, 7, 8, 9, 0, time.UTC)
	suid := it.File("bin/su", "x", 0o4755)
	suid.Header.Uid, suid.Header.Gid = 1000, 2000
	suid.Header.ModTime = mtime
	caps := it.File("bin/ping", "p", 0o755)
	caps.Header.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}
	dir := it.Dir("bin/")
	dir.Header.Mode, dir.Header.ModTime = 0o750, mtime
	ro := it.Dir("ro/")
	ro.Header.Mode = 0o555
	link := it.Symlink("bin/sh", "su")
	link.Header.Uid = 7
	_, err := extractTar(context.Background(), root, bytes.NewReader(layerTar(t, dir, suid, caps, it.Hardlink("bin/su2", "bin/su"), link, ro, it.File("ro/f", "f", 0o444),
		it.Entry{Header: tar.Header{Name: "fifo", Typeflag: tar.TypeFifo, Mode: 0o640, ModTime: mtime}})))
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	unix.Lstat(filepath.Join(root, "bin/su"), &st)
	if st.Mode&0o7777 != 0o4755 || st.Uid != 1000 || st.Gid != 2000 || st.Mtim.Sec != mtime.Unix() || st.Nlink != 2 {
		t.Errorf("bin/su: mode %o uid %d gid %d mtime %d nlink %d", st.Mode, st.Uid, st.Gid, st.Mtim.Sec, st.Nlink)
	}
	unix.Lstat(filepath.Join(root, "bin"), &st)
	if st.Mode&0o7777 != 0o750 || st.Mtim.Sec != mtime.Unix() {
		t.Errorf("bin: mode %o mtime %d (children must not bump it)", st.Mode, st.Mtim.Sec)
	}
	unix.Lstat(filepath.Join(root, "bin/sh"), &st)
	if st.Uid != 7 || st.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Errorf("bin/sh: %+v", st)
	}
	if n, err := unix.Lgetxattr(filepath.Join(root, "bin/ping"), "security.capability", make([]byte, 64)); err != nil || n == 0 {
		t.Errorf("file capability lost: %v", err)
	}
	unix.Lstat(filepath.Join(root, "fifo"), &st)
	if st.Mode&unix.S_IFMT != unix.S_IFIFO || st.Mode&0o777 != 0o640 {
		t.Errorf("fifo: %o", st.Mode)
	}
	check()
}

func TestExtractRejectsSparse(t *testing.T) {
	// archive/tar cannot write sparse entries; GNU tar can.
	dir := t.TempDir()
	if err := os.Truncate(filepath.Join(dir, "x"), 0); err != nil {
		os.WriteFile(filepath.Join(dir, "x"), nil, 0o644)
	}
	if err := os.Truncate(filepath.Join(dir, "x"), 1<<30); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tar", "-C", dir, "--sparse", "-cf", "-", "x").Output()
	if err != nil {
		t.Skipf("GNU tar: %v", err)
	}
	_, root, _, check := sandboxDirs(t)
	if _, err := extractTar(context.Background(), root, bytes.NewReader(out)); !errors.Is(err, ErrInvalid) {
		t.Errorf("sparse entry: got %v, want ErrInvalid", err)
	}
	check()
}

func TestConcurrentImportUnpacksOnce(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var layers []it.Layer
	for i := range 3 {
		l := it.Layer{}
		for j := range 300 {
			l.Entries = append(l.Entries, it.File(fmt.Sprintf("l%d/f%d", i, j), strings.Repeat("y", 5000), 0o644))
		}
		layers = append(layers, l)
	}
	// Two images sharing all three layers, each imported three times at once.
	a := must(it.OCIFiles(it.Image{Names: []string{"a"}, Layers: layers})).Tar()
	b := must(it.DockerArchiveFiles(it.Image{Names: []string{"b"}, Layers: layers})).Tar()
	var wg sync.WaitGroup
	for i := range 6 {
		in := a
		if i%2 == 1 {
			in = b
		}
		wg.Go(func() {
			if _, err := s.Import(context.Background(), bytes.NewReader(in), nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := s.unpacked.Load(); n != 3 {
		t.Errorf("unpacked %d layers, want 3", n)
	}
}
