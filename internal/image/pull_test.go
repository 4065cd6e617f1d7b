package image_test

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/image"
	"github.com/skiffhq/skiff/internal/image/imagetest"
	"github.com/skiffhq/skiff/internal/image/registrytest"
)

// Pulls against a real registry (Debian's docker-registry) on loopback.

// fastRegistry keeps failing pulls short.
func fastRegistry(insecure ...string) image.Option {
	return image.WithRegistry(image.RegistryConfig{Insecure: insecure, StallTimeout: 2 * time.Second, Retries: -1, Timeout: 20 * time.Second})
}

func twoLayerImage(t *testing.T, tag string) v1.Image {
	t.Helper()
	img, err := registrytest.Image(t.TempDir(), imagetest.Image{Layers: []imagetest.Layer{baseLayer, topLayer}, Cmd: []string{"run-" + tag}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func wantReason(t *testing.T, err error, reason string, class error) {
	t.Helper()
	if err == nil {
		t.Fatalf("pull succeeded; want %s", reason)
	}
	if got := image.PullReason(err); got != reason {
		t.Errorf("reason %s, want %s (err: %v)", got, reason, err)
	}
	if class != nil && !errors.Is(err, class) {
		t.Errorf("error %v is not %v", err, class)
	}
}

func TestPullPlainHTTPNeedsConfiguration(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	reg.Push(t, "app/two:1", twoLayerImage(t, "1"))

	s := openStore(t, fastRegistry())
	_, err := s.Pull(ctx, reg.Ref("app/two:1"), image.PullOptions{})
	wantReason(t, err, "RegistryInsecure", errdefs.ErrUnavailable)
	if !strings.Contains(err.Error(), "--insecure-registry") {
		t.Errorf("message gives no way out: %v", err)
	}

	// Allowed per pull, as a group's plainHttpRegistries does.
	mark := reg.Mark()
	res, err := s.Pull(ctx, reg.Ref("app/two:1"), image.PullOptions{PlainHTTP: []string{reg.Host}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Layers != 2 || res.LayersFetched != 2 || res.Cached || res.Fetched == 0 {
		t.Errorf("first pull: %+v", res)
	}
	r := mustResolve(t, s, reg.Ref("app/two:1"))
	if r.Digest != res.Digest || len(r.LayerDirs) != 2 || r.Config.Cmd[0] != "run-1" {
		t.Errorf("resolved %+v for %+v", r, res)
	}
	if got := readFile(t, filepath.Join(r.LayerDirs[1], "b/new")); got != "new\n" {
		t.Errorf("top layer content %q", got)
	}
	blobs := blobGETs(reg.Since(mark))
	if len(blobs) != 3 { // config + 2 layers
		t.Errorf("first pull fetched %d blobs, want 3: %v", len(blobs), blobs)
	}

	// Again: the manifest only, no blob.
	mark = reg.Mark()
	res, err = s.Pull(ctx, reg.Ref("app/two:1"), image.PullOptions{PlainHTTP: []string{reg.Host}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Cached || res.LayersFetched != 0 {
		t.Errorf("second pull: %+v", res)
	}
	if blobs := blobGETs(reg.Since(mark)); len(blobs) != 0 {
		t.Errorf("second pull fetched blobs: %v", blobs)
	}
}

func blobGETs(reqs []registrytest.Request) []string {
	var out []string
	for _, q := range reqs {
		if q.IsBlobGET() {
			out = append(out, q.Path)
		}
	}
	return out
}

func TestPullBasicAuth(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{User: "alice", Password: "s3cret-pw"})
	reg.Push(t, "private/app:v1", twoLayerImage(t, "auth"))
	s := openStore(t, fastRegistry(reg.Host))

	_, err := s.Pull(ctx, reg.Ref("private/app:v1"), image.PullOptions{})
	wantReason(t, err, "RegistryUnauthorized", errdefs.ErrUnauthorized)

	_, err = s.Pull(ctx, reg.Ref("private/app:v1"), image.PullOptions{Credentials: []image.Credential{{Server: reg.Host, Username: "alice", Password: "wrong"}}})
	wantReason(t, err, "RegistryUnauthorized", errdefs.ErrUnauthorized)
	if strings.Contains(err.Error(), "wrong") {
		t.Errorf("the error shows the password: %v", err)
	}

	// A credential for another registry is not sent.
	_, err = s.Pull(ctx, reg.Ref("private/app:v1"), image.PullOptions{Credentials: []image.Credential{{Server: "other.example:5000", Username: "alice", Password: "s3cret-pw"}}})
	wantReason(t, err, "RegistryUnauthorized", errdefs.ErrUnauthorized)

	res, err := s.Pull(ctx, reg.Ref("private/app:v1"), image.PullOptions{Credentials: []image.Credential{{Server: "http://" + reg.Host + "/", Username: "alice", Password: "s3cret-pw"}}})
	if err != nil {
		t.Fatal(err)
	}
	mustResolve(t, s, res.Ref)
}

func TestPullTLS(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{TLS: true})
	reg.Push(t, "tls/app:1", twoLayerImage(t, "tls"))

	// Not trusted, not allowed: refused with a clear reason.
	s := openStore(t, fastRegistry())
	_, err := s.Pull(ctx, reg.Ref("tls/app:1"), image.PullOptions{})
	wantReason(t, err, "RegistryInsecure", nil)

	// Allowed without verification for one pull (insecureRegistries).
	if _, err := s.Pull(ctx, reg.Ref("tls/app:1"), image.PullOptions{Insecure: []string{reg.Host}}); err != nil {
		t.Fatal(err)
	}

	// Trusted through the store's CA pool.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(reg.CertPEM)
	s2 := openStore(t, image.WithRegistry(image.RegistryConfig{RootCAs: pool, Retries: -1}))
	if _, err := s2.Pull(ctx, reg.Ref("tls/app:1"), image.PullOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestPullMultiArchAndDigest(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	mine := imagetest.Image{Layers: []imagetest.Layer{baseLayer}, Cmd: []string{"mine"}}
	theirs := imagetest.Image{Layers: []imagetest.Layer{topLayer}, Cmd: []string{"theirs"}, Arch: other}
	idx, err := registrytest.MultiArch(t.TempDir(), theirs, mine)
	if err != nil {
		t.Fatal(err)
	}
	reg.PushIndex(t, "multi/app:1", idx)

	s := openStore(t, fastRegistry(reg.Host))
	res, err := s.Pull(ctx, reg.Ref("multi/app:1"), image.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := mustResolve(t, s, reg.Ref("multi/app:1")); r.Config.Cmd[0] != "mine" || r.Digest != res.Digest {
		t.Errorf("picked %+v", r)
	}

	// A platform the index lacks: a clear not-found.
	s390 := openStore(t, fastRegistry(reg.Host), image.WithPlatform(v1.Platform{OS: "linux", Architecture: "s390x"}))
	_, err = s390.Pull(ctx, reg.Ref("multi/app:1"), image.PullOptions{})
	wantReason(t, err, "ImageNotFound", errdefs.ErrNotFound)

	// Digest pinning: the tag moves, the digest does not.
	first := reg.Push(t, "pin/app:latest", twoLayerImage(t, "first"))
	reg.Push(t, "pin/app:latest", twoLayerImage(t, "second"))
	byDigest := reg.Ref("pin/app@" + first)
	res, err = s.Pull(ctx, byDigest, image.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest != first {
		t.Errorf("pulled %s, want %s", res.Digest, first)
	}
	if r := mustResolve(t, s, byDigest); r.Config.Cmd[0] != "run-first" {
		t.Errorf("by digest: %+v", r.Config)
	}
	if r := mustResolve(t, s, first); r.Digest != first {
		t.Errorf("by bare digest: %+v", r)
	}
	if _, err := s.Resolve(ctx, reg.Ref("pin/app:latest")); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("a digest pull wrote a tag: %v", err)
	}
	res, err = s.Pull(ctx, reg.Ref("pin/app:latest"), image.PullOptions{})
	if err != nil || res.Digest == first {
		t.Errorf("tag pull: %+v %v", res, err)
	}

	// A digest the registry does not have.
	_, err = s.Pull(ctx, reg.Ref("pin/app@sha256:"+strings.Repeat("ab", 32)), image.PullOptions{})
	wantReason(t, err, "ImageNotFound", errdefs.ErrNotFound)
}

func TestPullNotFound(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	reg.Push(t, "exists/app:1", twoLayerImage(t, "x"))
	s := openStore(t, fastRegistry(reg.Host))
	for _, ref := range []string{"nope/app:1", "exists/app:2"} {
		_, err := s.Pull(ctx, reg.Ref(ref), image.PullOptions{})
		wantReason(t, err, "ImageNotFound", errdefs.ErrNotFound)
	}
	// Nothing listens there.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	_, err := s.Pull(ctx, addr+"/x/y:1", image.PullOptions{PlainHTTP: []string{addr}})
	wantReason(t, err, "RegistryUnavailable", errdefs.ErrUnavailable)
	_, err = s.Pull(ctx, "UPPER/bad ref", image.PullOptions{})
	wantReason(t, err, "InvalidImage", errdefs.ErrInvalid)
	assertEmpty(t, s)
}

// proxy puts a handler in front of the registry; change, when set, may
// rewrite a response.
func proxy(t *testing.T, reg *registrytest.Registry, change func(r *http.Request, w http.ResponseWriter) bool) string {
	t.Helper()
	target, _ := url.Parse(reg.URL())
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if change != nil && change(r, w) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestPullTamperedBlobRejected(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	reg.Push(t, "app/t:1", twoLayerImage(t, "t"))
	target, _ := url.Parse(reg.URL())
	// Flip a byte in every layer blob (the config is small: leave it).
	var tampered int
	var mu sync.Mutex
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		ModifyResponse: func(resp *http.Response) error {
			if !strings.Contains(resp.Request.URL.Path, "/blobs/") || resp.StatusCode != 200 || resp.ContentLength < 200 {
				return nil
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			b[len(b)/2] ^= 0xff
			resp.Body = io.NopCloser(bytes.NewReader(b))
			mu.Lock()
			tampered++
			mu.Unlock()
			return nil
		},
	}
	srv := httptest.NewServer(rp)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	s := openStore(t, fastRegistry(host))
	_, err := s.Pull(ctx, host+"/app/t:1", image.PullOptions{})
	wantReason(t, err, "CorruptImage", image.ErrCorrupt)
	if tampered == 0 {
		t.Fatal("the proxy changed nothing")
	}
	assertEmpty(t, s)
	if ents, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp")); len(ents) != 0 {
		t.Errorf("tmp/ keeps %d entries", len(ents))
	}
}

func TestPullHangingRegistryTimesOut(t *testing.T) {
	// One that accepts and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	host := l.Addr().String()
	s := openStore(t, image.WithRegistry(image.RegistryConfig{Insecure: []string{host}, StallTimeout: 500 * time.Millisecond, Retries: 1, RetryBackoff: 100 * time.Millisecond}))
	start := time.Now()
	_, err = s.Pull(ctx, host+"/x/y:1", image.PullOptions{})
	wantReason(t, err, "PullTimeout", errdefs.ErrTimeout)
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("took %s", el)
	}

	// One that sends headers and part of a layer, then stops.
	reg := registrytest.Start(t, registrytest.Options{})
	reg.Push(t, "app/h:1", twoLayerImage(t, "h"))
	stall := make(chan struct{})
	defer close(stall)
	host2 := proxy(t, reg, func(r *http.Request, w http.ResponseWriter) bool {
		if !strings.Contains(r.URL.Path, "/blobs/") || r.Method != http.MethodGet {
			return false
		}
		// The real headers and the first bytes, then nothing.
		resp, err := http.Get(reg.URL() + r.URL.Path)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Length", resp.Header.Get("Content-Length"))
		w.WriteHeader(resp.StatusCode)
		io.CopyN(w, resp.Body, 2)
		w.(http.Flusher).Flush()
		select {
		case <-stall:
		case <-r.Context().Done():
		}
		return true
	})
	s2 := openStore(t, image.WithRegistry(image.RegistryConfig{Insecure: []string{host2}, StallTimeout: 500 * time.Millisecond, Retries: -1}))
	_, err = s2.Pull(ctx, host2+"/app/h:1", image.PullOptions{})
	wantReason(t, err, "PullTimeout", errdefs.ErrTimeout)
	assertEmpty(t, s2)
}

func TestPullGarbageResponses(t *testing.T) {
	var hits int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		switch {
		case r.URL.Path == "/v2/":
			w.WriteHeader(200)
		case strings.HasPrefix(r.URL.Path, "/v2/garbage/"):
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Write([]byte("\x00\x01 this is not json {{{"))
		case strings.HasPrefix(r.URL.Path, "/v2/html/"):
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte("<html>hello</html>"))
		case strings.HasPrefix(r.URL.Path, "/v2/broken/"):
			w.WriteHeader(http.StatusBadGateway)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	s := openStore(t, image.WithRegistry(image.RegistryConfig{Insecure: []string{host}, Retries: 2, RetryBackoff: 20 * time.Millisecond, StallTimeout: 2 * time.Second}))
	for _, repo := range []string{"garbage", "html"} {
		_, err := s.Pull(ctx, host+"/"+repo+"/x:1", image.PullOptions{})
		wantReason(t, err, "InvalidImage", errdefs.ErrInvalid)
	}
	mu.Lock()
	hits = 0
	mu.Unlock()
	_, err := s.Pull(ctx, host+"/broken/x:1", image.PullOptions{})
	wantReason(t, err, "RegistryUnavailable", errdefs.ErrUnavailable)
	mu.Lock()
	defer mu.Unlock()
	if hits < 3 {
		t.Errorf("a 502 was tried %d times; want 1 + 2 retries", hits)
	}
	assertEmpty(t, s)
}

func TestConcurrentPullsShareOneDownload(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	digest := reg.Push(t, "app/dedupe:1", twoLayerImage(t, "dedupe"))
	s := openStore(t, fastRegistry(reg.Host))
	mark := reg.Mark()
	const n = 24
	var wg sync.WaitGroup
	errs := make(chan error, n)
	var progressed sync.Map
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ref := reg.Ref("app/dedupe:1")
			if i%3 == 0 {
				ref = reg.Ref("app/dedupe@" + digest) // same image, another name
			}
			_, err := s.Pull(ctx, ref, image.PullOptions{Progress: func(p image.Progress) { progressed.Store(i, true) }})
			errs <- err
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	blobs := blobGETs(reg.Since(mark))
	seen := map[string]int{}
	for _, b := range blobs {
		seen[b]++
	}
	if len(seen) != 3 {
		t.Errorf("blobs fetched: %v", seen)
	}
	for b, c := range seen {
		if c != 1 {
			t.Errorf("%s fetched %d times by %d concurrent pulls", b, c, n)
		}
	}
	count := 0
	progressed.Range(func(any, any) bool { count++; return true })
	if count != n {
		t.Errorf("%d of %d pulls saw progress", count, n)
	}
}

func TestPullFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounts a tmpfs: needs root")
	}
	reg := registrytest.Start(t, registrytest.Options{})
	big := imagetest.Image{Layers: []imagetest.Layer{baseLayer, registrytest.RandomLayer("blob.bin", 3<<20)}, Cmd: []string{"x"}}
	img, err := registrytest.Image(t.TempDir(), big)
	if err != nil {
		t.Fatal(err)
	}
	reg.Push(t, "app/big:1", img)
	reg.Push(t, "app/small:1", twoLayerImage(t, "small"))

	dir := filepath.Join(t.TempDir(), "small-disk")
	os.MkdirAll(dir, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", "-l", dir).Run()
	s, err := image.Open(filepath.Join(dir, "store"), fastRegistry(reg.Host))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Pull(ctx, reg.Ref("app/big:1"), image.PullOptions{})
	wantReason(t, err, "NoSpace", nil)
	if ents, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp")); len(ents) != 0 {
		t.Errorf("tmp/ keeps %d entries after a full disk", len(ents))
	}
	// The store still works.
	if _, err := s.Pull(ctx, reg.Ref("app/small:1"), image.PullOptions{}); err != nil {
		t.Fatalf("pull after a full disk: %v", err)
	}
	mustResolve(t, s, reg.Ref("app/small:1"))
	if _, err := s.Resolve(ctx, reg.Ref("app/big:1")); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("half-pulled image resolves: %v", err)
	}
}

func TestPruneLeastRecentlyUsed(t *testing.T) {
	s := openStore(t)
	var digests []string
	for i := 0; i < 4; i++ {
		img := imagetest.Image{Names: []string{fmt.Sprintf("lru:%d", i)}, Layers: []imagetest.Layer{registrytest.RandomLayer("f", 64<<10)}, Cmd: []string{"x"}}
		if err := importFiles(t, s, must(imagetest.OCIFiles(img))); err != nil {
			t.Fatal(err)
		}
		digests = append(digests, mustResolve(t, s, fmt.Sprintf("lru:%d", i)).Digest)
		time.Sleep(5 * time.Millisecond)
	}
	// Use 0 again: 1 is now the least recently used. Pin 2, mark 3 in use.
	mustResolve(t, s, "lru:0")
	if err := s.Pin(ctx, "cache-1", []string{digests[2]}); err != nil {
		t.Fatal(err)
	}
	inUse := func(d string) bool { return d == digests[3] }
	res, err := s.Prune(ctx, 150<<10, inUse) // room for two of the four
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 2 || res.Removed[0] != digests[1] || res.Removed[1] != digests[0] {
		t.Errorf("removed %v; want 1 then 0 (%v)", res.Removed, digests)
	}
	if res.Freed < 128<<10 || res.Used > 150<<10 {
		t.Errorf("freed %d, used %d", res.Freed, res.Used)
	}
	for _, ref := range []string{"lru:2", "lru:3"} {
		mustResolve(t, s, ref)
	}
	// Everything left is pinned or in use: Prune stops above the cap.
	res, err = s.Prune(ctx, 0, inUse)
	if err != nil || len(res.Removed) != 0 {
		t.Errorf("prune to 0: %+v %v", res, err)
	}
	s.Unpin(ctx, "cache-1")
	res, _ = s.Prune(ctx, 0, inUse)
	if len(res.Removed) != 1 || res.Removed[0] != digests[2] {
		t.Errorf("after unpin: %+v", res)
	}
}
