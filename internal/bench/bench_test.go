package bench

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for _, c := range []struct{ p, want float64 }{{50, 5}, {90, 9}, {99, 10}, {100, 10}, {1, 1}} {
		if got := percentile(xs, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if percentile(nil, 50) != 0 {
		t.Error("percentile of nothing is not 0")
	}
}

func TestTimelineSVGIsXML(t *testing.T) {
	r := &BurstResult{Count: 3, AllRunningSeconds: 1.5, GroupsPerSecond: 2, Peer: "runc", PeerSeconds: 3, Ratio: 2,
		Timeline:     []TimelinePoint{{0.1, 0.5}, {0.1, 1.5}, {0.2, 1.0}},
		PeerTimeline: []float64{1, 2, 3}}
	var b bytes.Buffer
	if err := WriteTimelineSVG(&b, r); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(&b)
	paths := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "path" {
			paths++
		}
	}
	if paths < 3+1 { // axes + created, running, peer
		t.Errorf("%d paths, want at least 4", paths)
	}
}

// An OCI layout with one gzip layer unpacks into a rootfs, and the spec
// edit makes a detached, terminal-less process.
func TestUnpackOCIAndEditSpec(t *testing.T) {
	var layer bytes.Buffer
	zw := gzip.NewWriter(&layer)
	tw := tar.NewWriter(zw)
	add := func(h *tar.Header, body string) {
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(body))
	}
	add(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755}, "#!")
	add(&tar.Header{Name: "bin/sleep", Typeflag: tar.TypeSymlink, Linkname: "busybox"}, "")
	add(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}, "")
	tw.Close()
	zw.Close()
	blobs := map[string][]byte{}
	put := func(b []byte) string {
		s := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(s[:])
		blobs["blobs/sha256/"+hex.EncodeToString(s[:])] = b
		return d
	}
	ld := put(layer.Bytes())
	man, _ := json.Marshal(map[string]any{"layers": []map[string]string{{"digest": ld}}})
	md := put(man)
	idx, _ := json.Marshal(map[string]any{"manifests": []map[string]string{{"digest": md}}})
	blobs["index.json"] = idx
	var img bytes.Buffer
	iw := tar.NewWriter(&img)
	for name, b := range blobs {
		_ = iw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b))})
		_, _ = iw.Write(b)
	}
	iw.Close()
	dir := t.TempDir()
	imgPath := filepath.Join(dir, "img.tar")
	if err := os.WriteFile(imgPath, img.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "rootfs")
	if err := unpackOCI(imgPath, root); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(filepath.Join(root, "bin/sleep")); err != nil || l != "busybox" {
		t.Errorf("bin/sleep: %q %v", l, err)
	}
	if fi, err := os.Stat(filepath.Join(root, "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("tmp: %v %v, want sticky", fi, err)
	}
	spec := filepath.Join(dir, "config.json")
	_ = os.WriteFile(spec, []byte(`{"ociVersion":"1.0.2","process":{"terminal":true,"args":["sh"]}}`), 0o644)
	if err := editSpec(spec, []string{"sleep", "1000"}); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Process struct {
			Terminal bool     `json:"terminal"`
			Args     []string `json:"args"`
		} `json:"process"`
	}
	b, _ := os.ReadFile(spec)
	_ = json.Unmarshal(b, &got)
	if got.Process.Terminal || len(got.Process.Args) != 2 || got.Process.Args[0] != "sleep" {
		t.Errorf("spec after edit: %s", b)
	}
}
