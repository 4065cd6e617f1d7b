package linux_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// The container's capability set (Docker's default without NET_RAW) as
// /proc/self/status shows it.
const defaultCapsHex = "00000000a80405fb"

// TestSecurity checks the hardening from inside one container each: user
// namespace, capabilities, no_new_privs, seccomp, masked and read-only
// paths, and what a container's root must not be able to do.
func TestSecurity(t *testing.T) {
	hostDir := t.TempDir()
	if err := os.Chmod(hostDir, 0o777); err != nil {
		t.Fatal(err)
	}
	// A host root's file, handed to the container read-write.
	secret := filepath.Join(hostDir, "secret")
	if err := os.WriteFile(secret, []byte("host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A marker on the host's root, which no container may see.
	marker := fmt.Sprintf("/skiff-marker-%d", os.Getpid())
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(marker) })

	e := newEnv(t, sandbox.SandboxConfig{ID: "sec", Volumes: []sandbox.VolumeConfig{
		{Name: "scratch", Kind: "emptyDir"},
		{Name: "host", Kind: "hostPath", HostPath: hostDir},
	}})
	mounts := []sandbox.Mount{{Volume: "scratch", Destination: "/scratch"}, {Volume: "host", Destination: "/host"}}
	n := 0
	// sh runs a script as a new container (root unless uid is given) and
	// returns its exit code and output.
	sh := func(script string, uid ...uint32) (int, string) {
		t.Helper()
		n++
		cfg := sandbox.ContainerConfig{Name: fmt.Sprintf("c%d", n), Args: []string{"sh", "-c", script}, Mounts: mounts}
		if len(uid) > 0 {
			cfg.UID, cfg.GID = uid[0], uid[0]
		}
		ev, out := e.run(cfg)
		return ev.ExitCode, out
	}
	var hostID uint64

	t.Run("UserNamespace", func(t *testing.T) {
		_, out := sh("id -u; cat /proc/self/uid_map /proc/self/gid_map")
		f := strings.Fields(out)
		if len(f) != 7 || f[0] != "0" || f[1] != "0" || f[3] != "65536" || f[4] != "0" || f[5] != f[2] {
			t.Fatalf("id and maps: %q", out)
		}
		hostID, _ = strconv.ParseUint(f[2], 10, 32)
		if hostID == 0 {
			t.Fatalf("root maps to the host's root: %q", out)
		}
	})

	t.Run("VolumeOwnership", func(t *testing.T) {
		if hostID == 0 {
			t.Skip("no host ID")
		}
		_, out := sh("touch /scratch/f /host/new && echo made; echo pwned >> /host/secret || echo denied; chown 0 /host/secret || echo nochown")
		if out != "made\nsh: can't create /host/secret: Permission denied\ndenied\nchown: /host/secret: Operation not permitted\nnochown\n" {
			t.Errorf("output %q", out)
		}
		for _, p := range []string{filepath.Join(e.dir(), "sandboxes/sec/volumes/scratch/f"), filepath.Join(hostDir, "new")} {
			var st syscall.Stat_t
			if err := syscall.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			if uint64(st.Uid) != hostID || uint64(st.Gid) != hostID {
				t.Errorf("%s owned by %d:%d on the host, want %d", p, st.Uid, st.Gid, hostID)
			}
		}
		if b, _ := os.ReadFile(secret); string(b) != "host\n" {
			t.Errorf("host file changed: %q", b)
		}
	})

	t.Run("Capabilities", func(t *testing.T) {
		_, out := sh("grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t ' ' '")
		want := "CapInh: 0000000000000000\nCapPrm: " + defaultCapsHex + "\nCapEff: " + defaultCapsHex +
			"\nCapBnd: " + defaultCapsHex + "\nCapAmb: 0000000000000000\nNoNewPrivs: 1\nSeccomp: 2\n"
		if out != want {
			t.Errorf("status:\n%s\nwant:\n%s", out, want)
		}
		// A non-root user has none at all.
		_, out = sh("grep -E '^Cap(Prm|Eff):' /proc/self/status | tr -s '\\t ' ' '", 1000)
		if out != "CapPrm: 0000000000000000\nCapEff: 0000000000000000\n" {
			t.Errorf("uid 1000: %q", out)
		}
	})

	t.Run("Exec", func(t *testing.T) {
		cfg := sandbox.ContainerConfig{Name: "execd", RootfsLayers: e.fs, Args: []string{"sleep", "1000"}}
		if _, err := e.rt.StartContainer(t.Context(), e.sb, cfg); err != nil {
			t.Fatal(err)
		}
		defer func() {
			_ = e.rt.StopContainer(t.Context(), e.sb, "execd", 0)
			<-e.rt.Exits()
		}()
		var out bytes.Buffer
		code, err := e.rt.Exec(t.Context(), e.sb, "execd", sandbox.ExecConfig{Stdout: &out, Stderr: &out,
			Args: []string{"sh", "-c", "id -u; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t ' ' '; cat /proc/self/uid_map | tr -s ' ' ' '; unshare -U true || echo nounshare"}})
		want := fmt.Sprintf("0\nCapEff: %s\nNoNewPrivs: 1\nSeccomp: 2\n 0 %d 65536\n", defaultCapsHex, hostID)
		if err != nil || code != 0 || !strings.HasPrefix(out.String(), want) || !strings.HasSuffix(out.String(), "nounshare\n") {
			t.Errorf("exec: %d, %v, %q; want prefix %q", code, err, out.String(), want)
		}
	})

	for _, tc := range []struct{ name, script, want string }{
		{"MountFails", "mount -t tmpfs x /mnt && echo mounted; umount /proc && echo unmounted; echo done", "done"},
		{"UnshareFails", "unshare -m true || unshare -U true || unshare -n true || echo denied", "denied"},
		{"SetnsFails", "nsenter -t 1 -n true || nsenter -t 1 -m true || echo denied", "denied"},
		{"RawSocketFails", "ping -c1 -W1 127.0.0.1 >/dev/null 2>&1 || echo denied", "denied"},
		{"HostnameFixed", "hostname other 2>/dev/null || echo denied", "denied"},
		{"HostProcessesInvisible", "[ $(ls -d /proc/[0-9]* | wc -l) -le 4 ] && echo few; cat /proc/*/comm | grep -c linux.test", "few\n0"},
		// (This test kernel has neither sysrq-trigger nor kcore; they are
		// covered where they exist.)
		{"SysrqReadOnly", "echo h > /proc/sysrq-trigger || echo denied; echo 1 > /proc/sys/vm/drop_caches || echo denied2", "denied\ndenied2"},
		{"MaskedPaths", "cat /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug | wc -c; ls /sys/firmware | wc -l; grep -c ' /proc/keys ' /proc/self/mountinfo", "0\n0\n1"},
		{"ProcRootIsContainer", "ls /proc/1/root/ | grep -c '^bin$'; test -e /proc/1/root" + marker + " && echo host; test -e " + marker + " && echo host2; echo ok", "1\nok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, out := sh("exec 2>/dev/null; " + tc.script)
			if got := strings.TrimSpace(out); got != tc.want {
				t.Errorf("output %q, want %q", got, tc.want)
			}
		})
	}
}

