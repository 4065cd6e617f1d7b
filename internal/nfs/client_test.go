package nfs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/skiffhq/skiff/internal/nfs"
	"github.com/skiffhq/skiff/internal/nfs/nfstest"
)

func dial(t *testing.T, s *nfstest.Server, explicitPorts bool) *nfs.Client {
	t.Helper()
	cfg := nfs.Config{Server: s.Host, Path: s.Dir, Timeout: 10 * time.Second}
	if explicitPorts {
		cfg.NFSPort, cfg.MountPort = s.NFSPort, s.MountPort
	}
	c, err := nfs.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatalf("dial: %v\n%s", err, s.Log)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func u32(v uint32) *uint32 { return &v }

// TestClient drives every procedure against a real server and checks the
// result on the server's own directory.
func TestClient(t *testing.T) {
	s := nfstest.Start(t)
	ctx := context.Background()
	for _, explicit := range []bool{false, true} {
		c := dial(t, s, explicit)
		if explicit {
			if _, err := c.Getattr(ctx, c.Root()); err != nil {
				t.Fatal(err)
			}
			continue
		}
		root := c.Root()

		// create, write, read, attributes
		fh, a, err := c.Create(ctx, root, "hello.txt", true, nfs.SetAttr{Mode: u32(0o640)})
		if err != nil {
			t.Fatal(err)
		}
		if a.Type != nfs.TypeReg || a.Mode != 0o640 {
			t.Fatalf("created attrs: %+v", a)
		}
		if _, _, err := c.Create(ctx, root, "hello.txt", true, nfs.SetAttr{}); !errors.Is(err, fs.ErrExist) {
			t.Fatalf("exclusive create of an existing file: %v", err)
		}
		if n, _, err := c.Write(ctx, fh, []byte("hello, nfs"), 0, nfs.Unstable); err != nil || n != 10 {
			t.Fatalf("write: %d %v", n, err)
		}
		if _, err := c.Commit(ctx, fh); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(filepath.Join(s.Dir, "hello.txt")); err != nil || string(b) != "hello, nfs" {
			t.Fatalf("on the server: %q %v", b, err)
		}
		buf := make([]byte, 100)
		n, eof, err := c.Read(ctx, fh, buf, 7)
		if err != nil || string(buf[:n]) != "nfs" || !eof {
			t.Fatalf("read: %q eof=%v %v", buf[:n], eof, err)
		}
		got, err := c.Getattr(ctx, fh)
		if err != nil || got.Size != 10 {
			t.Fatalf("getattr: %+v %v", got, err)
		}
		mt := time.Unix(1700000000, 0)
		sz := uint64(5)
		if _, err := c.Setattr(ctx, fh, nfs.SetAttr{Mode: u32(0o600), Size: &sz, Mtime: &mt}); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(filepath.Join(s.Dir, "hello.txt"))
		if err != nil || st.Size() != 5 || st.Mode().Perm() != 0o600 || !st.ModTime().Equal(mt) {
			t.Fatalf("after setattr: %v %v", st, err)
		}
		if bits, err := c.Access(ctx, fh, nfs.AccessRead|nfs.AccessModify); err != nil || bits&nfs.AccessRead == 0 {
			t.Fatalf("access: %x %v", bits, err)
		}

		// directories, symlinks, rename, readdir, remove
		dfh, _, err := c.Mkdir(ctx, root, "dir", nfs.SetAttr{Mode: u32(0o755)})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Symlink(ctx, dfh, "link", "../hello.txt", nfs.SetAttr{}); err != nil {
			t.Fatal(err)
		}
		lfh, la, err := c.Lookup(ctx, dfh, "link")
		if err != nil || la == nil || la.Type != nfs.TypeLnk {
			t.Fatalf("lookup link: %v %+v", err, la)
		}
		if target, err := c.Readlink(ctx, lfh); err != nil || target != "../hello.txt" {
			t.Fatalf("readlink: %q %v", target, err)
		}
		if err := c.Rename(ctx, root, "hello.txt", dfh, "moved.txt"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(s.Dir, "dir", "moved.txt")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Lookup(ctx, root, "hello.txt"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("lookup after rename: %v", err)
		}
		for i := range 300 { // more than one READDIRPLUS page
			if err := os.WriteFile(filepath.Join(s.Dir, "dir", "f"+string(rune('a'+i%26))+time.Duration(i).String()), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		ents, err := c.ReadDir(ctx, dfh)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := os.ReadDir(filepath.Join(s.Dir, "dir"))
		if len(ents) != len(want) {
			t.Fatalf("readdir: %d entries, want %d", len(ents), len(want))
		}
		names := make([]string, len(ents))
		for i, e := range ents {
			names[i] = e.Name
			if e.FH == nil || e.Attr == nil {
				t.Fatalf("readdirplus entry without handle or attributes: %+v", e)
			}
		}
		sort.Strings(names)
		for i, w := range want {
			if names[i] != w.Name() {
				t.Fatalf("readdir: %v", names)
			}
		}
		if err := c.Rmdir(ctx, root, "dir"); err == nil {
			t.Fatal("rmdir of a full directory succeeded")
		}
		for _, e := range ents {
			if err := c.Remove(ctx, dfh, e.Name); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Rmdir(ctx, root, "dir"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(s.Dir, "dir")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("dir still there: %v", err)
		}
		fss, err := c.Fsstat(ctx, root)
		if err != nil || fss.TotalBytes == 0 {
			t.Fatalf("fsstat: %+v %v", fss, err)
		}
	}
}

// TestClientLargeFile writes and reads back a file much larger than one
// transfer, with concurrent calls in flight.
func TestClientLargeFile(t *testing.T) {
	s := nfstest.Start(t)
	c := dial(t, s, false)
	ctx := context.Background()
	data := make([]byte, 8<<20+123)
	rand.Read(data)
	fh, _, err := c.Create(ctx, c.Root(), "big", false, nfs.SetAttr{})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error)
	chunk := int(c.WSize)
	n := 0
	for off := 0; off < len(data); off += chunk {
		n++
		go func(off int) {
			end := min(off+chunk, len(data))
			for off < end {
				k, _, err := c.Write(ctx, fh, data[off:end], uint64(off), nfs.Unstable)
				if err != nil {
					errs <- err
					return
				}
				off += k
			}
			errs <- nil
		}(off)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Commit(ctx, fh); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(s.Dir, "big")); !bytes.Equal(b, data) {
		t.Fatalf("server has %d bytes, not what was written", len(b))
	}
	var got []byte
	buf := make([]byte, c.RSize)
	for {
		k, eof, err := c.Read(ctx, fh, buf, uint64(len(got)))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:k]...)
		if eof {
			break
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, not what was written", len(got))
	}
}

func TestDialErrors(t *testing.T) {
	s := nfstest.Start(t)
	ctx := context.Background()
	_, err := nfs.Dial(ctx, nfs.Config{Server: s.Host, Path: "/no/such/export", Timeout: 5 * time.Second})
	if err == nil {
		t.Fatal("mounted an export that does not exist")
	}
	var ne *nfs.Error
	if !errors.As(err, &ne) {
		t.Fatalf("want the server's MNT status, got %v", err)
	}

	// Nothing listens: refused at once, as unreachable.
	start := time.Now()
	_, err = nfs.Dial(ctx, nfs.Config{Server: "127.0.0.1", Path: "/x", NFSPort: 1, MountPort: 1, Timeout: 2 * time.Second})
	if !errors.Is(err, nfs.ErrUnreachable) {
		t.Fatalf("dial to a closed port: %v", err)
	}
	// A black hole (TEST-NET-1 is never routed): bounded by the timeout.
	_, err = nfs.Dial(ctx, nfs.Config{Server: "192.0.2.1", Path: "/x", Timeout: 2 * time.Second})
	if !errors.Is(err, nfs.ErrUnreachable) {
		t.Fatalf("dial to a black hole: %v", err)
	}
	if d := time.Since(start); d > 12*time.Second {
		t.Fatalf("unreachable servers took %v to fail", d)
	}

	// A server that accepts and never answers: bounded by the timeout.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go io.Copy(io.Discard, c)
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	start = time.Now()
	_, err = nfs.Dial(ctx, nfs.Config{Server: "127.0.0.1", Path: "/x", NFSPort: port, MountPort: port, Timeout: time.Second})
	if !errors.Is(err, nfs.ErrUnreachable) {
		t.Fatalf("dial to a silent server: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("a silent server took %v to fail", d)
	}
}
