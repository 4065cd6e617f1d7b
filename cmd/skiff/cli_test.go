package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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

	"github.com/skiffhq/skiff/api"
)

const (
	fakeKeyID  = "AKcli"
	fakeSecret = "cli-secret"
)

// fakeAPI is an httptest stand-in for the server's native API. Handlers are
// registered per test; every request's signature is checked and recorded.
type fakeAPI struct {
	t   *testing.T
	mux *http.ServeMux
	cfg string // client config path

	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	Method, Path string
	Query        map[string][]string
	Body         []byte
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{t: t, mux: http.NewServeMux()}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body []byte
		if !strings.HasSuffix(r.URL.Path, "/exec/ws") {
			body, _ = io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		if err := verifySigned(r, body); err != nil {
			t.Errorf("%s %s: %v", r.Method, r.URL, err)
			jsonReply(w, 401, api.Error{Code: "SignatureDoesNotMatch", Message: err.Error()})
			return
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, recorded{r.Method, r.URL.Path, r.URL.Query(), body})
		f.mu.Unlock()
		f.mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.cfg = filepath.Join(t.TempDir(), "config.json")
	b, _ := json.Marshal(api.ClientConfig{Endpoint: srv.URL, AccessKeyID: fakeKeyID, AccessKeySecret: fakeSecret})
	if err := os.WriteFile(f.cfg, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// Unknown routes answer like the server would.
	f.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		jsonReply(w, 404, api.Error{Code: "NotFound", Message: "no route " + r.URL.Path, RequestID: "req-404"})
	})
	return f
}

func verifySigned(r *http.Request, body []byte) error {
	keyID, sig, err := api.ParseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return err
	}
	if keyID != fakeKeyID {
		return fmt.Errorf("key %q", keyID)
	}
	sum := r.Header.Get(api.HeaderBodySHA256)
	if body != nil {
		h := sha256.Sum256(body)
		if hex.EncodeToString(h[:]) != sum {
			return fmt.Errorf("body hash mismatch")
		}
	}
	sts := api.StringToSign(r.Method, r.URL.EscapedPath(), r.URL.Query(), r.Header.Get(api.HeaderDate), r.Header.Get(api.HeaderNonce), sum)
	if api.Signature(fakeSecret, sts) != sig {
		return fmt.Errorf("bad signature")
	}
	return nil
}

func jsonReply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// requests returns the recorded requests with this method and path.
func (f *fakeAPI) requests(method, path string) []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []recorded
	for _, r := range f.reqs {
		if r.Method == method && r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

// cli runs the command line against the fake and returns its output.
func (f *fakeAPI) cli(stdin string, args ...string) (stdout, stderr string, code int) {
	return runCLI(stdin, append([]string{"--config", f.cfg}, args...)...)
}

func runCLI(stdin string, args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code = execute(ctx, args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

// groupServer keeps groups in memory: create, get, wait (answers at once
// with the stored status), list.
type groupServer struct {
	mu     sync.Mutex
	groups map[string]*api.Group
	// onCreate may set the status the new group will report.
	onCreate func(g *api.Group)
	// onWait, when set, answers wait requests instead.
	onWait func(w http.ResponseWriter, g *api.Group)
}

func (f *fakeAPI) serveGroups() *groupServer {
	gs := &groupServer{groups: map[string]*api.Group{}}
	f.mux.HandleFunc("POST /v1/groups", func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateGroupRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			jsonReply(w, 400, api.Error{Code: "InvalidParameter", Message: err.Error()})
			return
		}
		gs.mu.Lock()
		defer gs.mu.Unlock()
		g := &api.Group{ID: fmt.Sprintf("g-%d", len(gs.groups)+1), Name: req.Name, Labels: req.Labels, Spec: req.Spec, Status: api.StatusPending, CreatedAt: time.Now()}
		if gs.onCreate != nil {
			gs.onCreate(g)
		}
		gs.groups[g.ID] = g
		jsonReply(w, 201, g)
	})
	get := func(w http.ResponseWriter, r *http.Request) *api.Group {
		gs.mu.Lock()
		defer gs.mu.Unlock()
		id := r.PathValue("id")
		for _, g := range gs.groups {
			if g.ID == id || g.Name == id {
				c := *g
				return &c
			}
		}
		jsonReply(w, 404, api.Error{Code: "InvalidContainerGroup.NotFound", Message: "no group " + id, RequestID: "req-7"})
		return nil
	}
	f.mux.HandleFunc("GET /v1/groups/{id}", func(w http.ResponseWriter, r *http.Request) {
		if g := get(w, r); g != nil {
			jsonReply(w, 200, g)
		}
	})
	f.mux.HandleFunc("GET /v1/groups/{id}/wait", func(w http.ResponseWriter, r *http.Request) {
		if g := get(w, r); g != nil {
			if gs.onWait != nil {
				gs.onWait(w, g)
				return
			}
			jsonReply(w, 200, g)
		}
	})
	f.mux.HandleFunc("DELETE /v1/groups/{id}", func(w http.ResponseWriter, r *http.Request) {
		if g := get(w, r); g != nil {
			g.Status = api.StatusTerminating
			jsonReply(w, 202, g)
		}
	})
	return gs
}