// TestForkBomb: a fork bomb hits the group's pids limit; the host and
// another group keep working.
func TestForkBomb(t *testing.T) {
	e := newEnv(t, sandbox.SandboxConfig{ID: "bomb", Pids: 64})
	other := "calm"
	if _, err := e.rt.CreateSandbox(t.Context(), sandbox.SandboxConfig{ID: other}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.rt.RemoveSandbox(context.Background(), other) })
	for _, sc := range []struct{ sb, name string }{{other, "calm"}, {e.sb, "bomb"}} {
		args := []string{"sleep", "1000"}
		if sc.name == "bomb" {
			args = []string{"sh", "-c", "b() { b | b & }; b; sleep 1000"}
		}
		if _, err := e.rt.StartContainer(t.Context(), sc.sb, sandbox.ContainerConfig{Name: sc.name, RootfsLayers: e.fs, Args: args}); err != nil {
			t.Fatal(err)
		}
	}
	// The limit is hit: pids.events counts refused forks (v1: in the
	// cgroup that forked, v2: in the one whose limit it is).
	deadline := time.Now().Add(15 * time.Second)
	for {
		refused := 0
		for _, rel := range []string{"bomb", "bomb/bomb"} {
			b, _ := os.ReadFile(pidsFile(t, rel, "pids.events"))
			if f := strings.Fields(string(b)); len(f) >= 2 {
				refused += atoi([]byte(f[1]))
			}
		}
		if refused > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pids limit never hit")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if b, _ := os.ReadFile(pidsFile(t, "bomb", "pids.current")); atoi(b) > 64 {
		t.Errorf("pids.current %s above the limit", b)
	}
	// The host forks; the other group execs.
	if err := exec.Command("/bin/true").Run(); err != nil {
		t.Errorf("host fork: %v", err)
	}
	var out bytes.Buffer
	if code, err := e.rt.Exec(t.Context(), other, "calm", sandbox.ExecConfig{Args: []string{"echo", "ok"}, Stdout: &out}); err != nil || code != 0 || out.String() != "ok\n" {
		t.Errorf("exec in the other group: %d, %v, %q", code, err, out.String())
	}
	if err := e.rt.RemoveSandbox(t.Context(), e.sb); err != nil {
		t.Errorf("remove the bombed group: %v", err)
	}
}

