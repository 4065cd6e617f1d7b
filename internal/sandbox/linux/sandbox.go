package linux

import (
	"bufio"
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
	r.mu.Lock()
	sb := r.sandboxes[cfg.ID]
	if sb == nil {
		sb = &sbox{id: cfg.ID, dir: sandboxDir(r.cfg.StateDir, cfg.ID), containers: map[string]*ctr{}}
		r.sandboxes[cfg.ID] = sb
	}
	r.mu.Unlock()

	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.removed {
		return nil, fmt.Errorf("%w: sandbox %q is being removed", sandbox.ErrUnavailable, cfg.ID)
	}
	if sb.st.Complete {
		return &sandbox.SandboxInfo{ID: sb.id, IP: sb.st.IP}, nil
	}
	if err := r.build(ctx, sb, cfg); err != nil {
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
	return &sandbox.SandboxInfo{ID: sb.id, IP: sb.st.IP}, nil
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
			for _, f := range v.Files {
				if !localPath(f.Path) {
					return fmt.Errorf("%w: volume %q: file path %q", sandbox.ErrInvalid, v.Name, f.Path)
				}
			}
		case "hostPath":
			if !filepath.IsAbs(v.HostPath) {
				return fmt.Errorf("%w: volume %q: hostPath must be absolute", sandbox.ErrInvalid, v.Name)
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
	for _, d := range []string{"ns", "etc", "volumes", "containers"} {
		if err := os.MkdirAll(filepath.Join(sb.dir, d), 0o711); err != nil {
			return fmt.Errorf("sandbox dir: %w", err)
		}
	}
	hostname := cfg.Hostname
	if hostname == "" {
		hostname = cfg.ID
	}
	if len(hostname) > 64 {
		hostname = hostname[:64]
	}
	cfg.Hostname = hostname
	var hostID uint32
	if !r.cfg.NoUserNamespaces {
		id, err := r.ids.alloc()
		if err != nil {
			return err
		}
		hostID = id
		sb.st.HostID = id // released by destroy, should this fail
	}
	// Written first: a half-created sandbox is recognised (Complete unset)
	// and cleaned up by the next Runtime.
	if err := writeJSON(filepath.Join(sb.dir, "sandbox.json"), sandboxState{Config: stripFiles(cfg), CreatedAt: time.Now(), HostID: hostID}); err != nil {
		return err
	}
	if err := createNamespaces(filepath.Join(sb.dir, "ns"), hostname); err != nil {
		return fmt.Errorf("sandbox namespaces: %w", err)
	}
	if hostID != 0 {
		if err := createUserNS(filepath.Join(sb.dir, "ns", "user"), hostID); err != nil {
			return fmt.Errorf("sandbox namespaces: %w", err)
		}
	}
	pids := cfg.Pids
	if pids == 0 && r.cfg.DefaultPids > 0 {
		pids = r.cfg.DefaultPids
	}
	if err := r.cg.create(sb.id, cfg.MilliCPU, cfg.Memory, pids, true); err != nil {
		return err
	}
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
	var ip string
	if r.cfg.Network != nil {
		var err error
		ip, err = r.cfg.Network.Attach(ctx, sb.id, filepath.Join(sb.dir, "ns", "net"))
		if err != nil {
			return fmt.Errorf("sandbox network: %w", err)
		}
	}
	if len(cfg.Ports) > 0 {
		p, ok := r.cfg.Network.(Publisher)
		if !ok {
			return fmt.Errorf("%w: published ports need a pod network that can publish them", sandbox.ErrInvalid)
		}
		if err := p.Publish(ctx, sb.id, cfg.Ports); err != nil {
			return fmt.Errorf("publish ports: %w", err)
		}
	}
	if err := writeEtc(filepath.Join(sb.dir, "etc"), cfg, ip, hostID); err != nil {
		return err
	}
	st := sandboxState{Config: stripFiles(cfg), IP: ip, CreatedAt: time.Now(), Complete: true, HostID: hostID,
		PausePID: sb.st.PausePID, PauseTicks: sb.st.PauseTicks}
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
		for _, f := range v.Files {
			p := filepath.Join(dir, f.Path)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return fmt.Errorf("volume %s: %w", v.Name, err)
			}
			mode := os.FileMode(f.Mode & 0o7777)
			if mode == 0 {
				mode = 0o644
			}
			if err := os.WriteFile(p, f.Content, mode); err != nil {
				return fmt.Errorf("volume %s: %w", v.Name, err)
			}
			if err := os.Chmod(p, mode); err != nil { // not subject to umask
				return err
			}
		}
		if hostID != 0 {
			return chownTree(dir, hostID)
		}
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
	r.mu.Lock()
	sb := r.sandboxes[sandboxID]
	r.mu.Unlock()
	if sb == nil {
		// Not known, but leftovers of a failed removal may be on disk.
		sb = &sbox{id: sandboxID, dir: sandboxDir(r.cfg.StateDir, sandboxID), containers: map[string]*ctr{}}
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
			return fmt.Errorf("remove sandbox %s: kill %s: %w", sb.id, name, err)
		}
	}
	for _, c := range sb.containers {
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("%w: remove sandbox %s: container %s does not die", sandbox.ErrUnavailable, sb.id, c.st.Name)
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
	if err := r.cg.remove(sb.id, names); err != nil {
		errs = append(errs, err)
	}
	if r.cfg.Network != nil {
		if err := r.cfg.Network.Detach(ctx, sb.id); err != nil {
			errs = append(errs, fmt.Errorf("network detach: %w", err))
		}
	}
	if err := unmountKnown(sb.dir); err != nil {
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
		return fmt.Errorf("remove sandbox %s: %w", sb.id, errors.Join(errs...))
	}
	return nil
}

// unmountKnown unmounts what the runtime itself mounts in a sandbox's
// directory: the pinned namespaces (ns/*) and memory volumes (volumes/*),
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
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var mps []string
	prefix := dir + "/"
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		// Field 5 is the mount point, with octal escapes for spaces etc.
		fields := strings.SplitN(s.Text(), " ", 6)
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, prefix) {
			mps = append(mps, mp)
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	var errs []error
	for _, mp := range mps {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
