package linux

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// startTimeout bounds the init stage when the caller's ctx has no deadline.
const startTimeout = 30 * time.Second

// StartContainer implements sandbox.Runtime.
func (r *Runtime) StartContainer(ctx context.Context, sandboxID string, cfg sandbox.ContainerConfig) (*sandbox.ContainerInfo, error) {
	if err := validateContainer(cfg); err != nil {
		return nil, err
	}
	sb, err := r.sandbox(sandboxID)
	if err != nil {
		return nil, err
	}
	r.busy.Add(1)
	defer r.busy.Add(-1)
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.removed || !sb.st.Complete {
		return nil, fmt.Errorf("%w: sandbox %q", sandbox.ErrNotFound, sandboxID)
	}
	prev := sb.containers[cfg.Name]
	instance := 1
	if prev != nil {
		if prev.running() {
			return nil, fmt.Errorf("%w: container %q is running", sandbox.ErrExists, cfg.Name)
		}
		instance = prev.st.Instance + 1
	}
	c := &ctr{sb: sb, dir: filepath.Join(sb.dir, "containers", cfg.Name), pidfd: -1, done: make(chan struct{})}
	c.st = containerState{Name: cfg.Name, Instance: instance, UID: cfg.UID, GID: cfg.GID, Env: withDefaultPath(cfg.Env),
		TTY: cfg.TTY, Stdin: cfg.Stdin}
	icfg, err := r.prepare(sb, c, cfg)
	if err != nil {
		return nil, err
	}
	if err := r.spawn(ctx, c, icfg); err != nil {
		// The failed instance keeps its log (it may say why) as current.
		_ = r.cg.removeOne(cgroupRel(sb.key, cfg.Name))
		_ = os.RemoveAll(filepath.Join(c.dir, "fs"))
		return nil, err
	}
	if err := writeJSON(filepath.Join(c.dir, "state.json"), c.st); err != nil {
		r.log.Warn("sandbox: save container state", "sandbox", sb.id, "container", cfg.Name, "err", err)
	}
	sb.containers[cfg.Name] = c
	if err := r.watch(c); err != nil {
		// Cannot happen short of fd exhaustion; without a watch, nobody
		// would ever see the exit, so do not leave it running.
		_ = c.signal(unix.SIGKILL)
		return nil, fmt.Errorf("%w: watch container: %v", sandbox.ErrUnavailable, err)
	}
	return &sandbox.ContainerInfo{Name: cfg.Name, PID: c.st.PID, StartedAt: c.st.StartedAt}, nil
}

func validateContainer(cfg sandbox.ContainerConfig) error {
	switch {
	case !nameRE.MatchString(cfg.Name):
		return fmt.Errorf("%w: container name %q", sandbox.ErrInvalid, cfg.Name)
	case len(cfg.Args) == 0 || cfg.Args[0] == "":
		return fmt.Errorf("%w: container %q: no command", sandbox.ErrInvalid, cfg.Name)
	case len(cfg.RootfsLayers) == 0:
		return fmt.Errorf("%w: container %q: no rootfs layers", sandbox.ErrInvalid, cfg.Name)
	case cfg.WorkingDir != "" && !path.IsAbs(cfg.WorkingDir):
		return fmt.Errorf("%w: container %q: working dir %q is not absolute", sandbox.ErrInvalid, cfg.Name, cfg.WorkingDir)
	}
	for _, l := range cfg.RootfsLayers {
		// overlayfs separates options with ',' and layers with ':'.
		if !filepath.IsAbs(l) || strings.ContainsAny(l, ",:") {
			return fmt.Errorf("%w: container %q: rootfs layer %q", sandbox.ErrInvalid, cfg.Name, l)
		}
	}
	return nil
}

func withDefaultPath(env []string) []string {
	for _, e := range env {
		if strings.HasPrefix(e, "PATH=") {
			return env
		}
	}
	return append(append([]string(nil), env...), "PATH="+defaultPath)
}

