//go:build linux

package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	it "github.com/skiffhq/skiff/internal/image/imagetest"
)

// The fuzz targets take the two untrusted inputs: a whole image archive
// (Import) and one layer tar (extractTar). Seeds live in testdata/fuzz;
// SKIFF_WRITE_FUZZ_SEEDS=1 go test -run TestWriteFuzzSeeds rewrites them.
// Run: go test -run - -fuzz FuzzImport -fuzzminimizetime 5s ./internal/image
// (or FuzzExtract). Tar inputs are large, so the default minimization
// (60s per new input) looks like a stall.

func seedImages() map[string]it.Files {
	small := it.Layer{Entries: []it.Entry{it.Dir("a/"), it.File("a/f", "hello", 0o644), it.Symlink("a/l", "/a/f"), it.Hardlink("a/h", "a/f")}}
	wh := it.Layer{Entries: []it.Entry{it.Whiteout("a/f"), it.Opaque("a"), it.File("a/g", "g", 0o600)}, Compression: it.None}
	img := it.Image{Names: []string{"seed:1"}, Layers: []it.Layer{small, wh}, Cmd: []string{"sh"}}
	return map[string]it.Files{
		"oci":       must(it.OCIFiles(img)),
		"docker":    must(it.DockerArchiveFiles(img)),
		"multiarch": must(it.OCIMultiArchFiles("seed:multi", it.Image{Layers: []it.Layer{small}}, it.Image{Layers: []it.Layer{wh}, Arch: "arm64"})),
	}
}

func seedLayers() map[string][]byte {
	out := map[string][]byte{}
	for name, es := range map[string][]it.Entry{
		"plain":    {it.Dir("d/"), it.File("d/f", "x", 0o4755), it.Symlink("d/s", "../d/f"), it.Hardlink("d/h", "d/f")},
		"whiteout": {it.Whiteout("a/b"), it.Opaque("c"), it.File("c/x", "", 0o644)},
		"evil":     {it.Symlink("e", "/"), it.File("e/etc/x", "x", 0o644), it.Hardlink("h", "../x"), it.Device("null", false, 1, 3)},
	} {
		b, err := it.Layer{Entries: es}.Tar()
		if err != nil {
			panic(err)
		}
		out[name] = b
	}
	return out
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("SKIFF_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set SKIFF_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz")
	}
	write := func(target, name string, b []byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		os.MkdirAll(dir, 0o755)
		data := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, f := range seedImages() {
		write("FuzzImport", name, f.Tar())
	}
	for name, b := range seedLayers() {
		write("FuzzExtract", name, b)
	}
}

func FuzzImport(f *testing.F) {
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		s, err := Open(filepath.Join(base, "store"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		imgs, err := s.Import(context.Background(), bytes.NewReader(data), nil)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error of no class: %v", err)
			}
			if l, _ := s.List(context.Background()); len(l) != 0 {
				t.Fatalf("failed import left images: %v", l)
			}
		}
		for _, img := range imgs {
			if _, err := s.Resolve(context.Background(), img.Digest); err != nil {
				t.Fatalf("imported %s but cannot resolve it: %v", img.Digest, err)
			}
		}
		if ents, _ := os.ReadDir(base); len(ents) != 1 {
			t.Fatalf("wrote outside the store: %v", ents)
		}
		if ents, _ := os.ReadDir(filepath.Join(base, "store", "tmp")); len(ents) != 0 {
			t.Fatalf("tmp/ not cleaned: %v", ents)
		}
	})
}

func FuzzExtract(f *testing.F) {
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, root, _, check := sandboxDirs(t)
		if _, err := extractTar(context.Background(), root, bytes.NewReader(data)); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("error of no class: %v", err)
		}
		check()
	})
}
