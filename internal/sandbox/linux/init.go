package linux

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// initEnv marks a process started as the sandbox init stage. An environment
// variable (rather than argv[0]) survives wrappers that rewrite argv.
const initEnv = "_SKIFF_SANDBOX_INIT"

// initSockFD is the init stage's end of the socketpair to the runtime.
const initSockFD = 3

// initSpecFD is the pipe on which the init stage's Go half sends the exec
// spec to its C half (lockdown.c).
const initSpecFD = 4

// initConfig is what the runtime sends the init stage, as one JSON value.
type initConfig struct {
	// UserNS is the sandbox's pinned user namespace, "" for none; HostID
	// is the host uid/gid its root maps to.
	UserNS       string
	HostID       uint32
	Rootfs       string   // mount point for the overlay
	Lower        []string // read-only layers, lowest first
	Upper, Work  string
	Mounts       []initMount // done after pivot_root, in order
	ReadOnlyRoot bool
	Args         []string
	Env          []string
	Cwd          string
	UID, GID     uint32
}

// initMount is a bind mount from a host path (or a tmpfs) into the container.
type initMount struct {
	Source   string // host path; "" with Type "tmpfs"
	Dest     string // container path
	Type     string // "bind" or "tmpfs"
	Data     string // tmpfs options
	ReadOnly bool
}

// initMsg is what the init stage reports: Ready once the container is set
// up and waits for "go", or Error when it cannot run.
type initMsg struct {
	Ready bool   `json:",omitempty"`
	Error string `json:",omitempty"`
}

func init() { Init() }

// Init runs the sandbox init stage's helper if this process is one, and
// never returns in that case. In any other process it returns at once.
//
// The init stage is two processes (see lockdown.c): a C constructor, which
// becomes the workload, forks this helper before the Go runtime starts;
// the helper builds the container's mount tree and hands the resolved
// command back.
//
// The package calls it from its own init function, so that the init stage
// starts before the rest of a big binary initialises; main (and TestMain)
// may call it too, first thing, to make the dependency explicit.
func Init() {
	if os.Getenv(initEnv) == "" {
		return
	}
	runtime.LockOSThread()
	sock := os.NewFile(initSockFD, "init")
	err := runInit(sock)
	if err == nil {
		os.Exit(0)
	}
	_ = json.NewEncoder(sock).Encode(initMsg{Error: err.Error()})
	os.Exit(1)
}

func runInit(sock *os.File) error {
	unix.CloseOnExec(initSockFD)
	unix.Umask(0o022)
	var cfg initConfig
	// Buffered reads are safe: nothing more comes before the C half has
	// reported ready, after we exit.
	line, err := bufio.NewReader(sock).ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if err := json.Unmarshal(line, &cfg); err != nil {
		return fmt.Errorf("decode config: %w", err)
	}
	usernsFD := -1
	if v := os.Getenv("_SKIFF_USERNS_FD"); v != "" {
		if usernsFD, err = strconv.Atoi(v); err != nil {
			return fmt.Errorf("bad user namespace fd %q", v)
		}
	}
	// The group's net, ipc and uts namespaces were joined by the C half
	// before it forked us.
	if err := setupRootfs(&cfg, usernsFD); err != nil {
		return err
	}
	// Resolve the program now, so that a missing binary is reported
	// before the runtime commits cgroups to us.
	prog, err := lookPath(cfg.Args[0], envPath(cfg.Env))
	if err != nil {
		return err
	}
	// The exec spec, NUL-separated: prog, cwd, uid, gid, argc, argv...,
	// envc, env...
	var b strings.Builder
	for _, s := range []string{prog, cfg.Cwd, strconv.FormatUint(uint64(cfg.UID), 10), strconv.FormatUint(uint64(cfg.GID), 10)} {
		b.WriteString(s)
		b.WriteByte(0)
	}
	for _, list := range [][]string{cfg.Args, cfg.Env} {
		b.WriteString(strconv.Itoa(len(list)))
		b.WriteByte(0)
		for _, s := range list {
			if strings.IndexByte(s, 0) >= 0 {
				return fmt.Errorf("argument or environment variable with a NUL byte")
			}
			b.WriteString(s)
			b.WriteByte(0)
		}
	}
	spec := os.NewFile(initSpecFD, "spec")
	if _, err := io.WriteString(spec, b.String()); err != nil {
		return fmt.Errorf("send exec spec: %w", err)
	}
	return spec.Close()
}