func atoi(b []byte) int {
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func pidsFile(t *testing.T, rel, name string) string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return filepath.Join("/sys/fs/cgroup", cgroupParent(t), rel, name)
	}
	return filepath.Join("/sys/fs/cgroup/pids", cgroupParent(t), rel, name)
}

// TestSharePID: containers of a group with SharePID see each other's
// processes; pid 1 is the group's pause, not a container.
func TestSharePID(t *testing.T) {
	e := newEnv(t, sandbox.SandboxConfig{ID: "shpid", SharePID: true})
	if _, err := e.rt.StartContainer(t.Context(), e.sb, sandbox.ContainerConfig{Name: "a", RootfsLayers: e.fs, Args: []string{"sleep", "1001"}}); err != nil {
		t.Fatal(err)
	}
	// b sees a's sleep, is not pid 1, cannot look into pid 1, and stops a.
	if _, err := e.rt.StartContainer(t.Context(), e.sb, sandbox.ContainerConfig{Name: "b", RootfsLayers: e.fs, Args: []string{"sh", "-c",
		"ps -o pid,args | grep -c '[s]leep 1001'; [ $$ != 1 ] && echo notpid1; ls /proc/1/root/ 2>/dev/null | wc -l; kill $(pidof sleep)"}}); err != nil {
		t.Fatal(err)
	}
	exits := map[string]int{}
	for range 2 {
		select {
		case ev := <-e.rt.Exits():
			exits[ev.Name] = ev.ExitCode
		case <-time.After(20 * time.Second):
			t.Fatalf("exits so far: %v", exits)
		}
	}
	if exits["a"] != 143 || exits["b"] != 0 {
		t.Errorf("exit codes %v, want a killed by SIGTERM, b 0", exits)
	}
	rc, err := e.rt.Logs(t.Context(), e.sb, "b", sandbox.LogOptions{Tail: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out bytes.Buffer
	_, _ = out.ReadFrom(rc)
	if out.String() != "1\nnotpid1\n0\n" {
		t.Errorf("output %q", out.String())
	}
}
