package linux

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiffhq/skiff/internal/mountinfo"
	"github.com/skiffhq/skiff/internal/sandbox"
)

// CreateSandbox implements sandbox.Runtime.
func (r *Runtime) CreateSandbox(ctx context.Context, cfg sandbox.SandboxConfig) (*sandbox.SandboxInfo, error) {
	if !nameRE.MatchString(cfg.ID) {
		return nil, fmt.Errorf("%w: sandbox ID %q", sandbox.ErrInvalid, cfg.ID)
	}
	if err := validateVolumes(cfg.Volumes); err != nil {
		return nil, err
	}
	if r.closed.Load() {
		return nil, errClosed
	}
	r.busy.Add(1)
	defer r.busy.Add(-1)
	r.mu.Lock()
	sb := r.sandboxes[cfg.ID]
	if sb == nil {
		if cfg.PoolClass != "" {
			// Taken out of the pool and made the group's under one
			// lock: no other claim, and no DrainPool, can see it again.
			sb = r.takePrepared(cfg.PoolClass)
		}
		if sb != nil {
			sb.id = cfg.ID
		} else {
			sb = &sbox{id: cfg.ID, key: cfg.ID, dir: sandboxDir(r.cfg.StateDir, cfg.ID), containers: map[string]*ctr{}}
		}
		r.sandboxes[cfg.ID] = sb
	}
	r.mu.Unlock()

	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.removed {
		return nil, fmt.Errorf("%w: sandbox %q is being removed", sandbox.ErrUnavailable, cfg.ID)
	}
	if sb.st.Complete {
		return sb.info(), nil
	}
	build := r.build
	if sb.st.Prepared {
		build = r.claim
	}
	if err := build(ctx, sb, cfg); err != nil {
		// Leave nothing behind; the caller may retry with the same ID.
		if derr := r.destroy(context.WithoutCancel(ctx), sb); derr != nil {
			r.log.Warn("sandbox: clean up after failed create", "sandbox", cfg.ID, "err", derr)
		}
		sb.removed = true
		r.mu.Lock()
		if r.sandboxes[cfg.ID] == sb {
			delete(r.sandboxes, cfg.ID)
		}
		r.mu.Unlock()
		return nil, err
	}
	return sb.info(), nil
}

func (sb *sbox) info() *sandbox.SandboxInfo {
	return &sandbox.SandboxInfo{ID: sb.id, IP: sb.st.IP, FromPool: sb.st.Pool != ""}
}

func validateVolumes(vols []sandbox.VolumeConfig) error {
	seen := map[string]bool{}
	for _, v := range vols {
		if !nameRE.MatchString(v.Name) || seen[v.Name] {
			return fmt.Errorf("%w: volume name %q", sandbox.ErrInvalid, v.Name)
		}
		seen[v.Name] = true
		switch v.Kind {
		case "emptyDir", "memory":
		case "files":
			if err := checkFiles(v.Name, v.Files); err != nil { // volumes.go
				return err
			}
		case "hostPath":
			if !filepath.IsAbs(v.HostPath) {
				return fmt.Errorf("%w: volume %q: hostPath must be absolute", sandbox.ErrInvalid, v.Name)
			}
		case "nfs":
			if err := validateNFS(v); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: volume %q: unknown kind %q", sandbox.ErrInvalid, v.Name, v.Kind)
		}
	}
	return nil
}

// localPath reports whether p is relative and stays below its base.
func localPath(p string) bool { return p != "" && filepath.IsLocal(p) }

func (r *Runtime) build(ctx context.Context, sb *sbox, cfg sandbox.SandboxConfig) error {
	cfg.Hostname = groupHostname(cfg)
	cfg.Pids = r.pids(cfg.Pids)
	if err := r.buildBase(ctx, sb, sandboxState{Config: stripFiles(cfg)}); err != nil {
		return err
	}
	return r.finish(ctx, sb, cfg)
}

func groupHostname(cfg sandbox.SandboxConfig) string {
	hostname := cfg.Hostname
	if hostname == "" {
		hostname = cfg.ID
	}
	if len(hostname) > 64 {
		hostname = hostname[:64]
	}
	return hostname
}

