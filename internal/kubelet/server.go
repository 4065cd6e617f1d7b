package kubelet

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

var errServerClosed = http.ErrServerClosed

const (
	streamIdleTimeout     = 4 * time.Hour
	streamCreationTimeout = 30 * time.Second
)

func (k *Kubelet) port() int {
	if k.Addr != "" {
		if _, p, err := net.SplitHostPort(k.Addr); err == nil {
			n, _ := strconv.Atoi(p)
			return n
		}
	}
	return k.cfg.Port
}

// listen opens the kubelet API's TLS listener.
func (k *Kubelet) listen() (*http.Server, net.Listener, error) {
	var cert tls.Certificate
	var err error
	if k.cfg.TLSCertFile != "" {
		cert, err = tls.LoadX509KeyPair(k.cfg.TLSCertFile, k.cfg.TLSKeyFile)
	} else {
		cert, err = selfSigned(k.cfg.NodeName, k.cfg.NodeIP)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("kubelet API certificate: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if k.cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(k.cfg.ClientCAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("client CA %s: no certificates", k.cfg.ClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	k.tlsConfig = tc
	addr := net.JoinHostPort(k.cfg.NodeIP, strconv.Itoa(k.cfg.Port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("kubelet API: %w", err)
	}
	srv := &http.Server{Handler: k.handler(), ReadHeaderTimeout: 30 * time.Second,
		ErrorLog: nil}
	return srv, tls.NewListener(ln, tc), nil
}

func selfSigned(name, ip string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name + "@skiff-kubelet"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{name},
	}
	if p := net.ParseIP(ip); p != nil {
		tmpl.IPAddresses = []net.IP{p}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// handler is the kubelet API: every route is authenticated and authorized
// against the apiserver, as the kubelet's webhook mode does.
func (k *Kubelet) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	route := func(pattern, subresource string, h http.HandlerFunc) {
		mux.Handle(pattern, k.authorized(subresource, h))
	}
	route("GET /pods", "proxy", k.servePods)
	route("GET /containerLogs/{ns}/{pod}/{container}", "proxy", k.serveLogs)
	route("/exec/{ns}/{pod}/{container}", "proxy", k.serveExec)
	route("/exec/{ns}/{pod}/{uid}/{container}", "proxy", k.serveExec)
	route("/attach/{ns}/{pod}/{container}", "proxy", k.serveAttach)
	route("/attach/{ns}/{pod}/{uid}/{container}", "proxy", k.serveAttach)
	route("/portForward/{ns}/{pod}", "proxy", k.servePortForward)
	route("/portForward/{ns}/{pod}/{uid}", "proxy", k.servePortForward)
	route("GET /stats/summary", "stats", k.serveSummary)
	route("GET /metrics/resource", "metrics", k.serveResourceMetrics)
	k.metricsAPIRoutes(mux)
	return mux
}

// user is an authenticated caller.
type user struct {
	name   string
	uid    string
	groups []string
	extra  map[string]authorizationv1.ExtraValue
}

type authCache struct {
	mu sync.Mutex
	m  map[string]authEntry
}

type authEntry struct {
	ok      bool
	u       user
	expires time.Time
}

var tokenReviews = &authCache{m: map[string]authEntry{}}
var accessReviews = &authCache{m: map[string]authEntry{}}

func (c *authCache) get(key string) (authEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || time.Now().After(e.expires) {
		return authEntry{}, false
	}
	return e, true
}

func (c *authCache) put(key string, e authEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) > 10000 {
		c.m = map[string]authEntry{}
	}
	c.m[key] = e
}

// authenticate finds who is calling: a client certificate signed by the
// client CA, or a bearer token the apiserver vouches for (TokenReview).
func (k *Kubelet) authenticate(r *http.Request) (user, bool, error) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.PeerCertificates) > 0 {
		c := r.TLS.PeerCertificates[0]
		return user{name: c.Subject.CommonName, groups: c.Subject.Organization}, true, nil
	}
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || tok == "" {
		return user{}, false, nil
	}
	sum := sha256.Sum256([]byte(tok))
	key := string(sum[:])
	if e, ok := tokenReviews.get(key); ok {
		return e.u, e.ok, nil
	}
	tr, err := k.kube.AuthenticationV1().TokenReviews().Create(r.Context(),
		&authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: tok}}, metav1.CreateOptions{})
	if err != nil {
		return user{}, false, err
	}
	u := user{name: tr.Status.User.Username, uid: tr.Status.User.UID, groups: tr.Status.User.Groups}
	if len(tr.Status.User.Extra) > 0 {
		u.extra = map[string]authorizationv1.ExtraValue{}
		for k, v := range tr.Status.User.Extra {
			u.extra[k] = authorizationv1.ExtraValue(v)
		}
	}
	ttl := time.Minute
	if !tr.Status.Authenticated {
		ttl = 10 * time.Second
	}
	tokenReviews.put(key, authEntry{ok: tr.Status.Authenticated, u: u, expires: time.Now().Add(ttl)})
	return u, tr.Status.Authenticated, nil
}

