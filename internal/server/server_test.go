package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type testServer struct {
	srv *Server
	cfg api.ClientConfig
}

// startServer runs a real server with embedded etcd in this process.
func startServer(t *testing.T) *testServer {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{
		DataDir:          dir,
		Listen:           fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		AgentListen:      fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		EtcdClientURL:    fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		EtcdPeerURL:      fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		ClientConfigPath: dir + "/client.json",
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("server: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("server not ready in 60s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
	})
	var cc api.ClientConfig
	b, err := readFile(cfg.ClientConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cc); err != nil {
		t.Fatal(err)
	}
	return &testServer{srv: s, cfg: cc}
}

// do sends a signed request; mutate may spoil it before sending.
func (ts *testServer) do(t *testing.T, method, path string, body []byte, mutate func(*http.Request)) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, ts.cfg.Endpoint+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	api.SignRequest(req, ts.cfg.AccessKeyID, ts.cfg.AccessKeySecret, hex.EncodeToString(sum[:]), time.Now())
	if mutate != nil {
		mutate(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (ts *testServer) count(t *testing.T) int {
	t.Helper()
	code, b := ts.do(t, "GET", "/v1/groups?limit=1000", nil, nil)
	if code != 200 {
		t.Fatalf("list: %d %s", code, b)
	}
	var l api.List[api.Group]
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatal(err)
	}
	return l.Total
}

func TestAPIAuthAndBadInput(t *testing.T) {
	ts := startServer(t)
	valid := []byte(`{"name":"a","spec":{"containers":[{"name":"a","image":"busybox"}]}}`)
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		mutate func(*http.Request)
		status int
		code   string
	}{
		{"unsigned", "GET", "/v1/groups", "", func(r *http.Request) { r.Header.Del("Authorization") }, 401, "Unauthorized"},
		{"wrong secret", "GET", "/v1/groups", "", func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "Signature=", "Signature=00", 1))
		}, 401, "Unauthorized"},
		{"unknown key", "GET", "/v1/groups", "", func(r *http.Request) {
			r.Header.Set("Authorization", api.SignAlgorithm+" Credential=AKnobody, Signature=00")
		}, 401, "Unauthorized"},
		{"stale", "GET", "/v1/groups", "", func(r *http.Request) {
			api.SignRequest(r, ts.cfg.AccessKeyID, ts.cfg.AccessKeySecret, "", time.Now().Add(-time.Hour))
		}, 401, "Unauthorized"},
		{"body swapped", "POST", "/v1/groups", string(valid), func(r *http.Request) {
			r.Body = io.NopCloser(strings.NewReader(`{"name":"b","spec":{"containers":[{"name":"a","image":"busybox"}]}}`))
			r.ContentLength = -1
		}, 401, "Unauthorized"},
		{"malformed json", "POST", "/v1/groups", `{"name":`, nil, 400, "InvalidParameter"},
		{"unknown field", "POST", "/v1/groups", `{"name":"a","bogus":1,"spec":{"containers":[{"name":"a","image":"busybox"}]}}`, nil, 400, "InvalidParameter"},
		{"trailing data", "POST", "/v1/groups", string(valid) + `{}`, nil, 400, "InvalidParameter"},
		{"cpu -1", "POST", "/v1/groups", `{"spec":{"cpu":-1,"containers":[{"name":"a","image":"busybox"}]}}`, nil, 400, "InvalidParameter"},
		{"memory 1Pi", "POST", "/v1/groups", `{"spec":{"memory":"1Pi","containers":[{"name":"a","image":"busybox"}]}}`, nil, 400, "InvalidParameter"},
		{"bad image", "POST", "/v1/groups", `{"spec":{"containers":[{"name":"a","image":"http://x y"}]}}`, nil, 400, "InvalidParameter"},
		{"unknown id", "GET", "/v1/groups/g-nope", "", nil, 404, "NotFound"},
		{"unknown route", "GET", "/v1/nothing", "", nil, 404, "NotFound"},
		{"bad status filter", "GET", "/v1/groups?status=Sleeping", "", nil, 400, "InvalidParameter"},
		{"wait timeout bad", "GET", "/v1/groups/x/wait?status=Running&timeout=forever", "", nil, 400, "InvalidParameter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, b := ts.do(t, tt.method, tt.path, []byte(tt.body), tt.mutate)
			var e api.Error
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatalf("body is not an api.Error: %s", b)
			}
			if code != tt.status || e.Code != tt.code || e.Message == "" || e.RequestID == "" {
				t.Fatalf("got %d %+v, want %d %s", code, e, tt.status, tt.code)
			}
		})
	}
	// 10,000 containers: rejected, nothing created.
	var many strings.Builder
	many.WriteString(`{"spec":{"containers":[`)
	for i := 0; i < 10000; i++ {
		if i > 0 {
			many.WriteString(",")
		}
		fmt.Fprintf(&many, `{"name":"c%d","image":"busybox"}`, i)
	}
	many.WriteString(`]}}`)
	if code, b := ts.do(t, "POST", "/v1/groups", []byte(many.String()), nil); code != 400 {
		t.Fatalf("10k containers: %d %s", code, b)
	}
	if n := ts.count(t); n != 0 {
		t.Fatalf("bad input created %d groups", n)
	}
	// Replay of one exact signed request.
	req, _ := http.NewRequest("GET", ts.cfg.Endpoint+"/v1/groups", nil)
	api.SignRequest(req, ts.cfg.AccessKeyID, ts.cfg.AccessKeySecret, "", time.Now())
	for i, want := range []int{200, 401} {
		r2, _ := http.NewRequest("GET", ts.cfg.Endpoint+"/v1/groups", nil)
		r2.Header = req.Header.Clone()
		resp, err := http.DefaultClient.Do(r2)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("send %d: status %d, want %d", i, resp.StatusCode, want)
		}
	}
	if resp, err := http.Get(ts.cfg.Endpoint + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz after bad input: %v", err)
	}
}

