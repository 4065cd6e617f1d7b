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
	"strings"

	"golang.org/x/sys/unix"
)

// initEnv marks a process started as the sandbox init stage. An environment
// variable (rather than argv[0]) survives wrappers that rewrite argv.
const initEnv = "_SKIFF_SANDBOX_INIT"

// initSockFD is the init stage's end of the socketpair to the runtime.
const initSockFD = 3

// initConfig is what the runtime sends the init stage, as one JSON value.
type initConfig struct {
	Rootfs       string   // mount point for the overlay
	Lower        []string // read-only layers, lowest first
	Upper, Work  string
	NetNS        string // persistent namespace files of the group
	IPCNS        string
	UTSNS        string
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

// Init runs the sandbox init stage if this process was started as one, and
// never returns in that case. In any other process it returns at once.
//
// The package calls it from its own init function, so that the init stage
// starts before the rest of a big binary initialises; main (and TestMain)
// may call it too, first thing, to make the dependency explicit.
func Init() {
	if os.Getenv(initEnv) == "" {
		return
	}
	// Namespaces joined with setns and the credentials set below belong to
	// this OS thread; execve must happen on the same one.
	runtime.LockOSThread()
	sock := os.NewFile(initSockFD, "init")
	err := runInit(sock)
	// runInit only returns on failure.
	if err == nil {
		err = errors.New("init stage returned")
	}
	_ = json.NewEncoder(sock).Encode(initMsg{Error: err.Error()})
	os.Exit(1)
}

func runInit(sock *os.File) error {
	unix.CloseOnExec(initSockFD)
	unix.Umask(0o022)
	r := bufio.NewReader(sock)
	var cfg initConfig
	line, err := r.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if err := json.Unmarshal(line, &cfg); err != nil {
		return fmt.Errorf("decode config: %w", err)
	}

	// The group's namespaces. pid and mnt are new already (clone flags).
	for _, ns := range []struct {
		path string
		typ  int
	}{{cfg.NetNS, unix.CLONE_NEWNET}, {cfg.IPCNS, unix.CLONE_NEWIPC}, {cfg.UTSNS, unix.CLONE_NEWUTS}} {
		if err := setnsPath(ns.path, ns.typ); err != nil {
			return err
		}
	}

	if err := setupRootfs(&cfg); err != nil {
		return err
	}

	// Resolve the program now, so that a missing binary is reported
	// before the runtime commits cgroups to us.
	prog, err := lookPath(cfg.Args[0], envPath(cfg.Env))
	if err != nil {
		return err
	}

	if err := json.NewEncoder(sock).Encode(initMsg{Ready: true}); err != nil {
		return fmt.Errorf("report ready: %w", err)
	}
	// Wait for "go": the runtime has put us into the container's cgroups.
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return fmt.Errorf("wait for go: %w", err)
	}
	// A cgroup namespace rooted at the container's cgroup, so the workload
	// sees "/" in /proc/self/cgroup. Needs CAP_SYS_ADMIN: before setuid.
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return fmt.Errorf("unshare cgroup namespace: %w", err)
	}
	if err := unix.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := unix.Setgid(int(cfg.GID)); err != nil {
		return fmt.Errorf("setgid %d: %w", cfg.GID, err)
	}
	if err := unix.Setuid(int(cfg.UID)); err != nil {
		return fmt.Errorf("setuid %d: %w", cfg.UID, err)
	}
	cwd := cfg.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if err := unix.Chdir(cwd); err != nil {
		return fmt.Errorf("working directory %q: %w", cwd, err)
	}
	err = unix.Exec(prog, cfg.Args, cfg.Env)
	return fmt.Errorf("exec %q: %w", cfg.Args[0], err)
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
func setupRootfs(cfg *initConfig) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
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

	if err := mountSpecial(old); err != nil {
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

var specialMounts = []specialMount{
	{"proc", "/proc", "proc", nosuidNodevNoexec, ""},
	{"tmpfs", "/dev", "tmpfs", unix.MS_NOSUID | unix.MS_STRICTATIME, "mode=755,size=65536k"},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
	{"tmpfs", "/dev/shm", "tmpfs", nosuidNodevNoexec, "mode=1777,size=65536k"},
	{"mqueue", "/dev/mqueue", "mqueue", nosuidNodevNoexec, ""},
	{"sysfs", "/sys", "sysfs", nosuidNodevNoexec | unix.MS_RDONLY, ""},
}

var devices = []struct {
	name         string
	major, minor uint32
}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}}

func mountSpecial(old string) error {
	for _, m := range specialMounts {
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
