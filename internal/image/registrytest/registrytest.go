// Package registrytest runs a real OCI registry for tests — Debian's
// docker-registry (Distribution v2.8) on loopback, plain, with basic auth
// (bcrypt htpasswd) or with TLS (a self-signed certificate made here) — and
// pushes test images to it. Its access log tells a test exactly which
// requests a pull made.
package registrytest

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/skiffhq/skiff/internal/image/imagetest"
)

// Binary is where Debian's docker-registry package puts the registry.
const Binary = "/usr/bin/docker-registry"

var installOnce sync.Once

// Require installs docker-registry with apt-get when it is missing (as
// root), and skips t when it still cannot be had.
func Require(t testing.TB) {
	t.Helper()
	installOnce.Do(func() { EnsureInstalled("docker-registry", Binary) })
	if _, err := os.Stat(Binary); err != nil {
		t.Skipf("docker-registry is not installed and could not be (apt-get install docker-registry): %v", err)
	}
}

// EnsureInstalled runs apt-get install pkg when bin is missing and we are
// root; it reports what it did on stderr.
func EnsureInstalled(pkg, bin string) {
	if _, err := os.Stat(bin); err == nil || os.Geteuid() != 0 {
		return
	}
	fmt.Fprintf(os.Stderr, "registrytest: installing %s\n", pkg)
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	install := exec.Command("apt-get", "install", "-y", "-q", pkg)
	install.Env = env
	if install.Run() == nil {
		return
	}
	update := exec.Command("apt-get", "update", "-q")
	update.Env = env
	_ = update.Run()
	install = exec.Command("apt-get", "install", "-y", "-q", pkg)
	install.Env = env
	_ = install.Run()
}

// Options shape a registry.
type Options struct {
	// User and Password turn on basic auth (htpasswd, bcrypt).
	User, Password string
	// TLS serves HTTPS with a self-signed certificate for 127.0.0.1.
	TLS bool
}

// Registry is a running docker-registry.
type Registry struct {
	// Host is HOST:PORT, the registry part of image references.
	Host string
	// CertPEM is the TLS certificate (TLS registries only).
	CertPEM []byte
	opts    Options
	dir     string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
}

// Start runs a registry until the test ends (killed and its directory
// removed even when the test fails).
func Start(t testing.TB, o Options) *Registry {
	t.Helper()
	Require(t)
	dir := t.TempDir()
	r, err := StartIn(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("registry %s log tail:\n%s", r.Host, r.logTail(30))
		}
		r.Stop()
	})
	return r
}

