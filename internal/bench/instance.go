package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// UpLauncher starts a fresh `skiff up` per mode: its own directory (data
// dir, client config, log), its own ports and pod range, the flags the
// mode needs; then imports the benchmark image. Stop deletes every group,
// drains the warm pool, stops skiff with SIGINT and checks that nothing
// of it is left on the machine.
type UpLauncher struct {
	// Binary is the skiff binary (the running one, for `skiff bench`).
	Binary string
	// ImageTar is imported into every instance (OCI layout or
	// docker-archive).
	ImageTar string
	// CIDR is the instances' --cluster-cidr; it must be free on this
	// machine. Default 10.214.0.0/16.
	CIDR netip.Prefix
	// WorkRoot holds the instances' directories (default: $TMPDIR).
	WorkRoot string
	// ForecastLead, when set, is passed as --forecast-lead.
	ForecastLead int
	// ExtraArgs go to every `skiff up`.
	ExtraArgs []string
	Log       io.Writer

	checkOnce sync.Once
	checkErr  error
}

// The `skiff up` flags the modes use (cmd/skiff/poolflags.go).
var upPoolFlags = []string{"--pool-size", "--pool-max-per-host", "--forecast-bucket", "--forecast-season"}

func (l *UpLauncher) logf(format string, args ...any) {
	if l.Log != nil {
		fmt.Fprintf(l.Log, format+"\n", args...)
	}
}

// checkBinary makes sure the binary's `up` knows the pool flags, so a
// skiff without them fails up front, naming what is missing.
func (l *UpLauncher) checkBinary(ctx context.Context) error {
	l.checkOnce.Do(func() {
		out, err := exec.CommandContext(ctx, l.Binary, "up", "--help").CombinedOutput()
		if err != nil {
			l.checkErr = fmt.Errorf("%s up --help: %v: %s", l.Binary, err, bytes.TrimSpace(out))
			return
		}
		var missing []string
		for _, f := range upPoolFlags {
			if !bytes.Contains(out, []byte(f+" ")) {
				missing = append(missing, f)
			}
		}
		if len(missing) > 0 {
			l.checkErr = fmt.Errorf("%s up has no %s: the replay needs a skiff with warm pools and the forecast planner", l.Binary, strings.Join(missing, ", "))
		}
	})
	return l.checkErr
}

func (l *UpLauncher) modeArgs(m ModeSpec) []string {
	switch m.Name {
	case ModeFixed:
		return []string{"--pool-max-per-host", "0", "--pool-size", m.Class + "=" + strconv.Itoa(m.PoolSize)}
	case ModeForecast:
		a := []string{"--forecast-bucket", m.Bucket.String(), "--forecast-season", strconv.Itoa(m.Season)}
		if l.ForecastLead > 0 {
			a = append(a, "--forecast-lead", strconv.Itoa(l.ForecastLead))
		}
		return a
	}
	// none: no pool targets at all.
	return []string{"--pool-max-per-host", "0"}
}

// drainArgs restart a skiff so that its pool drains. --pool-max-per-host 0
// is not enough after the forecast mode: it stops the planner, but the
// targets the planner last stored stay in force. A planner whose bucket
// width differs from the history's finds every series expired, plans no
// demand and writes empty targets for every host that had some.
var drainArgs = []string{"--forecast-bucket", "1h", "--forecast-season", "24"}

// Start implements Launcher.
func (l *UpLauncher) Start(ctx context.Context, m ModeSpec) (Instance, error) {
	if err := l.checkBinary(ctx); err != nil {
		return nil, err
	}
	if l.ImageTar == "" {
		return nil, errors.New("no image tarball to import (--image-tar)")
	}
	if !l.CIDR.IsValid() {
		l.CIDR = netip.MustParsePrefix("10.214.0.0/16")
	}
	if err := cidrFree(l.CIDR); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(l.WorkRoot, "skiff-replay-"+m.Name+"-")
	if err != nil {
		return nil, err
	}
	dir, _ = filepath.Abs(dir)
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	in := &upInstance{l: l, mode: m, dir: dir, data: filepath.Join(dir, "data"), config: filepath.Join(dir, "client.json"),
		logPath: filepath.Join(dir, "up.log"), ports: ports}
	in.scope = leakScope{dir: dir, cgroupParent: cgroupParentOf(filepath.Join(in.data, "agent")), cidr: l.CIDR}
	if err := in.start(ctx, l.modeArgs(m)); err != nil {
		in.abort()
		return nil, err
	}
	l.logf("mode %s: skiff up at %s (dir %s); importing %s", m.Name, in.api.Endpoint(), dir, l.ImageTar)
	if _, err := in.api.ImportImage(ctx, l.ImageTar, nil); err != nil {
		in.abort()
		return nil, fmt.Errorf("import %s: %w", l.ImageTar, err)
	}
	return in, nil
}

type upInstance struct {
	l                          *UpLauncher
	mode                       ModeSpec
	dir, data, config, logPath string
	ports                      []int
	scope                      leakScope
	cmd                        *exec.Cmd
	exited                     chan struct{}
	api                        *client.Client
}

func (in *upInstance) API() ReplayAPI { return in.api }