// pids is the pids limit of a sandbox that asks for n.
func (r *Runtime) pids(n int64) int64 {
	if n == 0 && r.cfg.DefaultPids > 0 {
		return r.cfg.DefaultPids
	}
	return n
}

// buildBase builds what does not depend on the group: directories, user
// ID range, namespaces (hostname st.Config.Hostname), cgroup with the
// limits of st.Config, network. st is saved first, incomplete.
func (r *Runtime) buildBase(ctx context.Context, sb *sbox, st sandboxState) error {
	for _, d := range []string{"etc", "volumes", "containers"} {
		if err := os.MkdirAll(filepath.Join(sb.dir, d), 0o711); err != nil {
			return fmt.Errorf("sandbox dir: %w", err)
		}
	}
	if !r.cfg.NoUserNamespaces {
		id, err := r.ids.alloc()
		if err != nil {
			return err
		}
		st.HostID = id
		sb.st.HostID = id // released by destroy, should this fail
	}
	st.CreatedAt = time.Now()
	// Written first: a half-created sandbox is recognised (Complete and
	// Prepared unset) and cleaned up by the next Runtime.
	if err := writeJSON(filepath.Join(sb.dir, "sandbox.json"), st); err != nil {
		return err
	}
	fds, err := createNamespaces(st.Config.Hostname)
	if err != nil {
		return fmt.Errorf("sandbox namespaces: %w", err)
	}
	defer func() { closeNSFDs(fds) }()
	if st.HostID != 0 {
		fd, err := createUserNS(st.HostID)
		if err != nil {
			return fmt.Errorf("sandbox namespaces: %w", err)
		}
		fds = append(fds, nsFD{"user", fd})
	}
	if err := r.pins.pin(sb.key, fds); err != nil {
		return fmt.Errorf("sandbox namespaces: %w", err)
	}
	if err := r.cg.create(sb.key, st.Config.MilliCPU, st.Config.Memory, st.Config.Pids, true); err != nil {
		return err
	}
	if r.cfg.Network != nil {
		// Through our fd of the namespace: its pin is not in our mount
		// namespace.
		ip, err := r.cfg.Network.Attach(ctx, sb.key, "/proc/self/fd/"+strconv.Itoa(fds[0].fd))
		if err != nil {
			return fmt.Errorf("sandbox network: %w", err)
		}
		st.IP = ip
	}
	sb.st = st
	return nil
}

// finish makes a sandbox of buildBase the group's: volumes, shared pid
// namespace, published ports, etc files; then it is Complete.
func (r *Runtime) finish(ctx context.Context, sb *sbox, cfg sandbox.SandboxConfig) error {
	hostID := sb.st.HostID
	for _, v := range cfg.Volumes {
		if err := makeVolume(sb.dir, v, hostID); err != nil {
			return err
		}
	}
	if cfg.SharePID {
		if err := r.startPause(sb); err != nil {
			return err
		}
	}
	if len(cfg.Ports) > 0 {
		p, ok := r.cfg.Network.(Publisher)
		if !ok {
			return fmt.Errorf("%w: published ports need a pod network that can publish them", sandbox.ErrInvalid)
		}
		if err := p.Publish(ctx, sb.key, cfg.Ports); err != nil {
			return fmt.Errorf("publish ports: %w", err)
		}
	}
	if err := writeEtc(filepath.Join(sb.dir, "etc"), cfg, sb.st.IP, hostID); err != nil {
		return err
	}
	st := sb.st
	st.Config = stripFiles(cfg)
	st.Complete = true
	if err := writeJSON(filepath.Join(sb.dir, "sandbox.json"), st); err != nil {
		return err
	}
	sb.st = st
	return nil
}

// stripFiles drops file contents from the persisted config: they are on
// disk in the volume already.
func stripFiles(cfg sandbox.SandboxConfig) sandbox.SandboxConfig {
	vols := make([]sandbox.VolumeConfig, len(cfg.Volumes))
	for i, v := range cfg.Volumes {
		v.Files = nil
		vols[i] = v
	}
	cfg.Volumes = vols
	return cfg
}