// StartIn runs a registry with its state in dir. The caller Stops it.
func StartIn(dir string, o Options) (*Registry, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	r := &Registry{Host: fmt.Sprintf("127.0.0.1:%d", port), opts: o, dir: dir, logPath: filepath.Join(dir, "registry.log"), done: make(chan struct{})}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: %s
`, filepath.Join(dir, "data"), r.Host, strconv.FormatInt(time.Now().UnixNano(), 36))
	if o.TLS {
		certPEM, keyPEM, err := selfSigned()
		if err != nil {
			return nil, err
		}
		r.CertPEM = certPEM
		if err := os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o600); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600); err != nil {
			return nil, err
		}
		cfg += fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	}
	if o.User != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(o.Password), bcrypt.MinCost)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(o.User+":"+string(hash)+"\n"), 0o600); err != nil {
			return nil, err
		}
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: skiff-test\n    path: %s\n", filepath.Join(dir, "htpasswd"))
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(r.logPath)
	if err != nil {
		return nil, err
	}
	r.cmd = exec.Command(Binary, "serve", filepath.Join(dir, "config.yml"))
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", Binary, err)
	}
	go func() {
		_ = r.cmd.Wait()
		logf.Close()
		close(r.done)
	}()
	if err := r.waitUp(15 * time.Second); err != nil {
		r.Stop()
		return nil, fmt.Errorf("%w\n%s", err, r.logTail(20))
	}
	return r, nil
}

// Stop kills the registry.
func (r *Registry) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Kill()
	<-r.done
}

func (r *Registry) waitUp(timeout time.Duration) error {
	cl := r.httpClient()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-r.done:
			return fmt.Errorf("docker-registry exited at start")
		default:
		}
		resp, err := cl.Get(r.URL() + "/v2/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("docker-registry did not answer on %s within %s", r.Host, timeout)
}

// URL is the registry's base URL.
func (r *Registry) URL() string {
	if r.opts.TLS {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

func (r *Registry) httpClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: r.Transport()}
}

// Transport reaches the registry: it trusts the self-signed certificate.
func (r *Registry) Transport() http.RoundTripper {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if r.opts.TLS {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(r.CertPEM)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	return tr
}

// Ref is the reference of repo:tag (or repo@digest) in this registry.
func (r *Registry) Ref(repoTag string) string { return r.Host + "/" + repoTag }

func (r *Registry) remoteOptions() []remote.Option {
	opts := []remote.Option{remote.WithTransport(r.Transport())}
	if r.opts.User != "" {
		opts = append(opts, remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: r.opts.User, Password: r.opts.Password})))
	}
	return opts
}

func (r *Registry) parse(repoTag string) (name.Reference, error) {
	return name.ParseReference(r.Ref(repoTag), name.Insecure)
}

// Push writes img as repo:tag and returns its manifest digest.
func (r *Registry) Push(t testing.TB, repoTag string, img v1.Image) string {
	t.Helper()
	d, err := r.PushImage(context.Background(), repoTag, img)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// PushImage writes img as repo:tag and returns its manifest digest.
func (r *Registry) PushImage(ctx context.Context, repoTag string, img v1.Image) (string, error) {
	ref, err := r.parse(repoTag)
	if err != nil {
		return "", err
	}
	if err := remote.Write(ref, img, append(r.remoteOptions(), remote.WithContext(ctx))...); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	return d.String(), err
}

// PushIndex writes a multi-platform index as repo:tag and returns its digest.
func (r *Registry) PushIndex(t testing.TB, repoTag string, idx v1.ImageIndex) string {
	t.Helper()
	ref, err := r.parse(repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, r.remoteOptions()...); err != nil {
		t.Fatalf("push index %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// Request is one line of the registry's access log.
type Request struct {
	Method, Path string
	Status       int
}

// IsBlobGET says whether the request fetched a blob (a layer or config).
func (q Request) IsBlobGET() bool { return q.Method == "GET" && strings.Contains(q.Path, "/blobs/") }

var accessLine = regexp.MustCompile(`"([A-Z]+) (/v2/\S*) HTTP/[0-9.]+" ([0-9]{3}) `)

// Requests returns every request logged so far, in order.
func (r *Registry) Requests() []Request {
	f, err := os.Open(r.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []Request
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if m := accessLine.FindStringSubmatch(sc.Text()); m != nil {
			code, _ := strconv.Atoi(m[3])
			out = append(out, Request{Method: m[1], Path: m[2], Status: code})
		}
	}
	return out
}

// Mark is a point in the access log; Since returns what came after it.
func (r *Registry) Mark() int {
	// The access log is written when a response completes: give a request
	// that just finished a moment to land.
	time.Sleep(100 * time.Millisecond)
	return len(r.Requests())
}

// Since returns the requests logged after mark.
func (r *Registry) Since(mark int) []Request {
	time.Sleep(100 * time.Millisecond)
	all := r.Requests()
	if mark > len(all) {
		return nil
	}
	return all[mark:]
}

func (r *Registry) logTail(n int) string {
	b, _ := os.ReadFile(r.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func selfSigned() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "skiff test registry"},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// Image turns imagetest images into a go-containerregistry image (one
// image) through an OCI layout written under dir.
func Image(dir string, img imagetest.Image) (v1.Image, error) {
	f, err := imagetest.OCIFiles(img)
	if err != nil {
		return nil, err
	}
	idx, err := layoutIndex(dir, f)
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	return idx.Image(m.Manifests[0].Digest)
}

// MultiArch builds a multi-platform index of imgs (each with its Arch).
func MultiArch(dir string, imgs ...imagetest.Image) (v1.ImageIndex, error) {
	f, err := imagetest.OCIMultiArchFiles("multi", imgs...)
	if err != nil {
		return nil, err
	}
	idx, err := layoutIndex(dir, f)
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	return idx.ImageIndex(m.Manifests[0].Digest)
}

func layoutIndex(dir string, f imagetest.Files) (v1.ImageIndex, error) {
	d, err := os.MkdirTemp(dir, "layout-")
	if err != nil {
		return nil, err
	}
	for n, b := range f {
		p := filepath.Join(d, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return nil, err
		}
	}
	return layout.ImageIndexFromPath(d)
}

// Busybox is the runnable busybox image (skips t without busybox-static).
func Busybox(t testing.TB) v1.Image {
	t.Helper()
	bb, err := imagetest.BusyboxImage("")
	if err != nil {
		t.Skipf("no busybox: %v", err)
	}
	img, err := Image(t.TempDir(), bb)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// RandomLayer is a layer holding one file of n random (incompressible)
// bytes at path.
func RandomLayer(path string, n int) imagetest.Layer {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return imagetest.Layer{Entries: []imagetest.Entry{imagetest.File(path, string(b), 0o644)}}
}