// prepare lays out the instance's directories, cgroup and log, and builds
// the init stage's configuration.
func (r *Runtime) prepare(sb *sbox, c *ctr, cfg sandbox.ContainerConfig) (*initConfig, error) {
	fsDir := filepath.Join(c.dir, "fs")
	if err := os.RemoveAll(fsDir); err != nil {
		return nil, fmt.Errorf("container dir: %w", err)
	}
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.MkdirAll(filepath.Join(fsDir, d), 0o755); err != nil {
			return nil, fmt.Errorf("container dir: %w", err)
		}
	}
	hostID := sb.st.HostID
	if hostID != 0 {
		// The overlay's root directory takes its owner from the upper one.
		if err := os.Chown(filepath.Join(fsDir, "upper"), int(hostID), int(hostID)); err != nil {
			return nil, fmt.Errorf("container dir: %w", err)
		}
	}
	if err := rotateLogs(c.dir); err != nil {
		return nil, err
	}
	rel := cgroupRel(sb.key, cfg.Name)
	// A fresh cgroup per instance: counters (oom_kill) start at zero.
	if err := r.cg.removeOne(rel); err != nil {
		return nil, err
	}
	if err := r.cg.create(rel, cfg.MilliCPU, cfg.Memory, cfg.Pids, false); err != nil {
		return nil, err
	}
	mounts, err := containerMounts(sb, cfg)
	if err != nil {
		return nil, err
	}
	userNS := ""
	if hostID != 0 {
		userNS = "user" // joined through an fd, see spawn
	}
	return &initConfig{
		UserNS:       userNS,
		HostID:       hostID,
		Rootfs:       filepath.Join(fsDir, "root"),
		Lower:        cfg.RootfsLayers,
		Upper:        filepath.Join(fsDir, "upper"),
		Work:         filepath.Join(fsDir, "work"),
		Mounts:       mounts,
		ReadOnlyRoot: cfg.ReadOnlyRoot,
		Args:         cfg.Args,
		Env:          withHostname(c.st.Env, sb.st.Config.Hostname),
		Cwd:          cfg.WorkingDir,
		UID:          cfg.UID,
		GID:          cfg.GID,
	}, nil
}

func withHostname(env []string, hostname string) []string {
	for _, e := range env {
		if strings.HasPrefix(e, "HOSTNAME=") {
			return env
		}
	}
	return append(append([]string(nil), env...), "HOSTNAME="+hostname)
}

func containerMounts(sb *sbox, cfg sandbox.ContainerConfig) ([]initMount, error) {
	etc := filepath.Join(sb.dir, "etc")
	var ms []initMount
	for _, f := range []string{"hosts", "resolv.conf", "hostname"} {
		ms = append(ms, initMount{Source: filepath.Join(etc, f), Dest: "/etc/" + f, Type: "bind"})
	}
	for _, m := range cfg.Mounts {
		if !path.IsAbs(m.Destination) || path.Clean(m.Destination) == "/" {
			return nil, fmt.Errorf("%w: mount destination %q", sandbox.ErrInvalid, m.Destination)
		}
		var vol *sandbox.VolumeConfig
		for i := range sb.st.Config.Volumes {
			if sb.st.Config.Volumes[i].Name == m.Volume {
				vol = &sb.st.Config.Volumes[i]
			}
		}
		if vol == nil {
			return nil, fmt.Errorf("%w: mount of unknown volume %q", sandbox.ErrInvalid, m.Volume)
		}
		src := filepath.Join(sb.dir, "volumes", vol.Name)
		if vol.Kind == "hostPath" {
			src = vol.HostPath
		}
		if m.SubPath != "" {
			if !localPath(m.SubPath) {
				return nil, fmt.Errorf("%w: mount subPath %q", sandbox.ErrInvalid, m.SubPath)
			}
			src = filepath.Join(src, m.SubPath)
			if vol.Kind != "hostPath" {
				// Kubernetes creates a missing subPath of an emptyDir.
				if _, err := os.Lstat(src); errors.Is(err, os.ErrNotExist) {
					if err := os.MkdirAll(src, 0o777); err != nil {
						return nil, err
					}
					if id := sb.st.HostID; id != 0 {
						if err := os.Chown(src, int(id), int(id)); err != nil {
							return nil, err
						}
					}
				}
			}
		}
		ms = append(ms, initMount{Source: src, Dest: path.Clean(m.Destination), Type: "bind", ReadOnly: m.ReadOnly})
	}
	return ms, nil
}

