package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/skiffhq/skiff/api"
)

const (
	testKeyID  = "AKtest"
	testSecret = "s3cret"
)

// checkSignature recomputes the signature of r the way the server must and
// verifies the body hash when the body has been read into body.
func checkSignature(r *http.Request, body []byte) error {
	keyID, sig, err := api.ParseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return err
	}
	if keyID != testKeyID {
		return fmt.Errorf("key id %q", keyID)
	}
	date := r.Header.Get(api.HeaderDate)
	if _, err := time.Parse(time.RFC3339, date); err != nil {
		return fmt.Errorf("date %q: %v", date, err)
	}
	nonce := r.Header.Get(api.HeaderNonce)
	if len(nonce) < 16 {
		return fmt.Errorf("nonce %q too short", nonce)
	}
	sum := r.Header.Get(api.HeaderBodySHA256)
	if body != nil {
		h := sha256.Sum256(body)
		if got := hex.EncodeToString(h[:]); got != sum {
			return fmt.Errorf("body sha256 header %s, body hashes to %s", sum, got)
		}
	}
	want := api.Signature(testSecret, api.StringToSign(r.Method, r.URL.EscapedPath(), r.URL.Query(), date, nonce, sum))
	if sig != want {
		return fmt.Errorf("signature mismatch")
	}
	return nil
}

// fakeServer is an httptest server whose handlers run after the signature
// check; it records every request.
type fakeServer struct {
	t   *testing.T
	mux *http.ServeMux
	srv *httptest.Server

	mu   sync.Mutex
	reqs []*http.Request
}