func TestCreateIdempotentListPaginate(t *testing.T) {
	ts := startServer(t)
	body := []byte(`{"name":"one","clientToken":"tok-1","labels":{"app":"x"},"spec":{"containers":[{"name":"a","image":"busybox"}]}}`)
	code1, b1 := ts.do(t, "POST", "/v1/groups", body, nil)
	code2, b2 := ts.do(t, "POST", "/v1/groups", body, nil)
	var g1, g2 api.Group
	_ = json.Unmarshal(b1, &g1)
	_ = json.Unmarshal(b2, &g2)
	if code1 != 201 || code2 != 200 || g1.ID == "" || g1.ID != g2.ID {
		t.Fatalf("idempotent create: %d %s / %d %s", code1, g1.ID, code2, g2.ID)
	}
	// Same name, new token: conflict.
	code, _ := ts.do(t, "POST", "/v1/groups", []byte(`{"name":"one","spec":{"containers":[{"name":"a","image":"busybox"}]}}`), nil)
	if code != 409 {
		t.Fatalf("duplicate name: %d, want 409", code)
	}
	for i := 0; i < 5; i++ {
		b := fmt.Sprintf(`{"name":"g%d","labels":{"app":"y"},"spec":{"containers":[{"name":"a","image":"busybox"}]}}`, i)
		if code, out := ts.do(t, "POST", "/v1/groups", []byte(b), nil); code != 201 {
			t.Fatalf("create: %d %s", code, out)
		}
	}
	seen := map[string]bool{}
	token := ""
	for page := 0; page < 10; page++ {
		code, b := ts.do(t, "GET", "/v1/groups?limit=2&label=app=y&nextToken="+token, nil, nil)
		if code != 200 {
			t.Fatalf("list: %d %s", code, b)
		}
		var l api.List[api.Group]
		_ = json.Unmarshal(b, &l)
		for _, g := range l.Items {
			if seen[g.ID] {
				t.Fatalf("group %s listed twice", g.ID)
			}
			seen[g.ID] = true
		}
		if l.NextToken == "" {
			break
		}
		token = l.NextToken
	}
	if len(seen) != 5 {
		t.Fatalf("paged through %d groups, want 5", len(seen))
	}
	// By name and by id.
	for _, p := range []string{"/v1/groups/one", "/v1/groups/" + g1.ID} {
		if code, b := ts.do(t, "GET", p, nil, nil); code != 200 {
			t.Fatalf("get %s: %d %s", p, code, b)
		}
	}
	// No agent: the scheduler says why.
	code, b := ts.do(t, "GET", "/v1/groups/one/wait?status=ScheduleFailed&timeout=10s", nil, nil)
	var g api.Group
	_ = json.Unmarshal(b, &g)
	if code != 200 || !strings.Contains(g.Message, "no hosts") {
		t.Fatalf("wait for ScheduleFailed: %d %s", code, b)
	}
	// Unplaced groups are deleted at once.
	if code, b := ts.do(t, "DELETE", "/v1/groups/one", nil, nil); code != 202 {
		t.Fatalf("delete: %d %s", code, b)
	}
	if code, _ := ts.do(t, "GET", "/v1/groups/one", nil, nil); code != 404 {
		t.Fatalf("deleted group still there: %d", code)
	}
	// The token is free again after delete.
	if code, _ := ts.do(t, "POST", "/v1/groups", body, nil); code != 201 {
		t.Fatalf("re-create after delete: %d", code)
	}
}