// spawn starts the init stage and walks it through the protocol
// (see README.md): config → ready → cgroups → go → exec.
func (r *Runtime) spawn(ctx context.Context, c *ctr, icfg *initConfig) error {
	logf, err := os.OpenFile(filepath.Join(c.dir, "current.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("container log: %w", err)
	}
	defer logf.Close()
	startedAt := time.Now()
	if err := appendIndex(filepath.Join(c.dir, "current.idx"), startedAt, 0); err != nil {
		return err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socketpair: %w", err)
	}
	child := os.NewFile(uintptr(fds[1]), "init-child")
	defer child.Close()
	// Non-blocking, so that reads honour deadlines through the poller.
	_ = unix.SetNonblock(fds[0], true)
	sock := os.NewFile(uintptr(fds[0]), "init")
	defer sock.Close()

	// The group's namespaces, joined by the init stage's C half (see
	// lockdown.c) as fds 4, 5, 6; the user namespace as fd 7.
	files := []uintptr{r.devnull.Fd(), logf.Fd(), logf.Fd(), child.Fd()}
	// Stdin without a TTY: pipes to and from the relay (relay.c). With a
	// TTY, the terminal is sent with "go" (it lives on the container's own
	// devpts, which exists only once the init stage is ready).
	var relayIn, relayOut *os.File
	if c.st.Stdin && !c.st.TTY {
		inR, inW, err := os.Pipe()
		if err != nil {
			return fmt.Errorf("%w: stdin pipe: %v", sandbox.ErrUnavailable, err)
		}
		defer inR.Close()
		defer inW.Close()
		outR, outW, err := os.Pipe()
		if err != nil {
			return fmt.Errorf("%w: output pipe: %v", sandbox.ErrUnavailable, err)
		}
		defer outR.Close()
		defer outW.Close()
		files[0], files[1], files[2] = inR.Fd(), outW.Fd(), outW.Fd()
		relayIn, relayOut = inW, outR
	}
	env := []string{initEnv + "=1", "_SKIFF_NSFDS=4,5,6",
		"_SKIFF_CAPS=" + strconv.FormatUint(defaultCaps, 16), "_SKIFF_SECCOMP=" + seccompHex()}
	nsNames := []string{"net", "ipc", "uts"}
	if icfg.UserNS != "" {
		nsNames = append(nsNames, "user")
		env = append(env, "_SKIFF_USERNS_FD=7")
	}
	nsFiles, err := r.openNS(c.sb, nsNames...)
	if err != nil {
		return fmt.Errorf("%w: %v", sandbox.ErrUnavailable, err)
	}
	for _, f := range nsFiles {
		defer f.Close()
		files = append(files, f.Fd())
	}
	// v1: the C half joins its cgroups itself (see selfJoinFiles), through
	// these fds; v2: the runtime moves it.
	selfJoin := !r.cg.v2
	if selfJoin {
		var fds []string
		for _, p := range r.cg.selfJoinFiles(cgroupRel(c.sb.key, c.st.Name)) {
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				return fmt.Errorf("%w: %v", sandbox.ErrUnavailable, err)
			}
			defer f.Close()
			fds = append(fds, strconv.Itoa(len(files)))
			files = append(files, f.Fd())
		}
		env = append(env, "_SKIFF_CGROUP_FDS="+strings.Join(fds, ","))
	}
	pidfd := -1
	attr := &syscall.ProcAttr{
		Env:   env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			// Own session: a signal to the agent's terminal or process
			// group does not reach workloads. No Pdeathsig: workloads
			// outlive the agent.
			Setsid:     true,
			Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID,
			PidFD:      &pidfd,
		},
	}
	var pid int
	if c.sb.st.PausePID == 0 {
		pid, _, err = syscall.StartProcess("/proc/self/exe", []string{"skiff-sandbox-init"}, attr)
	} else {
		// Into the group's pid namespace, where the pause is pid 1.
		attr.Sys.Cloneflags &^= unix.CLONE_NEWPID
		var pausefd int
		if pausefd, err = openPause(&c.sb.st); err != nil {
			return err
		}
		err = inPidNS(pausefd, func() (err error) {
			pid, _, err = syscall.StartProcess("/proc/self/exe", []string{"skiff-sandbox-init"}, attr)
			return err
		})
		unix.Close(pausefd)
	}
	if err != nil {
		return fmt.Errorf("%w: start init stage: %v", sandbox.ErrUnavailable, err)
	}
	c.pidfd = pidfd
	c.st.PID = pid
	c.st.StartedAt = startedAt
	child.Close()

	ok := false
	defer func() {
		if !ok {
			// Kill and reap; the fd closes with it.
			_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
			var ws unix.WaitStatus
			_, _ = unix.Wait4(pid, &ws, 0, nil)
			unix.Close(pidfd)
			c.pidfd = -1
			if c.st.RelayPID != 0 {
				endRelay(c, 0)
				c.st.RelayPID, c.st.RelayTicks = 0, 0
			}
		}
	}()

	deadline, has := ctx.Deadline()
	if !has {
		deadline = time.Now().Add(startTimeout)
	}
	_ = sock.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = sock.SetDeadline(time.Now()) })
	defer stop()

	b, err := icfg.encode()
	if err != nil {
		return fmt.Errorf("%w: %v", sandbox.ErrCannotRun, err)
	}
	if _, err := sock.Write(b); err != nil {
		return r.startFailed(ctx, "send config", err)
	}
	rd := bufio.NewReader(sock)
	msg, err := readInitMsg(rd)
	if err != nil {
		return r.startFailed(ctx, "init stage", err)
	}
	if msg.Error != "" {
		return fmt.Errorf("%w: %s", sandbox.ErrCannotRun, msg.Error)
	}
	if c.st.StartTicks, _, err = procStartTicks(pid); err != nil {
		return r.startFailed(ctx, "init stage", err)
	}
	if !selfJoin {
		if err := r.cg.addProc(cgroupRel(c.sb.key, c.st.Name), pid); err != nil {
			return fmt.Errorf("%w: %v", sandbox.ErrUnavailable, err)
		}
	}
	ttyFd := -1
	if c.st.TTY {
		ptmx, tty, err := openContainerPTY(pid)
		if err != nil {
			return fmt.Errorf("%w: open terminal: %v", sandbox.ErrUnavailable, err)
		}
		defer ptmx.Close()
		defer tty.Close()
		ttyFd = int(tty.Fd())
		// The container's user owns its terminal.
		_ = unix.Fchown(ttyFd, int(c.sb.st.HostID+c.st.UID), int(c.sb.st.HostID+c.st.GID))
		relayIn, relayOut = ptmx, ptmx
	}
	if relayIn != nil {
		if err := r.startRelay(c, c.st.TTY, relayIn, relayOut, logf); err != nil {
			return err
		}
	}
	if err := sendGo(sock, ttyFd); err != nil {
		return r.startFailed(ctx, "send go", err)
	}
	// EOF: the socket closed on exec, the workload runs.
	msg, err = readInitMsg(rd)
	if errors.Is(err, io.EOF) {
		ok = true
		c.st.Running = true
		return nil
	}
	if err != nil {
		return r.startFailed(ctx, "init stage", err)
	}
	return fmt.Errorf("%w: %s", sandbox.ErrCannotRun, msg.Error)
}

func (r *Runtime) startFailed(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		// The init stage died without a word (killed, or crashed).
		return fmt.Errorf("%w: %s: sandbox init stage exited without reporting", sandbox.ErrUnavailable, what)
	}
	return fmt.Errorf("%w: %s: %v", sandbox.ErrUnavailable, what, err)
}

func readInitMsg(rd *bufio.Reader) (initMsg, error) {
	var m initMsg
	line, err := rd.ReadBytes('\n')
	if err != nil {
		if len(line) == 0 && errors.Is(err, io.EOF) {
			return m, io.EOF
		}
		return m, err
	}
	if err := json.Unmarshal(line, &m); err != nil {
		return m, fmt.Errorf("bad message from init stage: %w", err)
	}
	return m, nil
}
