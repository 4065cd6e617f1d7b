package bench

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// PeerConfig names the peer runtime and the image its containers run.
type PeerConfig struct {
	Runtime string // "runc" or "podman"
	// ImageTar is an OCI image layout tarball (scripts/build-test-image.sh
	// makes one); its layers are unpacked into the peer's rootfs, so both
	// sides run the same tree.
	ImageTar string
	Command  []string
	// WorkDir holds the bundle and the peer's state; removed afterwards.
	WorkDir string
}

// PeerResult is how the peer did.
type PeerResult struct {
	Seconds         float64
	TeardownSeconds float64
	Timeline        []float64
}

// peer is how one peer runtime starts and removes container i.
type peer struct {
	name        string
	run, delete func(ctx context.Context, i int) *exec.Cmd
	// close releases what the peer holds besides its containers.
	close func()
}

// newPeer prepares the peer's rootfs (and bundle) under dir.
func newPeer(ctx context.Context, pc PeerConfig, dir string) (*peer, error) {
	rootfs := filepath.Join(dir, "bundle", "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return nil, err
	}
	if err := unpackOCI(pc.ImageTar, rootfs); err != nil {
		return nil, fmt.Errorf("unpack %s: %w", pc.ImageTar, err)
	}
	switch pc.Runtime {
	case "runc":
		bin, err := exec.LookPath("runc")
		if err != nil {
			return nil, errors.New("runc is not installed (apt-get install -y runc)")
		}
		bundle, state := filepath.Join(dir, "bundle"), filepath.Join(dir, "state")
		if out, err := exec.CommandContext(ctx, bin, "spec", "--bundle", bundle).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("runc spec: %v: %s", err, out)
		}
		if err := editSpec(filepath.Join(bundle, "config.json"), pc.Command); err != nil {
			return nil, err
		}
		return &peer{name: "`runc run -d`",
			run: func(ctx context.Context, i int) *exec.Cmd {
				return exec.CommandContext(ctx, bin, "--root", state, "run", "-d", "--bundle", bundle, peerID(i))
			},
			delete: func(_ context.Context, i int) *exec.Cmd {
				return exec.Command(bin, "--root", state, "delete", "-f", peerID(i))
			},
			close: func() {}}, nil
	case "podman":
		bin, err := exec.LookPath("podman")
		if err != nil {
			return nil, errors.New("podman is not installed (apt-get install -y podman)")
		}
		// Its own storage and state, cgroupfs (no systemd here), runc as
		// the OCI runtime (crun refuses this host's hybrid cgroups), no
		// network (skiff's groups get one; the peer is given the benefit),
		// and limits within the host's hard ones (podman's defaults exceed
		// them).
		storage := filepath.Join(dir, "storage")
		// podman refuses a runroot over 50 characters (socket paths).
		runroot, err := os.MkdirTemp("/tmp", "skb-")
		if err != nil {
			return nil, err
		}
		global := []string{"--root", storage, "--runroot", runroot,
			"--cgroup-manager", "cgroupfs", "--events-backend", "none"}
		if rc, err := exec.LookPath("runc"); err == nil {
			global = append(global, "--runtime", rc)
		}
		return &peer{name: "`podman run -d`",
			run: func(ctx context.Context, i int) *exec.Cmd {
				args := append(append([]string{}, global...), "run", "-d", "--network", "none",
					"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", "--name", peerID(i), "--rootfs", rootfs)
				return exec.CommandContext(ctx, bin, append(args, pc.Command...)...)
			},
			delete: func(_ context.Context, i int) *exec.Cmd {
				return exec.Command(bin, append(append([]string{}, global...), "rm", "-f", "-t", "0", peerID(i))...)
			},
			// podman makes its overlay home a mount of its own.
			close: func() {
				_ = unmountDetach(filepath.Join(storage, "overlay"))
				_ = os.RemoveAll(runroot)
			}}, nil
	}
	return nil, fmt.Errorf("unknown peer %q: want runc or podman", pc.Runtime)
}