func verbOf(method string) string {
	switch method {
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		return "delete"
	}
	return "get"
}

// authorized wraps h with authentication and a SubjectAccessReview for
// nodes/<subresource> of this node.
func (k *Kubelet) authorized(subresource string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, ok, err := k.authenticate(r)
		if err != nil {
			http.Error(w, "authentication failed: "+err.Error(), http.StatusInternalServerError)
			return
		}
		if !ok {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		verb := verbOf(r.Method)
		key := fmt.Sprintf("%s|%s|%s|%s|%s", u.name, strings.Join(u.groups, ","), u.uid, verb, subresource)
		allowed := false
		reason := ""
		if e, ok := accessReviews.get(key); ok {
			allowed = e.ok
		} else {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: u.name, UID: u.uid, Groups: u.groups, Extra: u.extra,
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Verb: verb, Resource: "nodes", Subresource: subresource, Name: k.cfg.NodeName,
				},
			}}
			res, err := k.kube.AuthorizationV1().SubjectAccessReviews().Create(r.Context(), sar, metav1.CreateOptions{})
			if err != nil {
				http.Error(w, "authorization failed: "+err.Error(), http.StatusInternalServerError)
				return
			}
			allowed, reason = res.Status.Allowed, res.Status.Reason
			accessReviews.put(key, authEntry{ok: allowed, expires: time.Now().Add(30 * time.Second)})
		}
		if !allowed {
			msg := fmt.Sprintf("Forbidden (user=%s, verb=%s, resource=nodes, subresource=%s)", u.name, verb, subresource)
			if reason != "" {
				msg += ": " + reason
			}
			http.Error(w, msg, http.StatusForbidden)
			return
		}
		h(w, r)
	})
}

// podGroup finds a pod of this node and its group.
func (k *Kubelet) podGroup(ns, name, uid string) (*corev1.Pod, *api.Group, error) {
	pod, err := k.pods.Pods(ns).Get(name)
	if err != nil {
		return nil, nil, fmt.Errorf("pod %s/%s: %w", ns, name, err)
	}
	if uid != "" && string(pod.UID) != uid {
		return nil, nil, fmt.Errorf("pod %s/%s has UID %s, not %s", ns, name, pod.UID, uid)
	}
	g := k.groups.get(string(pod.UID))
	if g == nil {
		return pod, nil, fmt.Errorf("pod %s/%s has no container group yet", ns, name)
	}
	return pod, g, nil
}

func (k *Kubelet) servePods(w http.ResponseWriter, r *http.Request) {
	list := corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}}
	for _, obj := range k.podInformer.GetStore().List() {
		list.Items = append(list.Items, *obj.(*corev1.Pod))
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(list)
}

// flushWriter flushes after every write, for followed logs.
type flushWriter struct {
	w http.ResponseWriter
	f http.Flusher
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if f.f != nil {
		f.f.Flush()
	}
	return n, err
}