func newFake(t *testing.T) (*fakeServer, *Client) {
	t.Helper()
	f := &fakeServer{t: t, mux: http.NewServeMux()}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body []byte
		if !strings.HasSuffix(r.URL.Path, "/exec/ws") {
			body, _ = io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		if err := checkSignature(r, body); err != nil {
			t.Errorf("%s %s: %v", r.Method, r.URL, err)
			writeErr(w, http.StatusUnauthorized, "SignatureDoesNotMatch", err.Error())
			return
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, r)
		f.mu.Unlock()
		f.mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	c, err := New(api.ClientConfig{Endpoint: f.srv.URL, AccessKeyID: testKeyID, AccessKeySecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	return f, c
}

func (f *fakeServer) last() *http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		f.t.Fatal("no request")
	}
	return f.reqs[len(f.reqs)-1]
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, code int, ecode, msg string) {
	writeJSON(w, code, api.Error{Code: ecode, Message: msg, RequestID: "req-1"})
}

func TestRoutesAreSignedAndShaped(t *testing.T) {
	f, c := newFake(t)
	g := api.Group{ID: "g-1", Name: "web", Status: api.StatusRunning}
	f.mux.HandleFunc("POST /v1/groups", func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateGroupRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Error(err)
		}
		if req.ClientToken == "again" {
			writeJSON(w, 200, g)
			return
		}
		writeJSON(w, 201, g)
	})
	f.mux.HandleFunc("GET /v1/groups/{id}", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, g) })
	f.mux.HandleFunc("DELETE /v1/groups/{id}", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 202, g) })
	f.mux.HandleFunc("POST /v1/groups/{id}/restart", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, g) })
	f.mux.HandleFunc("GET /v1/groups/{id}/events", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.List[api.Event]{Items: []api.Event{{Reason: "Started"}}, Total: 1})
	})
	f.mux.HandleFunc("GET /v1/groups/{id}/metrics", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.Metrics{GroupID: "g-1", Pids: 3})
	})
	f.mux.HandleFunc("POST /v1/groups/{id}/exec", func(w http.ResponseWriter, r *http.Request) {
		var req api.ExecRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		writeJSON(w, 200, api.ExecResult{Stdout: strings.Join(req.Command, " "), ExitCode: 7})
	})
	f.mux.HandleFunc("GET /v1/groups/{id}/wait", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("timeout") == "1s" {
			writeErr(w, http.StatusRequestTimeout, WaitTimeoutCode, "still Pending")
			return
		}
		writeJSON(w, 200, g)
	})
	ctx := context.Background()

	got, created, err := c.CreateGroup(ctx, api.CreateGroupRequest{Name: "web"})
	if err != nil || !created || got.ID != "g-1" {
		t.Fatalf("create: %v %v %v", got, created, err)
	}
	if _, created, _ := c.CreateGroup(ctx, api.CreateGroupRequest{ClientToken: "again"}); created {
		t.Error("create with a known client token reported created")
	}
	if ct := f.last().Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}

	// Names with characters that need escaping still sign and route.
	if _, err := c.GetGroup(ctx, "we b/x"); err != nil {
		t.Fatal(err)
	}
	if p := f.last().URL.EscapedPath(); p != "/v1/groups/we%20b%2Fx" {
		t.Errorf("escaped path %q", p)
	}
	if _, err := c.DeleteGroup(ctx, "web", true); err != nil {
		t.Fatal(err)
	}
	if q := f.last().URL.Query().Get("force"); q != "true" {
		t.Errorf("force=%q", q)
	}
	if _, err := c.DeleteGroup(ctx, "web", false); err != nil {
		t.Fatal(err)
	}
	if f.last().URL.Query().Has("force") {
		t.Error("force sent without force")
	}
	if _, err := c.RestartGroup(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if evs, err := c.Events(ctx, "web"); err != nil || len(evs) != 1 {
		t.Fatalf("events %v %v", evs, err)
	}
	if m, err := c.Metrics(ctx, "web"); err != nil || m.Pids != 3 {
		t.Fatalf("metrics %v %v", m, err)
	}
	res, err := c.Exec(ctx, "web", api.ExecRequest{Command: []string{"echo", "hi"}})
	if err != nil || res.Stdout != "echo hi" || res.ExitCode != 7 {
		t.Fatalf("exec %+v %v", res, err)
	}
	if _, err := c.Wait(ctx, "web", api.StatusRunning, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if q := f.last().URL.Query(); q.Get("status") != "Running" || q.Get("timeout") != "30s" {
		t.Errorf("wait query %v", q)
	}
	if _, err := c.WaitAny(ctx, "web", append([]api.Status{api.StatusRunning}, Unreachable(api.StatusRunning)...), 0); err != nil {
		t.Fatal(err)
	}
	if q := f.last().URL.Query(); q.Get("status") != "Running,ScheduleFailed,Succeeded,Failed,Expired" || q.Has("timeout") {
		t.Errorf("wait-any query %v", q)
	}
	_, err = c.Wait(ctx, "web", api.StatusRunning, time.Second)
	if ErrorCode(err) != WaitTimeoutCode || StatusCode(err) != http.StatusRequestTimeout {
		t.Errorf("wait timeout error %v", err)
	}
}

func TestErrorDecoding(t *testing.T) {
	f, c := newFake(t)
	f.mux.HandleFunc("GET /v1/groups/{id}", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, "InvalidContainerGroup.NotFound", "no group "+r.PathValue("id"))
	})
	f.mux.HandleFunc("GET /v1/hosts", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.HeaderRequestID, "req-9")
		http.Error(w, "upstream exploded", http.StatusBadGateway)
	})
	_, err := c.GetGroup(context.Background(), "nope")
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %T %v does not unwrap to *api.Error", err, err)
	}
	if ae.Code != "InvalidContainerGroup.NotFound" || ae.Message != "no group nope" || ae.RequestID != "req-1" {
		t.Errorf("decoded %+v", ae)
	}
	if !IsNotFound(err) {
		t.Error("IsNotFound false")
	}
	_, err = c.Hosts(context.Background())
	if !errors.As(err, &ae) || ae.Code != "BadGateway" || ae.Message != "upstream exploded" || ae.RequestID != "req-9" {
		t.Errorf("non-JSON error decoded as %+v (%v)", ae, err)
	}
}

func TestListPagination(t *testing.T) {
	f, c := newFake(t)
	pages := map[string]api.List[api.Group]{
		"":   {Items: []api.Group{{ID: "a"}, {ID: "b"}}, NextToken: "t1", Total: 3},
		"t1": {Items: []api.Group{{ID: "c"}}, Total: 3},
	}
	f.mux.HandleFunc("GET /v1/groups", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, pages[r.URL.Query().Get("nextToken")])
	})
	opts := ListOptions{Name: "web", Labels: map[string]string{"app": "x", "tier": "fe"}, Statuses: []api.Status{api.StatusRunning, api.StatusPending}, Limit: 2, All: true}
	gs, err := c.ListAllGroups(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 3 || gs[2].ID != "c" {
		t.Fatalf("got %v", gs)
	}
	q := f.last().URL.Query()
	if q.Get("name") != "web" || strings.Join(q["label"], ",") != "app=x,tier=fe" || q.Get("status") != "Running,Pending" ||
		q.Get("limit") != "2" || q.Get("all") != "true" || q.Get("nextToken") != "t1" {
		t.Errorf("query %v", q)
	}
	page, err := c.ListGroups(context.Background(), ListOptions{})
	if err != nil || page.NextToken != "t1" || len(page.Items) != 2 {
		t.Fatalf("one page: %v %v", page, err)
	}
	if raw := f.last().URL.RawQuery; raw != "" {
		t.Errorf("empty options sent query %q", raw)
	}
}