// RunPeer starts n detached containers one after another, the way a user
// would with `runc run -d` (or `podman run -d`) in a loop, then deletes
// them all.
func RunPeer(ctx context.Context, pc PeerConfig, n int, logf func(string, ...any)) (*PeerResult, error) {
	if pc.Runtime != "runc" && pc.Runtime != "podman" {
		return nil, fmt.Errorf("unknown peer %q: want runc or podman", pc.Runtime)
	}
	if pc.ImageTar == "" {
		return nil, errors.New("the peer needs the image as an OCI layout tarball (--peer-image FILE)")
	}
	dir, err := os.MkdirTemp(pc.WorkDir, "skiff-bench-"+pc.Runtime+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	p, err := newPeer(ctx, pc, dir)
	if err != nil {
		return nil, err
	}
	defer p.close()
	logf("peer %s: %d containers, %s one after another", pc.Runtime, n, p.name)
	errf, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		return nil, err
	}
	defer errf.Close()
	res := &PeerResult{}
	started := 0
	defer func() { // whatever happens, nothing is left behind
		for i := range started {
			_ = p.delete(context.Background(), i).Run()
		}
	}()
	start := time.Now()
	for i := range n {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		cmd := p.run(ctx, i)
		cmd.Stdout, cmd.Stderr = errf, errf // files, not pipes: the container inherits them
		started = i + 1
		if err := cmd.Run(); err != nil {
			b, _ := os.ReadFile(errf.Name())
			return nil, fmt.Errorf("%s %s: %v: %s", pc.Runtime, peerID(i), err, lastLine(b))
		}
		res.Timeline = append(res.Timeline, time.Since(start).Seconds())
	}
	res.Seconds = time.Since(start).Seconds()
	logf("peer %s: %d running in %.2fs", pc.Runtime, n, res.Seconds)
	// Teardown, eight at a time (it is cleanup, not the figure compared;
	// PeerTeardownSeconds says how long it took).
	t0 := time.Now()
	ids := make(chan int, started)
	for i := range started {
		ids <- i
	}
	close(ids)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var derr error
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				if out, err := p.delete(ctx, i).CombinedOutput(); err != nil {
					mu.Lock()
					derr = fmt.Errorf("%s delete %s: %v: %s", pc.Runtime, peerID(i), err, out)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if derr != nil {
		return nil, derr // the deferred sweep tries once more
	}
	started = 0
	res.TeardownSeconds = time.Since(t0).Seconds()
	return res, nil
}

func peerID(i int) string { return fmt.Sprintf("skiff-bench-%d", i) }

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// editSpec makes runc's default spec run cmd detached, without a terminal.
func editSpec(path string, cmd []string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		return err
	}
	proc, _ := spec["process"].(map[string]any)
	if proc == nil {
		return errors.New("runc spec: no process section")
	}
	proc["terminal"] = false
	args := make([]any, len(cmd))
	for i, a := range cmd {
		args[i] = a
	}
	proc["args"] = args
	b, err = json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// unpackOCI extracts the layers of the (first) image of an OCI layout
// tarball into dst, in order. Whiteouts are not handled: the test images
// have one layer.
func unpackOCI(tarPath, dst string) error {
	f, err := os.Open(tarPath)
	if err != nil {
		return err
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(tr, 1<<30))
		if err != nil {
			return err
		}
		files[strings.TrimPrefix(h.Name, "./")] = b
	}
	blob := func(digest string) ([]byte, error) {
		alg, hex, ok := strings.Cut(digest, ":")
		if !ok {
			return nil, fmt.Errorf("bad digest %q", digest)
		}
		b, ok := files["blobs/"+alg+"/"+hex]
		if !ok {
			return nil, fmt.Errorf("blob %s missing", digest)
		}
		return b, nil
	}
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
	}
	var index struct {
		Manifests []desc `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) == 0 {
		return fmt.Errorf("not an OCI image layout (index.json): %v", err)
	}
	mb, err := blob(index.Manifests[0].Digest)
	if err != nil {
		return err
	}
	var man struct {
		Manifests []desc `json:"manifests"` // an index in the index
		Layers    []desc `json:"layers"`
	}
	if err := json.Unmarshal(mb, &man); err != nil {
		return err
	}
	if len(man.Layers) == 0 && len(man.Manifests) > 0 {
		if mb, err = blob(man.Manifests[0].Digest); err != nil {
			return err
		}
		if err := json.Unmarshal(mb, &man); err != nil {
			return err
		}
	}
	for _, l := range man.Layers {
		b, err := blob(l.Digest)
		if err != nil {
			return err
		}
		if err := extractLayer(b, dst); err != nil {
			return err
		}
	}
	return nil
}

func extractLayer(b []byte, dst string) error {
	var r io.Reader = bytes.NewReader(b)
	if len(b) > 2 && b[0] == 0x1f && b[1] == 0x8b {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return err
		}
		r = zr
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean("/" + h.Name)
		p := filepath.Join(dst, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			_ = os.Chmod(p, tarMode(h.Mode))
		case tar.TypeReg:
			_ = os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				return err
			}
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			f.Close()
			if err != nil {
				return err
			}
			_ = os.Chmod(p, tarMode(h.Mode))
		case tar.TypeSymlink:
			_ = os.MkdirAll(filepath.Dir(p), 0o755)
			_ = os.Remove(p)
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
		case tar.TypeLink:
			_ = os.Remove(p)
			if err := os.Link(filepath.Join(dst, filepath.Clean("/"+h.Linkname)), p); err != nil {
				return err
			}
		}
	}
}

func tarMode(m int64) os.FileMode {
	mode := os.FileMode(m) & os.ModePerm
	if m&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	if m&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if m&0o4000 != 0 {
		mode |= os.ModeSetuid
	}
	return mode
}

func unmountDetach(path string) error { return unix.Unmount(path, unix.MNT_DETACH) }
