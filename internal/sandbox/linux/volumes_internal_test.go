package linux

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// TestWriteFiles checks the atomic layout of a files volume: generations
// behind a ..data link, one link per top-level name, stale names and old
// generations removed, modes kept, and a volume of the earlier flat layout
// taken over.
func TestWriteFiles(t *testing.T) {
	dir := t.TempDir()
	read := func(p string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	names := func() []string {
		ents, _ := os.ReadDir(dir)
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		sort.Strings(out)
		return out
	}
	// The earlier layout: plain files and directories.
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "x"), []byte("flat"), 0o644); err != nil {
		t.Fatal(err)
	}
	v1 := []sandbox.File{{Path: "a", Content: []byte("a1"), Mode: 0o600}, {Path: "sub/x", Content: []byte("x1")}, {Path: "gone", Content: []byte("g")}}
	if err := writeFiles(dir, v1, 0); err != nil {
		t.Fatal(err)
	}
	if read("a") != "a1" || read("sub/x") != "x1" || read("gone") != "g" {
		t.Fatalf("v1: a=%q sub/x=%q", read("a"), read("sub/x"))
	}
	if fi, _ := os.Stat(filepath.Join(dir, "a")); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode of a: %v, want 0600", fi.Mode().Perm())
	}
	if l, _ := os.Readlink(filepath.Join(dir, "sub")); l != "..data/sub" {
		t.Errorf("sub links to %q", l)
	}
	gen1, _ := os.Readlink(filepath.Join(dir, dataLink))

	v2 := []sandbox.File{{Path: "a", Content: []byte("a2"), Mode: 0o640}, {Path: "sub/x", Content: []byte("x2")}, {Path: "new", Content: []byte("n")}}
	if err := writeFiles(dir, v2, 0); err != nil {
		t.Fatal(err)
	}
	if read("a") != "a2" || read("sub/x") != "x2" || read("new") != "n" {
		t.Fatalf("v2: a=%q sub/x=%q new=%q", read("a"), read("sub/x"), read("new"))
	}
	if _, err := os.Lstat(filepath.Join(dir, "gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("gone still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, gen1)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old generation %s still there", gen1)
	}
	gen2, _ := os.Readlink(filepath.Join(dir, dataLink))
	want := []string{gen2, dataLink, "a", "new", "sub"}
	sort.Strings(want)
	if got := names(); len(got) != len(want) {
		t.Errorf("entries %v, want %v", got, want)
	}
	// Files the workload wrote next to ours are left alone.
	if err := os.WriteFile(filepath.Join(dir, "mine"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeFiles(dir, nil, 0); err != nil {
		t.Fatal(err)
	}
	gen3, _ := os.Readlink(filepath.Join(dir, dataLink))
	if got := names(); len(got) != 3 || got[2] != "mine" {
		t.Errorf("after emptying: %v (generation %s)", got, gen3)
	}
	for _, bad := range []string{"../x", "/abs", "..data", "..gen_1/x", ""} {
		if err := writeFiles(dir, []sandbox.File{{Path: bad}}, 0); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("path %q: %v, want ErrInvalid", bad, err)
		}
	}
}
