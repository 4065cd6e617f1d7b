// Package nfstest runs a real NFS server for tests: nfs-ganesha in the
// foreground with a generated configuration that exports a temporary
// directory over NFSv3 (VFS FSAL), on free TCP ports.
//
// Ganesha registers with a portmapper and will not start without one, so
// Start runs rpcbind when none answers on port 111 and stops it after.
// Servers of several test binaries are serialized by a file lock: they
// share the portmapper's registrations.
package nfstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is a running ganesha.
type Server struct {
	// Dir is the exported directory, as the server sees it.
	Dir string
	// Host is the address clients dial.
	Host string
	// NFSPort and MountPort are the server's ports (also registered with
	// the portmapper).
	NFSPort, MountPort int
	// Log is ganesha's log file.
	Log string
}

const lockFile = "/tmp/skiff-nfstest.lock"

// Start starts a server for the test and stops it at the test's end. It
// skips the test when ganesha is not installed or cannot start here
// (run scripts/deps.sh), and fails it on other errors.
func Start(t testing.TB) *Server {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("nfstest: needs root (ganesha and the portmapper bind privileged ports)")
	}
	ganesha, err := exec.LookPath("ganesha.nfsd")
	if err != nil {
		t.Skip("nfstest: ganesha.nfsd not installed (scripts/deps.sh installs nfs-ganesha and nfs-ganesha-vfs)")
	}
	lock, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })

	if !listening("127.0.0.1:111") {
		rpcbind, err := exec.LookPath("rpcbind")
		if err != nil {
			t.Skip("nfstest: no portmapper running and rpcbind not installed")
		}
		_ = os.MkdirAll("/run/rpcbind", 0o755)
		cmd := exec.Command(rpcbind, "-f")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Skipf("nfstest: start rpcbind: %v", err)
		}
		t.Cleanup(func() {
			stop(cmd)
			// It saves its registrations on exit, for a warm start.
			for _, f := range []string{"portmap.xdr", "rpcbind.xdr"} {
				_ = os.Remove(filepath.Join("/run/rpcbind", f))
			}
		})
		if !waitListening("127.0.0.1:111", 5*time.Second) {
			t.Skip("nfstest: rpcbind did not come up")
		}
	}

	work := t.TempDir()
	s := &Server{Dir: filepath.Join(work, "export"), Host: "127.0.0.1", Log: filepath.Join(work, "ganesha.log")}
	if err := os.Mkdir(s.Dir, 0o777); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(s.Dir, 0o777)
	s.NFSPort, s.MountPort = freePort(t), freePort(t)
	conf := fmt.Sprintf(`NFS_CORE_PARAM {
	Protocols = 3;
	NFS_Port = %d;
	MNT_Port = %d;
	Enable_NLM = false;
	Enable_RQUOTA = false;
	Enable_UDP = false;
}
NFS_KRB5 { Active_krb5 = false; }
NFSV4 { Graceless = true; }
EXPORT {
	Export_Id = 1;
	Path = %q;
	Pseudo = /export;
	Protocols = 3;
	Transports = TCP;
	Access_Type = RW;
	Squash = No_Root_Squash;
	SecType = sys;
	FSAL { Name = VFS; }
}
`, s.NFSPort, s.MountPort, s.Dir)
	cf := filepath.Join(work, "ganesha.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ganesha, "-F", "-f", cf, "-L", s.Log, "-p", filepath.Join(work, "ganesha.pid"))
	if err := cmd.Start(); err != nil {
		t.Skipf("nfstest: start ganesha: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !listening(fmt.Sprintf("127.0.0.1:%d", s.NFSPort)) || !listening(fmt.Sprintf("127.0.0.1:%d", s.MountPort)) {
		select {
		case <-exited:
			t.Skipf("nfstest: ganesha exited at start:\n%s", tail(s.Log))
		default:
		}
		if time.Now().After(deadline) {
			t.Skipf("nfstest: ganesha did not listen in time:\n%s", tail(s.Log))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// URL is the export as libnfs's tools (nfs-cp, nfs-ls) name it.
func (s *Server) URL(file string) string {
	return fmt.Sprintf("nfs://%s%s/%s?nfsport=%d&mountport=%d", s.Host, s.Dir, strings.TrimPrefix(file, "/"), s.NFSPort, s.MountPort)
}

func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func waitListening(addr string, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for ctx.Err() == nil {
		if listening(addr) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func stop(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func tail(file string) string {
	b, _ := os.ReadFile(file)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