func (k *Kubelet) serveLogs(w http.ResponseWriter, r *http.Request) {
	_, g, err := k.podGroup(r.PathValue("ns"), r.PathValue("pod"), "")
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	opts := client.LogOptions{Container: r.PathValue("container")}
	opts.Follow = q.Get("follow") == "true"
	opts.Previous = q.Get("previous") == "true"
	opts.Timestamps = q.Get("timestamps") == "true"
	if v := q.Get("tailLines"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			http.Error(w, "tailLines: not a count", http.StatusBadRequest)
			return
		}
		opts.Tail = &n
	}
	if v := q.Get("sinceSeconds"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			http.Error(w, "sinceSeconds: not a positive count", http.StatusBadRequest)
			return
		}
		opts.Since = strconv.Itoa(n) + "s"
	} else if v := q.Get("sinceTime"); v != "" {
		opts.Since = v
	}
	rc, err := k.skiff.Logs(r.Context(), g.ID, opts)
	if err != nil && opts.Previous && client.IsNotFound(err) && !containerRunning(g, opts.Container) {
		// Between an exit and the restart (back-off) skiff's "current"
		// log is the instance that ended: what --previous means here.
		opts.Previous = false
		rc, err = k.skiff.Logs(r.Context(), g.ID, opts)
	}
	if err != nil {
		code := client.StatusCode(err)
		if code == 0 {
			code = http.StatusBadGateway
		}
		http.Error(w, err.Error(), code)
		return
	}
	defer rc.Close()
	var src io.Reader = rc
	if v := q.Get("limitBytes"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			src = io.LimitReader(rc, n)
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	if !opts.Follow {
		_, _ = io.Copy(w, src)
		return
	}
	_, _ = io.Copy(flushWriter{w: w, f: f}, bufio.NewReaderSize(src, 32<<10))
}

// streamer runs exec, attach and port-forward sessions on skiff groups; the
// stream protocols themselves (SPDY and WebSocket) are the Kubernetes
// streaming library's.
type streamer struct{ k *Kubelet }

// ExecInContainer implements remotecommand.Executor. name is "ns/pod".
func (s streamer) ExecInContainer(ctx context.Context, name, uid, container string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, timeout time.Duration) error {
	ns, pod, _ := strings.Cut(name, "/")
	_, g, err := s.k.podGroup(ns, pod, uid)
	if err != nil {
		return err
	}
	opts := client.ExecOptions{Container: container, Command: cmd, TTY: tty}
	if in != nil {
		opts.Stdin = in
	}
	if out != nil {
		opts.Stdout = out
	}
	if errw != nil {
		opts.Stderr = errw
	} else if out == nil {
		opts.Stderr = io.Discard
	}
	opts.Resize = termSizes(ctx, resize)
	code, err := s.k.skiff.ExecInteractive(ctx, g.ID, opts)
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: code}
	}
	return nil
}