// makeVolume makes a volume's directory. With a user namespace (hostID
// not 0) what the runtime creates belongs to the container's root.
func makeVolume(sbDir string, v sandbox.VolumeConfig, hostID uint32) error {
	if v.Kind == "hostPath" {
		return nil
	}
	if v.Kind == "nfs" {
		return mountNFS(sbDir, v, hostID)
	}
	dir := filepath.Join(sbDir, "volumes", v.Name)
	if err := os.Mkdir(dir, 0o777); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("volume %s: %w", v.Name, err)
	}
	// Writable by any container user, as Kubernetes makes emptyDirs.
	if err := os.Chmod(dir, 0o777); err != nil {
		return err
	}
	if hostID != 0 {
		if err := os.Chown(dir, int(hostID), int(hostID)); err != nil {
			return fmt.Errorf("volume %s: %w", v.Name, err)
		}
	}
	switch v.Kind {
	case "memory":
		// Mounted in the host namespace so that every container of the
		// group binds the same tmpfs; RemoveSandbox unmounts it.
		data := "mode=0777"
		if hostID != 0 {
			data += fmt.Sprintf(",uid=%d,gid=%d", hostID, hostID)
		}
		if v.SizeLimit > 0 {
			data += ",size=" + strconv.FormatInt(v.SizeLimit, 10)
		}
		if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
			return fmt.Errorf("volume %s: mount tmpfs: %w", v.Name, err)
		}
	case "files":
		// Laid out for atomic updates (volumes.go).
		return writeFiles(dir, v.Files, hostID)
	}
	return nil
}

// writeEtc generates the group's /etc/hosts, /etc/resolv.conf and
// /etc/hostname, bind-mounted into every container.
func writeEtc(dir string, cfg sandbox.SandboxConfig, ip string, hostID uint32) error {
	var hosts strings.Builder
	hosts.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	if ip != "" {
		fmt.Fprintf(&hosts, "%s\t%s\n", ip, cfg.Hostname)
	} else {
		fmt.Fprintf(&hosts, "127.0.1.1\t%s\n", cfg.Hostname)
	}
	ips := make([]string, 0, len(cfg.HostAliases))
	for a := range cfg.HostAliases {
		ips = append(ips, a)
	}
	sort.Strings(ips)
	for _, a := range ips {
		fmt.Fprintf(&hosts, "%s\t%s\n", a, strings.Join(cfg.HostAliases[a], " "))
	}

	var resolv []byte
	if len(cfg.Nameservers) == 0 && len(cfg.Searches) == 0 && len(cfg.Options) == 0 {
		// Like Kubernetes' dnsPolicy Default: the host's resolver config.
		resolv, _ = os.ReadFile("/etc/resolv.conf")
	} else {
		var b strings.Builder
		for _, ns := range cfg.Nameservers {
			fmt.Fprintf(&b, "nameserver %s\n", ns)
		}
		if len(cfg.Searches) > 0 {
			fmt.Fprintf(&b, "search %s\n", strings.Join(cfg.Searches, " "))
		}
		if len(cfg.Options) > 0 {
			fmt.Fprintf(&b, "options %s\n", strings.Join(cfg.Options, " "))
		}
		resolv = []byte(b.String())
	}
	for name, content := range map[string][]byte{
		"hosts":       []byte(hosts.String()),
		"resolv.conf": resolv,
		"hostname":    []byte(cfg.Hostname + "\n"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
			return fmt.Errorf("sandbox %s: %w", name, err)
		}
		if hostID != 0 {
			if err := os.Chown(filepath.Join(dir, name), int(hostID), int(hostID)); err != nil {
				return fmt.Errorf("sandbox %s: %w", name, err)
			}
		}
	}
	return nil
}