func setnsPath(path string, typ int) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open namespace: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, typ); err != nil {
		return fmt.Errorf("join namespace %s: %w", path, err)
	}
	return nil
}

// setupRootfs mounts the overlay, pivots into it and builds the container's
// mount tree. Sources of bind mounts are reached through the old root,
// which is mounted at an unguessable name until the end, so that symlinks
// in the image resolve inside the container, never on the host.
func setupRootfs(cfg *initConfig, usernsFD int) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if usernsFD >= 0 {
		// The shared snapshots belong to the host's root; seen through
		// idmapped mounts (on top of themselves, in this mount namespace
		// only) they belong to the container's. The writable layer is
		// not idmapped: what the container writes there is owned by its
		// host IDs.
		for _, l := range cfg.Lower {
			if err := idmapInPlace(l, usernsFD); err != nil {
				return err
			}
		}
	}
	lower := make([]string, len(cfg.Lower))
	for i, l := range cfg.Lower { // overlayfs lists the top layer first
		lower[len(lower)-1-i] = l
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lower, ":"), cfg.Upper, cfg.Work)
	if err := unix.Mount("overlay", cfg.Rootfs, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount rootfs overlay: %w", err)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	oldName := ".skiff-old-" + hex.EncodeToString(rnd[:])
	if err := os.Mkdir(filepath.Join(cfg.Rootfs, oldName), 0o700); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	if err := unix.PivotRoot(cfg.Rootfs, filepath.Join(cfg.Rootfs, oldName)); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	old := "/" + oldName

	if err := mountSpecial(old, cfg.HostID); err != nil {
		return err
	}
	if err := maskPaths(); err != nil {
		return err
	}
	for _, m := range cfg.Mounts {
		if err := mountOne(old, m); err != nil {
			return err
		}
	}
	if err := unix.Unmount(old, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := os.Remove(old); err != nil {
		return fmt.Errorf("remove old root: %w", err)
	}
	if cfg.ReadOnlyRoot {
		if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("read-only root: %w", err)
		}
	}
	return nil
}

type specialMount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

const (
	nosuidNodevNoexec = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
)

// specialMounts are the container's /proc, /dev and /sys. hostID is the
// host uid/gid of the container's root (0 without a user namespace): the
// tmpfs directories and the tty group (5) are the container's.
func specialMounts(hostID uint32) []specialMount {
	owner := ""
	if hostID != 0 {
		owner = fmt.Sprintf(",uid=%d,gid=%d", hostID, hostID)
	}
	return []specialMount{
		{"proc", "/proc", "proc", nosuidNodevNoexec, ""},
		{"tmpfs", "/dev", "tmpfs", unix.MS_NOSUID | unix.MS_STRICTATIME, "mode=755,size=65536k" + owner},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, fmt.Sprintf("newinstance,ptmxmode=0666,mode=0620,gid=%d", hostID+5)},
		{"tmpfs", "/dev/shm", "tmpfs", nosuidNodevNoexec, "mode=1777,size=65536k" + owner},
		{"mqueue", "/dev/mqueue", "mqueue", nosuidNodevNoexec, ""},
		{"sysfs", "/sys", "sysfs", nosuidNodevNoexec | unix.MS_RDONLY, ""},
	}
}

// Paths hidden from the container, and paths it may read but not write
// (Docker's lists): kernel memory, keys, timers and scheduler internals,
// firmware and power-capping interfaces; sysctls, sysrq, bus and irq
// settings.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
		"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
	}
	readOnlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// maskPaths hides maskedPaths (an empty read-only tmpfs over directories,