// termSizes converts the streaming library's terminal sizes to skiff's,
// until ctx is done; nil in, nil out.
func termSizes(ctx context.Context, resize <-chan remotecommand.TerminalSize) <-chan api.TermSize {
	if resize == nil {
		return nil
	}
	rc := make(chan api.TermSize, 4)
	go func() {
		defer close(rc)
		for {
			select {
			case <-ctx.Done():
				return
			case sz, ok := <-resize:
				if !ok {
					return
				}
				select {
				case rc <- api.TermSize{Rows: sz.Height, Cols: sz.Width}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return rc
}

// AttachContainer implements remotecommand.Attacher. A container started
// with stdin or tty is attached through skiff's attach stream: input,
// terminal resizes and output reach its pid 1. Any other container has no
// stdin to give: its output is followed through its log and input is
// dropped.
func (s streamer) AttachContainer(ctx context.Context, name, uid, container string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	ns, podName, _ := strings.Cut(name, "/")
	pod, g, err := s.k.podGroup(ns, podName, uid)
	if err != nil {
		return err
	}
	dst := io.Writer(io.Discard)
	if out != nil {
		dst = out
	} else if errw != nil {
		dst = errw
	}
	if c := specContainer(pod, container); c != nil && (c.Stdin || c.TTY) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		opts := client.AttachOptions{Container: container, Stdout: dst, Resize: termSizes(ctx, resize)}
		if in != nil && c.Stdin {
			opts.Stdin = in
		}
		return s.k.skiff.Attach(ctx, g.ID, opts)
	}
	if in != nil {
		// Drained so the client does not block: the container has no
		// stdin to give it to.
		go func() { _, _ = io.Copy(io.Discard, in) }()
	}
	tail := 0
	rc, err := s.k.skiff.Logs(ctx, g.ID, client.LogOptions{Container: container, Follow: true, Tail: &tail})
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(dst, rc)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// specContainer finds a container of pod by name ("" is the first).
func specContainer(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.Containers {
		if name == "" || pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	return nil
}

// PortForward implements portforward.PortForwarder: it connects to the
// port on the group's IP when this machine routes to it (a skiff host),
// else it runs nc inside the group over exec.
func (s streamer) PortForward(ctx context.Context, name, uid string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	ns, pod, _ := strings.Cut(name, "/")
	p, g, err := s.k.podGroup(ns, pod, uid)
	if err != nil {
		return err
	}
	if g.IP != "" {
		d := net.Dialer{Timeout: 2 * time.Second}
		if c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(g.IP, strconv.Itoa(int(port)))); err == nil {
			defer c.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(c, stream); closeWrite(c); done <- struct{}{} }()
			go func() { _, _ = io.Copy(stream, c); done <- struct{}{} }()
			select {
			case <-done:
			case <-ctx.Done():
			}
			return nil
		}
	}
	ctr := ""
	if len(p.Spec.Containers) > 0 {
		ctr = p.Spec.Containers[0].Name
	}
	code, err := s.k.skiff.ExecInteractive(ctx, g.ID, client.ExecOptions{
		Container: ctr, Command: []string{"nc", "127.0.0.1", strconv.Itoa(int(port))},
		Stdin: stream, Stdout: stream, Stderr: io.Discard,
	})
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("port %d of pod %s: nc exited %d (nothing listening, or no nc in the image)", port, name, code)
	}
	return nil
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

func (k *Kubelet) serveExec(w http.ResponseWriter, r *http.Request) {
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cmd := r.URL.Query()["command"]
	if len(cmd) == 0 {
		http.Error(w, "no command", http.StatusBadRequest)
		return
	}
	name := r.PathValue("ns") + "/" + r.PathValue("pod")
	if _, _, err := k.podGroup(r.PathValue("ns"), r.PathValue("pod"), r.PathValue("uid")); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	remotecommand.ServeExec(w, r, streamer{k}, name, r.PathValue("uid"), r.PathValue("container"), cmd, opts,
		streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (k *Kubelet) serveAttach(w http.ResponseWriter, r *http.Request) {
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	name := r.PathValue("ns") + "/" + r.PathValue("pod")
	if _, _, err := k.podGroup(r.PathValue("ns"), r.PathValue("pod"), r.PathValue("uid")); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	remotecommand.ServeAttach(w, r, streamer{k}, name, r.PathValue("uid"), r.PathValue("container"), opts,
		streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (k *Kubelet) servePortForward(w http.ResponseWriter, r *http.Request) {
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	name := r.PathValue("ns") + "/" + r.PathValue("pod")
	if _, _, err := k.podGroup(r.PathValue("ns"), r.PathValue("pod"), r.PathValue("uid")); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	portforward.ServePortForward(w, r, streamer{k}, name, r.PathValue("uid"), opts,
		streamIdleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
}

var _ = errors.New

func containerRunning(g *api.Group, name string) bool {
	for _, c := range g.Containers {
		if c.Name == name {
			return c.State == api.ContainerRunning
		}
	}
	return false
}