func TestWaitTimesOut(t *testing.T) {
	ts := startServer(t)
	ts.do(t, "POST", "/v1/groups", []byte(`{"name":"w","spec":{"containers":[{"name":"a","image":"busybox"}]}}`), nil)
	start := time.Now()
	code, b := ts.do(t, "GET", "/v1/groups/w/wait?status=Running&timeout=300ms", nil, nil)
	var e api.Error
	_ = json.Unmarshal(b, &e)
	if code != 408 || e.Code != "WaitTimeout" || time.Since(start) > 10*time.Second {
		t.Fatalf("got %d %s", code, b)
	}
}

func TestOpenAPIAndMetricsUnauthenticated(t *testing.T) {
	ts := startServer(t)
	for _, p := range []string{"/openapi.json", "/metrics", "/healthz"} {
		resp, err := http.Get(ts.cfg.Endpoint + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(b) == 0 {
			t.Fatalf("%s: %d", p, resp.StatusCode)
		}
		if p == "/openapi.json" && !json.Valid(b) {
			t.Fatal("openapi.json is not JSON")
		}
		if p == "/metrics" && !strings.Contains(string(b), "skiff_server_leader 1") {
			t.Fatalf("a lone replica must lead:\n%s", b)
		}
	}
}

func TestWatchStreamsOwnGroups(t *testing.T) {
	ts := startServer(t)
	req, _ := http.NewRequest("GET", ts.cfg.Endpoint+"/v1/watch", nil)
	api.SignRequest(req, ts.cfg.AccessKeyID, ts.cfg.AccessKeySecret, "", time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("watch: %d", resp.StatusCode)
	}
	code, b := ts.do(t, "POST", "/v1/groups", []byte(`{"name":"watched","spec":{"containers":[{"name":"a","image":"busybox"}]}}`), nil)
	if code != 201 {
		t.Fatalf("create: %d %s", code, b)
	}
	dec := json.NewDecoder(resp.Body)
	var ev api.WatchEvent
	if err := dec.Decode(&ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "ADDED" || ev.Group == nil || ev.Group.Name != "watched" {
		t.Fatalf("first event %+v", ev)
	}
	// The scheduler marks it ScheduleFailed (no hosts): a MODIFIED follows.
	if err := dec.Decode(&ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "MODIFIED" || ev.Group.Status != api.StatusScheduleFailed {
		t.Fatalf("second event %+v", ev)
	}
}

// TestOpenAPIDocumentsEveryRoute keeps /openapi.json in step with the mux.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	for _, rt := range (&apiHandler{}).apiRoutes() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("openapi.json does not document %s", rt.pattern)
		}
	}
}