// /dev/null over files) and makes readOnlyPaths read-only. The mount
// namespace is the host root's: the container cannot undo either.
func maskPaths() error {
	for _, p := range maskedPaths {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			continue // not on this kernel
		}
		var err error
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err = unix.Mount("tmpfs", p, "tmpfs", nosuidNodevNoexec|unix.MS_RDONLY, "mode=555")
		} else {
			err = unix.Mount("/dev/null", p, "", unix.MS_BIND, "")
		}
		if err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
	}
	for _, p := range readOnlyPaths {
		if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return fmt.Errorf("read-only %s: %w", p, err)
		}
		if err := unix.Mount("", p, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|nosuidNodevNoexec, ""); err != nil {
			return fmt.Errorf("read-only %s: %w", p, err)
		}
	}
	return nil
}

// idmapInPlace mounts an idmapped clone of dir on dir: files owned by host
// ID n appear owned by the user namespace's n.
func idmapInPlace(dir string, usernsFD int) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("idmap %s: open_tree: %w", dir, err)
	}
	defer unix.Close(fd)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(usernsFD)}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fmt.Errorf("idmap %s: mount_setattr: %w", dir, err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("idmap %s: move_mount: %w", dir, err)
	}
	return nil
}

var devices = []struct {
	name         string
	major, minor uint32
}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}}

func mountSpecial(old string, hostID uint32) error {
	for _, m := range specialMounts(hostID) {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", m.target, err)
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
		if m.target != "/dev" {
			continue
		}
		// Device nodes on the fresh /dev: mknod is cheaper than a bind
		// mount each; bind from the host where mknod is not allowed.
		for _, d := range devices {
			p := "/dev/" + d.name
			err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor)))
			if err == nil {
				err = unix.Chmod(p, 0o666) // umask applied to mknod
				if err == nil && hostID != 0 {
					err = unix.Lchown(p, int(hostID), int(hostID))
				}
			} else {
				err = bindFile(old+p, p)
			}
			if err != nil {
				return fmt.Errorf("create %s: %w", p, err)
			}
		}
		for _, l := range [][2]string{
			{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"},
			{"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"},
			{"pts/ptmx", "/dev/ptmx"}, {"/proc/kcore", "/dev/core"},
		} {
			if err := os.Symlink(l[0], l[1]); err != nil {
				return err
			}
		}
	}
	return nil
}

func bindFile(src, dst string) error {
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o666)
	if err != nil {
		return err
	}
	f.Close()
	return unix.Mount(src, dst, "", unix.MS_BIND, "")
}

func mountOne(old string, m initMount) error {
	dst := m.Dest
	switch m.Type {
	case "tmpfs":
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return fmt.Errorf("mount point %s: %w", dst, err)
		}
		flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
		if m.ReadOnly {
			flags |= unix.MS_RDONLY
		}
		if err := unix.Mount("tmpfs", dst, "tmpfs", flags, m.Data); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", dst, err)
		}
		return nil
	case "bind":
	default:
		return fmt.Errorf("mount %s: unknown type %q", dst, m.Type)
	}
	src := old + m.Source
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("mount source %s: %w", m.Source, err)
	}
	// Make the mount point the same kind as the source.
	if st.IsDir() {
		err = os.MkdirAll(dst, 0o755)
	} else if _, serr := os.Stat(dst); serr != nil {
		if err = os.MkdirAll(filepath.Dir(dst), 0o755); err == nil {
			var f *os.File
			if f, err = os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
				f.Close()
			}
		}
	}
	if err != nil {
		return fmt.Errorf("mount point %s: %w", dst, err)
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", m.Source, dst, err)
	}
	if m.ReadOnly {
		if err := unix.Mount("", dst, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("read-only %s: %w", dst, err)
		}
	}
	return nil
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func envPath(env []string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], "PATH="); ok {
			return v
		}
	}
	return defaultPath
}

// lookPath resolves a program the way execvp does, inside the container.
func lookPath(file, path string) (string, error) {
	if strings.Contains(file, "/") {
		if err := isExecutable(file); err != nil {
			return "", fmt.Errorf("exec: %q: %w", file, err)
		}
		return file, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if isExecutable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", file)
}

func isExecutable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return unix.EISDIR
	}
	if st.Mode()&0o111 == 0 {
		return unix.EACCES
	}
	return nil
}
