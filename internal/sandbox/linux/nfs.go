package linux

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiffhq/skiff/internal/nfs"
	"github.com/skiffhq/skiff/internal/sandbox"
)

// NFS volumes are mounted on the host at volumes/<name> and bound into
// containers like any other volume. The kernel's NFS client mounts them
// when the host has one and the sandbox has no user namespace (the kernel
// client cannot map the container's ids); otherwise a small detached
// process of this binary (skiff-nfs, started like the stdio relay)
// serves the export through FUSE with skiff's own NFSv3 client
// (internal/nfs). It outlives the runtime, as workloads do, and its pid
// is kept in nfs/<name>.pid so that teardown finds it after a restart.

const (
	nfsHelperEnv = "_SKIFF_NFS_MOUNT"
	nfsReadyFD   = 3
	// nfsMountTimeout bounds a mount: an unreachable server fails the
	// sandbox within it.
	nfsMountTimeout = 20 * time.Second
	nfsCallTimeout  = 10 * time.Second
)

// nfsHelperConfig is what the helper is started with.
type nfsHelperConfig struct {
	Server   string
	Path     string
	Dir      string
	ReadOnly bool
	IDShift  uint32
}

func init() {
	if os.Getenv(nfsHelperEnv) != "" {
		os.Exit(runNFSHelper())
	}
}

// runNFSHelper is the skiff-nfs process: mount, report on the ready fd,
// serve until unmounted or told to stop.
func runNFSHelper() int {
	ready := os.NewFile(nfsReadyFD, "ready")
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var cfg nfsHelperConfig
	if err := json.Unmarshal([]byte(os.Getenv(nfsHelperEnv)), &cfg); err != nil {
		fmt.Fprintf(ready, "bad configuration: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), nfsMountTimeout)
	c, err := nfs.Dial(ctx, nfs.Config{Server: cfg.Server, Path: cfg.Path, Timeout: nfsCallTimeout})
	cancel()
	if err != nil {
		fmt.Fprintf(ready, "%v\n", err)
		return 1
	}
	srv, err := nfs.Mount(c, cfg.Dir, nfs.MountOptions{FsName: cfg.Server + ":" + cfg.Path, ReadOnly: cfg.ReadOnly, IDShift: cfg.IDShift, Log: log})
	if err != nil {
		c.Close()
		fmt.Fprintf(ready, "fuse mount: %v\n", err)
		return 1
	}
	fmt.Fprintln(ready, "ok")
	ready.Close()
	log.Info("nfs: serving", "export", cfg.Server+":"+cfg.Path, "dir", cfg.Dir)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		_ = srv.Unmount()
	}()
	srv.Wait()
	c.Close()
	log.Info("nfs: unmounted", "dir", cfg.Dir)
	return 0
}

// kernelNFS reports whether the host's kernel can mount NFS itself.
func kernelNFS() bool {
	if _, err := exec.LookPath("mount.nfs"); err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 0 && (f[len(f)-1] == "nfs" || f[len(f)-1] == "nfs4") {
			return true
		}
	}
	return false
}

// mountNFS mounts the export of v at volumes/<name> of the sandbox. A
// mount that fails is the volume's fault (a wrong or unreachable server,
// a path it does not export): ErrInvalid, with the cause, so that the
// group fails with it rather than retrying.
func mountNFS(sbDir string, v sandbox.VolumeConfig, hostID uint32) error {
	if v.NFS == nil {
		return fmt.Errorf("%w: volume %q: nfs volume without a server", sandbox.ErrInvalid, v.Name)
	}
	dir := filepath.Join(sbDir, "volumes", v.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("volume %s: %w", v.Name, err)
	}
	var err error
	if hostID == 0 && kernelNFS() {
		if err = mountKernelNFS(dir, v.NFS); err != nil {
			err = fmt.Errorf("mount %s:%s: %w", v.NFS.Server, v.NFS.Path, err)
		}
	} else {
		err = startNFSHelper(sbDir, v.Name, nfsHelperConfig{Server: v.NFS.Server, Path: v.NFS.Path, Dir: dir, ReadOnly: v.NFS.ReadOnly, IDShift: hostID})
	}
	if err != nil {
		return fmt.Errorf("%w: volume %s: %v", sandbox.ErrInvalid, v.Name, err)
	}
	return nil
}

func mountKernelNFS(dir string, v *sandbox.NFSVolume) error {
	// soft with a short timeo: a dead server returns errors rather than
	// hanging the group's processes (and its teardown) for ever.
	opts := "nolock,soft,timeo=100,retrans=2,noresvport"
	if v.ReadOnly {
		opts += ",ro"
	}
	ctx, cancel := context.WithTimeout(context.Background(), nfsMountTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "mount", "-t", "nfs", "-o", opts, v.Server+":"+v.Path, dir).CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w: no answer in %s", nfs.ErrUnreachable, nfsMountTimeout)
		}
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func nfsPidFile(sbDir, name string) string { return filepath.Join(sbDir, "nfs", name+".pid") }