// RemoveSandbox implements sandbox.Runtime.
func (r *Runtime) RemoveSandbox(ctx context.Context, sandboxID string) error {
	if !nameRE.MatchString(sandboxID) {
		return fmt.Errorf("%w: sandbox ID %q", sandbox.ErrInvalid, sandboxID)
	}
	if r.closed.Load() {
		return errClosed
	}
	r.busy.Add(1)
	defer r.busy.Add(-1)
	r.mu.Lock()
	sb := r.sandboxes[sandboxID]
	r.mu.Unlock()
	if sb == nil {
		// Not known, but leftovers of a failed removal may be on disk.
		sb = &sbox{id: sandboxID, key: sandboxID, dir: sandboxDir(r.cfg.StateDir, sandboxID), containers: map[string]*ctr{}}
		_, err := os.Stat(filepath.Join(sb.dir, "ns"))
		sb.legacyPins = err == nil
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	sb.removed = true
	if err := r.destroy(ctx, sb); err != nil {
		return err
	}
	r.mu.Lock()
	if r.sandboxes[sandboxID] == sb {
		delete(r.sandboxes, sandboxID)
	}
	r.mu.Unlock()
	return nil
}

// destroy kills the containers of sb and removes every trace of it. It is
// idempotent and works from the directory alone, so that it can clean up
// after a half-done create or a crashed runtime.
func (r *Runtime) destroy(ctx context.Context, sb *sbox) error {
	var names []string
	for name, c := range sb.containers {
		names = append(names, name)
		if err := c.signal(unix.SIGKILL); err != nil {
			return fmt.Errorf("remove sandbox %s: kill %s: %w", sb.name(), name, err)
		}
	}
	for _, c := range sb.containers {
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("%w: remove sandbox %s: container %s does not die", sandbox.ErrUnavailable, sb.name(), c.st.Name)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, c := range sb.containers {
		endRelay(c, time.Second)
	}
	if sb.st.PausePID != 0 {
		killPause(sb.st.PausePID, sb.st.PauseTicks)
		names = append(names, pauseName)
	}
	// Containers on disk but unknown to us (a failed load) still have cgroups.
	if ents, err := os.ReadDir(filepath.Join(sb.dir, "containers")); err == nil {
		for _, e := range ents {
			if _, ok := sb.containers[e.Name()]; !ok {
				names = append(names, e.Name())
			}
		}
	}
	var errs []error
	if err := r.cg.remove(sb.key, names); err != nil {
		errs = append(errs, err)
	}
	if r.cfg.Network != nil {
		if err := r.cfg.Network.Detach(ctx, sb.key); err != nil {
			errs = append(errs, fmt.Errorf("network detach: %w", err))
		}
	}
	if err := r.pins.unpin(sb.key); err != nil {
		errs = append(errs, err)
	}
	if err := unmountKnown(sb.dir); err != nil {
		errs = append(errs, err)
	}
	if err := stopNFS(sb.dir); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(sb.dir); err != nil {
			// Something else is mounted below (not ours): find it in the
			// mount table, the slow way, and try once more.
			if uerr := unmountUnder(sb.dir); uerr != nil {
				errs = append(errs, uerr)
			} else if err := os.RemoveAll(sb.dir); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) == 0 && sb.st.HostID != 0 {
		r.ids.release(sb.st.HostID)
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove sandbox %s: %w", sb.name(), errors.Join(errs...))
	}
	return nil
}

// unmountKnown unmounts what the runtime itself mounts in a sandbox's
// directory: the pins of an earlier version (ns/*) and memory volumes (volumes/*),
// each as often as it is stacked (a crash between mount and record can
// stack one twice). Reading the host's mount table instead costs O(mounts)
// per sandbox, and every sandbox adds half a dozen: teardown of N sandboxes
// would be O(N²).
func unmountKnown(dir string) error {
	var errs []error
	for _, sub := range []string{"ns", "volumes"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			continue
		}
		for _, e := range ents {
			p := filepath.Join(dir, sub, e.Name())
			for range 8 {
				err := unix.Unmount(p, unix.MNT_DETACH)
				if err == nil {
					continue
				}
				if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
					errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
				}
				break
			}
		}
	}
	return errors.Join(errs...)
}

// unmountUnder unmounts every mount at or below dir, deepest first: the
// pinned namespaces and memory volumes, and whatever a crash left.
func unmountUnder(dir string) error {
	mps, err := mountinfo.Under(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, mp := range mps {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}
