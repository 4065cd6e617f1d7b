package kube

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
	"github.com/skiffhq/skiff/internal/store"
)

// proc is one process the suite started, its output kept in a file and in
// memory.
type proc struct {
	name string
	bin  string
	args []string
	env  []string
	log  string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
	f  *os.File
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		_, _ = l.f.Write(p)
	}
	if l.b.Len() > 4<<20 { // keep the tail only
		rest := append([]byte(nil), l.b.Bytes()[l.b.Len()-(2<<20):]...)
		l.b.Reset()
		l.b.Write(rest)
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startProc(name, logFile string, env []string, bin string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, bin: bin, args: args, env: env, log: logFile, out: &lockedBuffer{f: f}, done: make(chan struct{})}
	fmt.Fprintf(p.out, "=== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		fmt.Fprintf(p.out, "=== %s: exited: %v\n", time.Now().Format(time.RFC3339Nano), p.err)
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// restart starts the same command again, after the previous one ended.
func (p *proc) restart() (*proc, error) {
	return startProc(p.name, p.log, p.env, p.bin, p.args...)
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) stop(grace time.Duration) {
	if p == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) kill9() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) waitOutput(re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(p.out.String()); m != nil {
			return m, nil
		}
		if p.exited() {
			return nil, fmt.Errorf("%s exited (%v) before printing %q:\n%s", p.name, p.err, re, p.tail(30))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not print %q within %s:\n%s", p.name, re, timeout, p.tail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *proc) tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.out.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	var ports []int
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

var errTimeout = errors.New("timed out")

func poll(timeout time.Duration, f func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := f()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return errTimeout
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---- PKI: one CA signs everything in the test cluster ----

type pki struct {
	dir    string
	caCert *x509.Certificate
	caKey  *rsa.PrivateKey
}

func newPKI(dir string) (*pki, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "skiff-kube-test-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(48 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{dir: dir, caCert: cert, caKey: key}
	if err := writePEM(filepath.Join(dir, "ca.crt"), "CERTIFICATE", der); err != nil {
		return nil, err
	}
	// The service-account signing key pair.
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(dir, "sa.key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(sa)); err != nil {
		return nil, err
	}
	pub, _ := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err := writePEM(filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pub); err != nil {
		return nil, err
	}
	return p, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// issue writes name.crt and name.key: a server certificate when hosts is
// not empty, else a client certificate for cn in groups.
func (p *pki) issue(name, cn string, groups []string, hosts []string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: groups},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(48 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if len(hosts) > 0 {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(p.dir, name+".crt"), "CERTIFICATE", der); err != nil {
		return err
	}
	return writePEM(filepath.Join(p.dir, name+".key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

// kubeconfig writes a kubeconfig for the client certificate name.
func (p *pki) kubeconfig(name, server string) (string, error) {
	path := filepath.Join(p.dir, name+".kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: test
  context: {cluster: test, user: %s}
current-context: test
`, server, p.path("ca.crt"), name, p.path(name+".crt"), p.path(name+".key"), name)
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}

// ---- the environment ----

// env is the whole test cluster: etcd, the Kubernetes control plane, an
// all-in-one skiff and the virtual node.
type env struct {
	dir        string
	tools      string
	skiffBin   string
	hostIP     string
	apiURL     string
	etcdURLs   map[string]string // "kube", "skiff" → client URL (the benchmark reads their metrics)
	kubeconfig string
	etcd       *store.Embedded
	apiserver  *proc
	kcm        *proc
	scheduler  *proc
	skiff      *proc
	kubelet    *proc
	skiffCfg   string
	skiffDir   string
	sc         *client.Client
	kube       kubernetes.Interface
	nodeName   string
}

// podCIDR is the skiff pod range of this suite (apart from the
// integration suite's 10.213.0.0/16 and tests/images' 10.214.0.0/16).
const podCIDR = "10.216.0.0/16"

func (e *env) start(ctx context.Context) error {
	var err error
	if e.hostIP, err = hostIP(); err != nil {
		return err
	}
	ports, err := freePorts(8)
	if err != nil {
		return err
	}
	etcdClient := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	e.etcd, err = store.StartEmbedded(ctx, store.EmbeddedConfig{Dir: filepath.Join(e.dir, "etcd"),
		ClientURL: etcdClient, PeerURL: fmt.Sprintf("http://127.0.0.1:%d", ports[1])})
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	pkiDir := filepath.Join(e.dir, "pki")
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return err
	}
	p, err := newPKI(pkiDir)
	if err != nil {
		return err
	}
	apiPort := ports[2]
	e.apiURL = fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	for _, c := range []struct {
		name, cn string
		groups   []string
		hosts    []string
	}{
		{"apiserver", "kube-apiserver", nil, []string{"127.0.0.1", e.hostIP, "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "10.215.0.1"}},
		{"admin", "admin", []string{"system:masters"}, nil},
		{"kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil},
		{"front-proxy-client", "front-proxy-client", nil, nil},
	} {
		if err := p.issue(c.name, c.cn, c.groups, c.hosts); err != nil {
			return err
		}
	}
	if e.kubeconfig, err = p.kubeconfig("admin", e.apiURL); err != nil {
		return err
	}
	logs := filepath.Join(e.dir, "logs")
	_ = os.MkdirAll(logs, 0o755)
	e.apiserver, err = startProc("kube-apiserver", filepath.Join(logs, "kube-apiserver.log"), nil, filepath.Join(e.tools, "kube-apiserver"),
		"--etcd-servers="+etcdClient,
		"--bind-address=0.0.0.0", fmt.Sprintf("--secure-port=%d", apiPort), "--advertise-address="+e.hostIP,
		"--tls-cert-file="+p.path("apiserver.crt"), "--tls-private-key-file="+p.path("apiserver.key"),
		"--client-ca-file="+p.path("ca.crt"),
		"--service-account-key-file="+p.path("sa.pub"), "--service-account-signing-key-file="+p.path("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-cluster-ip-range=10.215.0.0/24",
		"--authorization-mode=Node,RBAC",
		"--kubelet-client-certificate="+p.path("kubelet-client.crt"), "--kubelet-client-key="+p.path("kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP",
		"--proxy-client-cert-file="+p.path("front-proxy-client.crt"), "--proxy-client-key-file="+p.path("front-proxy-client.key"),
		"--requestheader-client-ca-file="+p.path("ca.crt"), "--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--enable-aggregator-routing=true",
		"--allow-privileged=true",
		// Burst flags, as an operator sets them for a node that takes
		// hundreds of pods at once (see internal/kubelet/README.md): room
		// for the requests in flight a burst makes, and no fair-queuing
		// seats that would hold the kubelet's status writes back.
		"--max-requests-inflight=2000", "--max-mutating-requests-inflight=1000",
		"--enable-priority-and-fairness=false",
		"--endpoint-reconciler-type=none",
		"--v=0")
	if err != nil {
		return err
	}
	if err := waitReadyz(e.apiURL, p, 120*time.Second); err != nil {
		return fmt.Errorf("kube-apiserver: %w\n%s", err, e.apiserver.tail(40))
	}
	rc, err := clientcmd.BuildConfigFromFlags("", e.kubeconfig)
	if err != nil {
		return err
	}
	rc.QPS, rc.Burst = 500, 1000
	if e.kube, err = kubernetes.NewForConfig(rc); err != nil {
		return err
	}

	e.kcm, err = startProc("kube-controller-manager", filepath.Join(logs, "kube-controller-manager.log"), nil, filepath.Join(e.tools, "kube-controller-manager"),
		"--kubeconfig="+e.kubeconfig, "--authentication-kubeconfig="+e.kubeconfig, "--authorization-kubeconfig="+e.kubeconfig,
		"--leader-elect=false", "--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", ports[3]),
		"--root-ca-file="+p.path("ca.crt"), "--service-account-private-key-file="+p.path("sa.key"),
		"--use-service-account-credentials=false",
		// The controller-manager's client defaults to 20 QPS / 30 burst: a
		// ReplicaSet of 500 would take 25 s just to create its pods.
		"--kube-api-qps=1000", "--kube-api-burst=2000",
		"--concurrent-replicaset-syncs=10", "--concurrent-deployment-syncs=10",
		"--controllers=*",
		"--v=0")
	if err != nil {
		return err
	}
	// The scheduler's client defaults to 50 QPS / 100 burst, one binding
	// per pod: raised likewise.
	schedCfg := filepath.Join(e.dir, "scheduler.yaml")
	if err := os.WriteFile(schedCfg, []byte(fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection: {leaderElect: false}
clientConnection: {kubeconfig: %s, qps: 1000, burst: 2000}
parallelism: 16
`, e.kubeconfig)), 0o600); err != nil {
		return err
	}
	e.scheduler, err = startProc("kube-scheduler", filepath.Join(logs, "kube-scheduler.log"), nil, filepath.Join(e.tools, "kube-scheduler"),
		"--config="+schedCfg, "--authentication-kubeconfig="+e.kubeconfig, "--authorization-kubeconfig="+e.kubeconfig,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", ports[4]), "--v=0")
	if err != nil {
		return err
	}

	// skiff, all in one.
	e.etcdURLs = map[string]string{"kube": etcdClient, "skiff": fmt.Sprintf("http://127.0.0.1:%d", ports[7])}
	e.skiffDir = filepath.Join(e.dir, "skiff")
	e.skiffCfg = filepath.Join(e.dir, "skiff-client.json")
	e.skiff, err = startProc("skiff-up", filepath.Join(logs, "skiff-up.log"), []string{"SKIFF_CONFIG=" + e.skiffCfg}, e.skiffBin,
		"up", "--data-dir", e.skiffDir, "--listen", fmt.Sprintf("127.0.0.1:%d", ports[5]),
		"--agent-listen", fmt.Sprintf("127.0.0.1:%d", ports[6]),
		"--etcd-client-url", e.etcdURLs["skiff"], "--etcd-peer-url", fmt.Sprintf("http://127.0.0.1:%d", mustPort()),
		"--cluster-cidr", podCIDR, "--name", "kube-host",
		// Declared capacity for the 500-pod benchmark: its pods sleep.
		"--cpu", "256", "--memory", "256Gi",
		// The forecast-driven warm pool only for the benchmark (its native
		// peer, skiff bench burst, runs as an operator would run it); the
		// scenarios need none.
		"--pool-max-per-host", poolMax())
	if err != nil {
		return err
	}
	if _, err := e.skiff.waitOutput(regexp.MustCompile(`skiff is up`), 90*time.Second); err != nil {
		return err
	}
	cfg, err := client.LoadConfig(e.skiffCfg)
	if err != nil {
		return err
	}
	if e.sc, err = client.New(cfg); err != nil {
		return err
	}
	img := filepath.Join(e.dir, "busybox-oci.tar")
	if out, err := exec.Command(filepath.Join(repo, "scripts", "build-test-image.sh"), img).CombinedOutput(); err != nil {
		return fmt.Errorf("build-test-image.sh: %v\n%s", err, out)
	}
	if _, err := e.sc.ImportImage(ctx, img, nil); err != nil {
		return fmt.Errorf("import image: %w", err)
	}
	// The in-cluster client image: a client-go program, statically built.
	bin := filepath.Join(e.dir, "incluster")
	build := exec.Command("go", "build", "-o", bin, "./tests/kube/testdata/incluster")
	build.Dir, build.Env = repo, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build the in-cluster client: %v\n%s", err, out)
	}
	content, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	if err := writeImage(filepath.Join(e.dir, "incluster.tar"), "incluster:latest", "incluster", content); err != nil {
		return err
	}
	if _, err := e.sc.ImportImage(ctx, filepath.Join(e.dir, "incluster.tar"), nil); err != nil {
		return fmt.Errorf("import the in-cluster image: %w", err)
	}
	e.nodeName = "skiff-virtual"
	return e.startKubelet()
}

func mustPort() int {
	p, err := freePorts(1)
	if err != nil {
		panic(err)
	}
	return p[0]
}

var kubeletReady = regexp.MustCompile(`node \S+ ready; kubelet API on https://(\S+)`)

func (e *env) startKubelet() error {
	var err error
	if e.kubelet != nil {
		if e.kubelet, err = e.kubelet.restart(); err != nil {
			return err
		}
	} else {
		apiPort := e.apiURL[strings.LastIndexByte(e.apiURL, ':')+1:]
		e.kubelet, err = startProc("skiff-kubelet", filepath.Join(e.dir, "logs", "skiff-kubelet.log"), nil, e.skiffBin,
			"kubelet", "--config", e.skiffCfg, "--kubeconfig", e.kubeconfig, "--node-name", e.nodeName,
			"--node-ip", e.hostIP, "--port", itoa(mustPort()),
			"--client-ca-file", filepath.Join(e.dir, "pki", "ca.crt"),
			"--requestheader-client-ca-file", filepath.Join(e.dir, "pki", "ca.crt"),
			"--serve-metrics-api",
			"--pod-apiserver", "https://"+net.JoinHostPort(e.hostIP, apiPort),
			"--workers", "256", "--kube-api-qps", "1000", "--kube-api-burst", "2000",
			"--pprof", os.Getenv("SKIFF_KUBE_KUBELET_PPROF"))
		if err != nil {
			return err
		}
	}
	_, err = e.kubelet.waitOutput(kubeletReady, 90*time.Second)
	return err
}

func itoa(n int) string { return fmt.Sprint(n) }

// stop deletes every group, then stops everything, kubelet first.
func (e *env) stop() {
	e.kubelet.stop(10 * time.Second)
	if e.sc != nil && e.skiff != nil && !e.skiff.exited() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		_ = poll(90*time.Second, func() (bool, error) {
			gs, err := e.sc.ListAllGroups(ctx, client.ListOptions{All: true})
			if err != nil {
				return false, nil
			}
			for _, g := range gs {
				if !g.Deleting {
					_, _ = e.sc.DeleteGroup(ctx, g.ID, true)
				}
			}
			return len(gs) == 0, nil
		})
		cancel()
	}
	e.skiff.stop(60 * time.Second) // the agent drains its warm pool on the way out
	e.scheduler.stop(5 * time.Second)
	e.kcm.stop(5 * time.Second)
	e.apiserver.stop(10 * time.Second)
	if e.etcd != nil {
		e.etcd.Close()
	}
	// The agent keeps its (empty) cgroup parent on purpose; this host is
	// gone for good. A pool the agent could not drain in time (a loaded
	// machine) goes with it: its pin namespace, then its empty cgroups.
	_ = syscall.Unmount(filepath.Join(e.skiffDir, "agent", "sandboxes", "pinns"), syscall.MNT_DETACH)
	removeCgroupParent(filepath.Join(e.skiffDir, "agent"))
}

// poolMax is skiff up's --pool-max-per-host: 0 (no forecast-driven warm
// pool) but for the benchmark.
func poolMax() string {
	if os.Getenv("SKIFF_KUBE_BENCH") != "" {
		return "128"
	}
	return "0"
}

func removeCgroupParent(dataDir string) {
	var h uint32 = 2166136261
	for i := 0; i < len(dataDir); i++ {
		h ^= uint32(dataDir[i])
		h *= 16777619
	}
	parent := fmt.Sprintf("skiff/%08x", h)
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + parent)
	dirs2, _ := filepath.Glob("/sys/fs/cgroup/" + parent)
	for _, d := range append(dirs, dirs2...) {
		// Prepared (warm pool) sandboxes left behind have no processes.
		prepared, _ := filepath.Glob(filepath.Join(d, "_p*"))
		for _, p := range prepared {
			_ = os.Remove(p)
		}
		_ = os.Remove(d)
	}
}

func waitReadyz(url string, p *pki, timeout time.Duration) error {
	cert, err := tls.LoadX509KeyPair(p.path("admin.crt"), p.path("admin.key"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.caCert)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	return poll(timeout, func() (bool, error) {
		resp, err := hc.Get(url + "/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == 200, nil
	})
}

// hostIP is this machine's primary address: pods reach the apiserver there
// (their own loopback is not the host's). The UDP "dial" sends nothing.
func hostIP() (string, error) {
	c, err := net.Dial("udp", "192.0.2.1:9")
	if err == nil {
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String(), nil
		}
	}
	return "", errors.New("no non-loopback IPv4 address for pods to reach the apiserver at")
}

// kubectl runs the real kubectl against the test cluster.
func (e *env) kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(e.tools, "kubectl"), append([]string{"--kubeconfig", e.kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

// groupsOfNode lists the skiff groups of the virtual node.
func (e *env) groupsOfNode(ctx context.Context) ([]api.Group, error) {
	return e.sc.ListAllGroups(ctx, client.ListOptions{Labels: map[string]string{"k8s.skiff.io/node": e.nodeName}, All: true})
}
