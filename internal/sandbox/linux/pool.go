package linux

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// The warm pool (sandbox.Pool). A prepared sandbox is built by buildBase
// like any other, under a key of its own ("_p<random>", which no group ID
// can be): directory, ID range, pinned namespaces, cgroup with its class's
// limits, IP and veth. Its sandbox.json has Prepared set and no group ID.
//
//	PrepareSandbox   sandbox.json {Pool, Prepared}            → pool
//	CreateSandbox    pool → r.sandboxes[ID] (one lock: claims and drains
//	                 never see it twice); sandbox.json {Config.ID}; finish:
//	                 hostname, limits, volumes, pause, ports, etc files;
//	                 sandbox.json {Complete}
//	DrainPool        pool → out (same lock); sandbox.json {Prepared unset};
//	                 destroy
//
// After a crash, load puts back in the pool what is Prepared without a
// group ID, keeps what is Complete, and removes the rest: half-prepared,
// half-claimed (the CreateSandbox never returned) or half-drained.

var _ sandbox.Pool = (*Runtime)(nil)

// poolWait bounds how long PrepareSandbox lets live work go first.
const poolWait = 2 * time.Second

func newPoolKey() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "_p" + hex.EncodeToString(b[:])
}

// PrepareSandbox implements sandbox.Pool. It waits (a little) for group
// work in flight to finish first: the pool is refilled with what is left.
func (r *Runtime) PrepareSandbox(ctx context.Context, class sandbox.PoolClass) error {
	if class.Name == "" || class.MilliCPU < 0 || class.Memory < 0 {
		return fmt.Errorf("%w: pool class %+v", sandbox.ErrInvalid, class)
	}
	for deadline := time.Now().Add(poolWait); r.busy.Load() > 0 && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	if r.closed.Load() {
		return errClosed
	}
	key := newPoolKey()
	sb := &sbox{key: key, dir: sandboxDir(r.cfg.StateDir, key), containers: map[string]*ctr{}}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	st := sandboxState{Pool: class.Name, Config: sandbox.SandboxConfig{
		Hostname: key, MilliCPU: class.MilliCPU, Memory: class.Memory, Pids: r.pids(0), PoolClass: class.Name,
	}}
	err := r.buildBase(ctx, sb, st)
	if err == nil {
		sb.st.Prepared = true
		err = writeJSON(filepath.Join(sb.dir, "sandbox.json"), sb.st)
	}
	if err != nil {
		if derr := r.destroy(context.WithoutCancel(ctx), sb); derr != nil {
			r.log.Warn("sandbox: clean up after failed prepare", "sandbox", key, "err", derr)
		}
		return err
	}
	r.mu.Lock()
	r.pool[class.Name] = append(r.pool[class.Name], sb)
	r.mu.Unlock()
	return nil
}

// takePrepared takes a prepared sandbox out of the pool: of class if
// there is one, else of the class with the most; r.mu held.
func (r *Runtime) takePrepared(class string) *sbox {
	if len(r.pool[class]) == 0 {
		class = ""
		for c, l := range r.pool {
			if len(l) > len(r.pool[class]) {
				class = c
			}
		}
	}
	l := r.pool[class]
	if len(l) == 0 {
		return nil
	}
	sb := l[len(l)-1]
	r.pool[class] = l[:len(l)-1]
	if len(r.pool[class]) == 0 {
		delete(r.pool, class)
	}
	return sb
}

// claim makes a prepared sandbox (taken by CreateSandbox, sb.id set) the
// group's; sb.mu held.
func (r *Runtime) claim(ctx context.Context, sb *sbox, cfg sandbox.SandboxConfig) error {
	cfg.Hostname = groupHostname(cfg)
	cfg.Pids = r.pids(cfg.Pids)
	// Whose it is, before anything of the group's is made: cut off now,
	// it is a half-claimed sandbox, which the next Runtime removes.
	st := sb.st
	st.Config.ID = cfg.ID
	if err := writeJSON(filepath.Join(sb.dir, "sandbox.json"), st); err != nil {
		return err
	}
	sb.st = st
	// One throwaway thread: into the pin namespace to open the UTS pin,
	// then into the UTS namespace.
	err := r.pins.in(func() error {
		fd, err := unix.Open("/"+sb.key+"/uts", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWUTS); err != nil {
			return err
		}
		return unix.Sethostname([]byte(cfg.Hostname))
	})
	if err != nil {
		return fmt.Errorf("sandbox hostname: %w", err)
	}
	if have := st.Config; have.MilliCPU != cfg.MilliCPU || have.Memory != cfg.Memory || have.Pids != cfg.Pids {
		if err := r.cg.rewriteLimits(sb.key, cfg.MilliCPU, cfg.Memory, cfg.Pids); err != nil {
			return err
		}
	}
	return r.finish(ctx, sb, cfg)
}

// DrainPool implements sandbox.Pool.
func (r *Runtime) DrainPool(ctx context.Context, class string, n int) (int, error) {
	if r.closed.Load() {
		return 0, errClosed
	}
	r.mu.Lock()
	take := r.doomed
	r.doomed = nil
	retry := len(take)
	for c, l := range r.pool {
		if class != "" && c != class {
			continue
		}
		for len(l) > 0 && (n < 0 || len(take)-retry < n) {
			take = append(take, l[len(l)-1])
			l = l[:len(l)-1]
		}
		if len(l) == 0 {
			delete(r.pool, c)
		} else {
			r.pool[c] = l
		}
	}
	r.mu.Unlock()
	removed := 0
	var errs []error
	for i, sb := range take {
		sb.mu.Lock()
		sb.removed = true
		// No longer a prepared one: a new Runtime finishes the removal
		// should this one not.
		st := sb.st
		st.Prepared = false
		err := writeJSON(filepath.Join(sb.dir, "sandbox.json"), st)
		if err == nil {
			sb.st = st
			err = r.destroy(ctx, sb)
		}
		sb.mu.Unlock()
		if err != nil {
			errs = append(errs, err)
			r.mu.Lock()
			r.doomed = append(r.doomed, sb)
			r.mu.Unlock()
			continue
		}
		if i >= retry {
			removed++
		}
	}
	return removed, errors.Join(errs...)
}

// PoolStats implements sandbox.Pool.
func (r *Runtime) PoolStats() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.pool))
	for c, l := range r.pool {
		out[c] = len(l)
	}
	return out
}