func (in *upInstance) start(ctx context.Context, modeArgs []string) error {
	args := []string{"up", "--data-dir", in.data,
		"--listen", "127.0.0.1:" + strconv.Itoa(in.ports[0]),
		"--agent-listen", "127.0.0.1:" + strconv.Itoa(in.ports[1]),
		"--etcd-client-url", "http://127.0.0.1:" + strconv.Itoa(in.ports[2]),
		"--etcd-peer-url", "http://127.0.0.1:" + strconv.Itoa(in.ports[3]),
		"--cluster-cidr", in.l.CIDR.String(), "--log-level", "warn"}
	args = append(args, modeArgs...)
	args = append(args, in.l.ExtraArgs...)
	logf, err := os.OpenFile(in.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "\n--- %s %s\n", in.l.Binary, strings.Join(args, " "))
	cmd := exec.Command(in.l.Binary, args...)
	cmd.Env = append(os.Environ(), client.ConfigEnv+"="+in.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C of the bench reaches the bench
	// alone, which then stops skiff in order. If the bench dies, so does
	// skiff (cleanly, on SIGTERM).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	in.cmd = cmd
	in.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(in.exited) }()

	deadline := time.Now().Add(90 * time.Second)
	for {
		if in.api == nil {
			if cfg, err := client.LoadConfig(in.config); err == nil {
				if c, err := client.New(cfg, client.WithUserAgent("skiff-bench-replay"), client.WithHTTPClient(HTTPClient())); err == nil {
					in.api = c
				}
			}
		}
		if in.api != nil {
			if hosts, err := in.api.Hosts(ctx); err == nil && len(hosts) > 0 && hosts[0].State == api.HostReady {
				return nil
			}
		}
		select {
		case <-in.exited:
			return fmt.Errorf("skiff up exited: %s", in.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("skiff up not ready after 90s: %s", in.logTail())
		}
	}
}

// logTail is the end of the instance's log, for an error message.
func (in *upInstance) logTail() string {
	b, _ := os.ReadFile(in.logPath)
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return fmt.Sprintf("log %s: …%s", in.logPath, bytes.TrimSpace(b))
}

// interrupt stops skiff up with SIGINT, then SIGKILL after 30s.
func (in *upInstance) interrupt() error {
	if in.cmd == nil {
		return nil
	}
	_ = in.cmd.Process.Signal(os.Interrupt)
	select {
	case <-in.exited:
		return nil
	case <-time.After(30 * time.Second):
		_ = in.cmd.Process.Kill()
		<-in.exited
		return errors.New("skiff up did not stop within 30s of SIGINT (killed)")
	}
}

// abort is Stop for an instance that never came up.
func (in *upInstance) abort() {
	_ = in.interrupt()
	in.scope.cleanup()
	if len(in.scope.mounts()) == 0 {
		_ = os.RemoveAll(in.data)
	}
}

// Stop implements Instance.
func (in *upInstance) Stop(ctx context.Context) ([]string, error) {
	var errs []error
	if err := in.deleteAll(ctx); err != nil {
		errs = append(errs, fmt.Errorf("delete the groups: %w", err))
	}
	// Prepared sandboxes outlive skiff (they are found again at the next
	// start), so drain them first: restart without any pool target and
	// wait for the pool to empty.
	if s, err := ReadPool(ctx, in.api, ""); err == nil && s.Size > 0 {
		in.l.logf("mode %s: draining %d prepared sandboxes", in.mode.Name, s.Size)
		if err := in.interrupt(); err != nil {
			errs = append(errs, err)
		}
		if err := in.start(ctx, drainArgs); err != nil {
			errs = append(errs, fmt.Errorf("restart to drain the pool: %w", err))
		} else if err := waitDrained(ctx, in.api); err != nil {
			errs = append(errs, err)
		}
	}
	if err := in.interrupt(); err != nil {
		errs = append(errs, err)
	}
	leaks := in.scope.leaks()
	if len(leaks) > 0 {
		in.scope.cleanup()
		if left := in.scope.leaks(); len(left) > 0 {
			errs = append(errs, fmt.Errorf("could not remove: %s", strings.Join(left, "; ")))
		}
	}
	if len(in.scope.mounts()) == 0 {
		if len(errs) == 0 && len(leaks) == 0 {
			_ = os.RemoveAll(in.dir)
		} else {
			_ = os.RemoveAll(in.data) // keep the log
			in.l.logf("mode %s: log kept at %s", in.mode.Name, in.logPath)
		}
	}
	return leaks, errors.Join(errs...)
}

// deleteAll deletes every group and waits until none is left.
func (in *upInstance) deleteAll(ctx context.Context) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		gs, err := in.api.ListAllGroups(ctx, client.ListOptions{All: true})
		if err != nil {
			return err
		}
		if len(gs) == 0 {
			return nil
		}
		for _, g := range gs {
			if !g.Deleting {
				_, _ = in.api.DeleteGroup(ctx, g.ID, true)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d groups left after 2m", len(gs))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// waitDrained waits until the hosts report an empty pool.
func waitDrained(ctx context.Context, h HostLister) error {
	deadline := time.Now().Add(time.Minute)
	for {
		s, err := ReadPool(ctx, h, "")
		if err == nil && s.Reported && s.Size == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("warm pool still holds %d prepared sandboxes after 1m of draining", s.Size)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// freePorts finds n free TCP ports on the loopback.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// cidrFree fails when the machine already routes something inside p.
func cidrFree(p netip.Prefix) error {
	out, err := exec.Command("ip", "-4", "-o", "route", "show", "table", "all").Output()
	if err != nil {
		return fmt.Errorf("ip route: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		dst := f[0]
		switch dst {
		case "default":
			continue
		case "broadcast", "local", "unicast", "multicast":
			if len(f) < 2 {
				continue
			}
			dst = f[1]
		}
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		q, err := netip.ParsePrefix(dst)
		if err != nil || q.Bits() == 0 {
			continue
		}
		if q.Overlaps(p) {
			return fmt.Errorf("this machine already routes %s, inside the replay's pod range %s: choose another with --cidr", q, p)
		}
	}
	return nil
}