func TestLogs(t *testing.T) {
	f, c := newFake(t)
	f.mux.HandleFunc("GET /v1/groups/{id}/logs", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		for i := range 3 {
			fmt.Fprintf(w, "line %d\n", i)
			w.(http.Flusher).Flush()
		}
	})
	tail := 0
	rc, err := c.Logs(context.Background(), "web", LogOptions{Container: "app", Tail: &tail, Since: "10m", Follow: true, Previous: true, Timestamps: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "line 0\nline 1\nline 2\n" {
		t.Errorf("logs %q", b)
	}
	q := f.last().URL.Query()
	for k, v := range map[string]string{"container": "app", "tail": "0", "since": "10m", "follow": "true", "previous": "true", "timestamps": "true"} {
		if q.Get(k) != v {
			t.Errorf("%s=%q, want %q", k, q.Get(k), v)
		}
	}
	if _, err := c.Logs(context.Background(), "web", LogOptions{}); err != nil {
		t.Fatal(err)
	}
	if f.last().URL.RawQuery != "" {
		t.Errorf("default logs query %q", f.last().URL.RawQuery)
	}
}

func TestWatchNDJSON(t *testing.T) {
	f, c := newFake(t)
	f.mux.HandleFunc("GET /v1/watch", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		_ = enc.Encode(api.WatchEvent{Type: "ADDED", Group: &api.Group{ID: "a"}})
		w.Write([]byte("\n")) // a keep-alive blank line
		w.(http.Flusher).Flush()
		_ = enc.Encode(api.WatchEvent{Type: "DELETED", Group: &api.Group{ID: "a"}})
	})
	w, err := c.Watch(context.Background(), WatchOptions{Name: "web", Labels: map[string]string{"a": "b"}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var types []string
	for w.Next() {
		types = append(types, w.Event().Type+":"+w.Event().Group.ID)
	}
	if err := w.Err(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(types, ",") != "ADDED:a,DELETED:a" {
		t.Errorf("events %v", types)
	}
	if q := f.last().URL.Query(); q.Get("name") != "web" || q.Get("label") != "a=b" {
		t.Errorf("query %v", q)
	}

}

func TestWatchBrokenStream(t *testing.T) {
	f, c := newFake(t)
	f.mux.HandleFunc("GET /v1/watch", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"type":"ADDED","group":{"id":"a"}}` + "\n" + `{"type":`))
	})
	w, err := c.Watch(context.Background(), WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	n := 0
	for w.Next() {
		n++
	}
	if n != 1 || w.Err() == nil {
		t.Errorf("n=%d err=%v, want 1 event and an error", n, w.Err())
	}
}

func TestImportImage(t *testing.T) {
	f, c := newFake(t)
	data := bytes.Repeat([]byte("layer-bytes-"), 100000)
	path := filepath.Join(t.TempDir(), "img.tar")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f.mux.HandleFunc("POST /v1/images/import", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if !bytes.Equal(b, data) {
			t.Errorf("body of %d bytes differs", len(b))
		}
		if r.Header.Get("Content-Type") != "application/x-tar" || r.ContentLength != int64(len(data)) {
			t.Errorf("content type %q length %d", r.Header.Get("Content-Type"), r.ContentLength)
		}
		writeJSON(w, 200, api.ImportResult{Images: []api.Image{{Ref: "busybox:latest"}}, Hosts: []api.HostImportStat{{HostID: "h1"}}})
	})
	var lastSent, lastTotal int64
	res, err := c.ImportImage(context.Background(), path, func(sent, total int64) { lastSent, lastTotal = sent, total })
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Images) != 1 || res.Images[0].Ref != "busybox:latest" {
		t.Errorf("result %+v", res)
	}
	if lastSent != int64(len(data)) || lastTotal != int64(len(data)) {
		t.Errorf("progress ended at %d/%d", lastSent, lastTotal)
	}
	if _, err := c.ImportImage(context.Background(), filepath.Join(t.TempDir(), "missing.tar"), nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// execServer plays the server side of the exec WebSocket: it echoes stdin
// upper-cased on stdout, reports resizes on stderr, and on close exits with
// the number of stdin bytes it saw.
func execServer(t *testing.T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if strings.Join(q["command"], " ") != "sh -c echo hi" || q.Get("container") != "app" || q.Get("tty") != "true" || q.Get("stdin") != "true" {
			t.Errorf("exec query %v", q)
		}
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.CloseNow()
		ctx := r.Context()
		n := 0
		for {
			_, msg, err := conn.Read(ctx)
			if err != nil {
				t.Errorf("server read: %v", err)
				return
			}
			switch msg[0] {
			case api.ExecChannelStdin:
				n += len(msg) - 1
				out := append([]byte{api.ExecChannelStdout}, bytes.ToUpper(msg[1:])...)
				conn.Write(ctx, websocket.MessageBinary, out)
			case api.ExecChannelResize:
				var sz api.TermSize
				if err := json.Unmarshal(msg[1:], &sz); err != nil {
					t.Error(err)
				}
				conn.Write(ctx, websocket.MessageBinary, append([]byte{api.ExecChannelStderr}, fmt.Sprintf("%dx%d", sz.Cols, sz.Rows)...))
			case api.ExecChannelClose:
				b, _ := json.Marshal(api.ExecExit{ExitCode: n})
				conn.Write(ctx, websocket.MessageBinary, append([]byte{api.ExecChannelExit}, b...))
				conn.Close(websocket.StatusNormalClosure, "")
				return
			}
		}
	}
}

func TestExecInteractive(t *testing.T) {
	f, c := newFake(t)
	f.mux.HandleFunc("GET /v1/groups/{id}/exec/ws", execServer(t))
	var stdout, stderr bytes.Buffer
	resize := make(chan api.TermSize, 1)
	resize <- api.TermSize{Rows: 24, Cols: 80}
	// The stdin pipe only reaches EOF after the resize has been answered so
	// that the output order is fixed.
	pr, pw := io.Pipe()
	go func() {
		time.Sleep(50 * time.Millisecond)
		pw.Write([]byte("hello "))
		pw.Write([]byte("world"))
		pw.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, err := c.ExecInteractive(ctx, "web", ExecOptions{
		Container: "app", Command: []string{"sh", "-c", "echo hi"}, TTY: true,
		Stdin: pr, Stdout: &stdout, Stderr: &stderr, Resize: resize,
	})
	if err != nil {
		t.Fatal(err)
	}
	if code != len("hello world") {
		t.Errorf("exit code %d", code)
	}
	if stdout.String() != "HELLO WORLD" || stderr.String() != "80x24" {
		t.Errorf("stdout %q stderr %q", stdout.String(), stderr.String())
	}
}

func TestExecInteractiveErrors(t *testing.T) {
	f, c := newFake(t)
	f.mux.HandleFunc("GET /v1/groups/{id}/exec/ws", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "gone" {
			writeErr(w, http.StatusNotFound, "NotFound", "no group gone")
			return
		}
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		b, _ := json.Marshal(api.ExecExit{ExitCode: 126, Error: "not executable"})
		conn.Write(r.Context(), websocket.MessageBinary, append([]byte{api.ExecChannelExit}, b...))
		conn.Close(websocket.StatusNormalClosure, "")
	})
	ctx := context.Background()
	_, err := c.ExecInteractive(ctx, "gone", ExecOptions{Command: []string{"sh"}})
	if ErrorCode(err) != "NotFound" {
		t.Errorf("dial error %v", err)
	}
	code, err := c.ExecInteractive(ctx, "web", ExecOptions{Command: []string{"/etc/passwd"}})
	var ee *ExecExitError
	if code != 126 || !errors.As(err, &ee) {
		t.Errorf("code %d err %v", code, err)
	}
	if _, err := c.ExecInteractive(ctx, "web", ExecOptions{}); err == nil {
		t.Error("no command accepted")
	}
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(ConfigEnv, filepath.Join(dir, "c.json"))
	if DefaultConfigPath() != filepath.Join(dir, "c.json") {
		t.Errorf("DefaultConfigPath %q ignores %s", DefaultConfigPath(), ConfigEnv)
	}
	_, err := LoadConfig("")
	if !errors.Is(err, ErrNoConfig) || !strings.Contains(err.Error(), "skiff up") {
		t.Errorf("missing config: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "c.json"), []byte(`{"endpoint":"127.0.0.1:7070","accessKeyId":"a","accessKeySecret":"b"}`), 0o600)
	cfg, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg)
	if err != nil || c.Endpoint() != "http://127.0.0.1:7070" {
		t.Errorf("endpoint %v %v", c, err)
	}
	os.WriteFile(filepath.Join(dir, "c.json"), []byte(`{"endpoint":"x"}`), 0o600)
	if _, err := LoadConfig(""); err == nil {
		t.Error("config without keys accepted")
	}
	for _, bad := range []string{"", "ftp://x", "http://"} {
		if _, err := New(api.ClientConfig{Endpoint: bad}); err == nil {
			t.Errorf("endpoint %q accepted", bad)
		}
	}
}

func TestEndpointPathPrefix(t *testing.T) {
	c, err := New(api.ClientConfig{Endpoint: "https://example.com/skiff/", AccessKeyID: "a", AccessKeySecret: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if u := c.url(nil, "v1", "groups", "a b"); u.String() != "https://example.com/skiff/v1/groups/a%20b" {
		t.Errorf("url %s", u)
	}
}