// startNFSHelper starts skiff-nfs for one volume and waits for it to
// report the mount, at most nfsMountTimeout.
func startNFSHelper(sbDir, name string, cfg nfsHelperConfig) error {
	if err := os.MkdirAll(filepath.Join(sbDir, "nfs"), 0o700); err != nil {
		return err
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(sbDir, "nfs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	rd, wr, err := os.Pipe()
	if err != nil {
		return err
	}
	defer rd.Close()
	pid, _, err := syscall.StartProcess("/proc/self/exe", []string{"skiff-nfs", name}, &syscall.ProcAttr{
		Env:   []string{nfsHelperEnv + "=" + string(js), "PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Files: []uintptr{devnull.Fd(), logf.Fd(), logf.Fd(), wr.Fd()},
		// Own session, no Pdeathsig: it outlives the runtime, as the
		// workload does.
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	wr.Close()
	if err != nil {
		return fmt.Errorf("start nfs client: %w", err)
	}
	go func() { // reap it when it ends (it is our child until we die)
		var ws unix.WaitStatus
		for {
			if _, err := unix.Wait4(pid, &ws, 0, nil); err != unix.EINTR {
				return
			}
		}
	}()
	ticks, _, err := procStartTicks(pid)
	if err == nil {
		err = os.WriteFile(nfsPidFile(sbDir, name), []byte(fmt.Sprintf("%d %d\n", pid, ticks)), 0o600)
	}
	if err != nil {
		_ = unix.Kill(pid, unix.SIGKILL)
		return err
	}
	_ = rd.SetReadDeadline(time.Now().Add(nfsMountTimeout + 5*time.Second))
	line, rerr := bufio.NewReader(rd).ReadString('\n')
	if line = strings.TrimSpace(line); line == "ok" {
		return nil
	}
	stopNFSHelper(nfsPidFile(sbDir, name)) // teardown would too; do not wait for it
	switch {
	case line != "":
		return errors.New(line)
	case errors.Is(rerr, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w: no answer in %s", nfs.ErrUnreachable, nfsMountTimeout)
	}
	return fmt.Errorf("nfs client exited: %v", rerr)
}

// stopNFS stops the FUSE clients of a sandbox's NFS volumes, which
// unmountKnown has detached already. It works from the directory alone.
func stopNFS(sbDir string) error {
	files, _ := filepath.Glob(filepath.Join(sbDir, "nfs", "*.pid"))
	var errs []error
	for _, f := range files {
		if err := stopNFSHelper(f); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stopNFSHelper ends the process recorded in pidFile: SIGTERM (it
// unmounts and says goodbye to the server), then SIGKILL after a while.
func stopNFSHelper(pidFile string) error {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return nil
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return os.Remove(pidFile)
	}
	pid, _ := strconv.Atoi(f[0])
	ticks, _ := strconv.ParseUint(f[1], 10, 64)
	if pid <= 0 {
		return os.Remove(pidFile)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return os.Remove(pidFile) // gone
	}
	defer unix.Close(pidfd)
	if t, exited, err := procStartTicks(pid); err != nil || t != ticks || exited {
		return os.Remove(pidFile) // gone, or the pid is another process now
	}
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	_ = unix.PidfdSendSignal(pidfd, unix.SIGTERM, nil, 0)
	if n, _ := unix.Poll(fds, 3000); n <= 0 {
		_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
		if n, _ := unix.Poll(fds, 5000); n <= 0 {
			return fmt.Errorf("%w: nfs client %d does not die", sandbox.ErrUnavailable, pid)
		}
	}
	var si unix.Siginfo
	_ = unix.Waitid(unix.P_PIDFD, pidfd, &si, unix.WEXITED|unix.WNOHANG, nil)
	return os.Remove(pidFile)
}

// validateNFS checks what the runtime relies on; the API validates the
// values for the user first.
func validateNFS(v sandbox.VolumeConfig) error {
	n := v.NFS
	switch {
	case n == nil || n.Server == "":
		return fmt.Errorf("%w: volume %q: nfs server missing", sandbox.ErrInvalid, v.Name)
	case strings.ContainsAny(n.Server, "/ \t\n\x00") || strings.HasPrefix(n.Server, "-"):
		return fmt.Errorf("%w: volume %q: nfs server %q", sandbox.ErrInvalid, v.Name, n.Server)
	case !filepath.IsAbs(n.Path) || filepath.Clean(n.Path) != n.Path || strings.ContainsAny(n.Path, "\n\x00"):
		return fmt.Errorf("%w: volume %q: nfs path %q must be absolute and clean", sandbox.ErrInvalid, v.Name, n.Path)
	}
	return nil
}
