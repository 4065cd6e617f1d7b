package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// rawRequest is one hand-made API call.
type rawRequest struct {
	method, path string
	body         []byte
	// sign: sign the request with the cluster's key (else unsigned).
	sign bool
	// edit changes the request after signing.
	edit func(*http.Request)
	// when, when not zero, is the signing time.
	when time.Time
}

// send makes the request and returns the status, the decoded error body
// (nil for 2xx) and the raw body.
func (cl *cluster) raw(t *testing.T, r rawRequest) (int, *api.Error, []byte, *http.Response) {
	t.Helper()
	req := cl.rawReq(t, r)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode < 300 {
		return resp.StatusCode, nil, b, resp
	}
	var e api.Error
	if err := json.Unmarshal(b, &e); err != nil {
		t.Errorf("%s %s: %d with a body that is not a JSON error: %q", r.method, r.path, resp.StatusCode, b)
	}
	return resp.StatusCode, &e, b, resp
}

func (cl *cluster) rawReq(t *testing.T, r rawRequest) *http.Request {
	t.Helper()
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequest(r.method, "http://"+cl.servers[0].api+r.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.sign {
		sum := sha256.Sum256(r.body)
		when := r.when
		if when.IsZero() {
			when = time.Now()
		}
		api.SignRequest(req, cl.cfg.AccessKeyID, cl.cfg.AccessKeySecret, hex.EncodeToString(sum[:]), when)
	}
	if r.edit != nil {
		r.edit(req)
	}
	return req
}

func validSpecJSON() map[string]any {
	return map[string]any{
		"name":   "bad-input-probe",
		"labels": map[string]string{"suite": "badinput"},
		"spec": map[string]any{
			"containers": []any{map[string]any{"name": "main", "image": "busybox:latest", "command": []string{"sleep", "1000"}}},
		},
	}
}

// with returns a copy of validSpecJSON with f applied to its spec.
func with(f func(spec map[string]any)) []byte {
	m := validSpecJSON()
	f(m["spec"].(map[string]any))
	b, _ := json.Marshal(m)
	return b
}

// testBadInput sends malformed, invalid and badly signed requests to the
// real API: each gets a 4xx with a JSON error, and nothing changes.
func testBadInput(t *testing.T, cl *cluster) {
	cl.labelsFor(t, "badinput")
	countGroups := func() int {
		gs, err := cl.c.ListAllGroups(ctxT(t, 10*time.Second), client.ListOptions{All: true})
		if err != nil {
			t.Fatal(err)
		}
		return len(gs)
	}
	before := countGroups()

	manyContainers := func(spec map[string]any) {
		var cs []any
		for i := 0; i < 10000; i++ {
			cs = append(cs, map[string]any{"name": fmt.Sprintf("c%d", i), "image": "busybox:latest"})
		}
		spec["containers"] = cs
	}
	setCtr := func(k string, v any) func(map[string]any) {
		return func(spec map[string]any) { spec["containers"].([]any)[0].(map[string]any)[k] = v }
	}
	valid := with(func(map[string]any) {})
	cases := []struct {
		name string
		req  rawRequest
		want int // 0: any 4xx
	}{
		{"malformed JSON", rawRequest{method: "POST", path: "/v1/groups", body: []byte(`{"spec": {"containers": [`), sign: true}, 400},
		{"not an object", rawRequest{method: "POST", path: "/v1/groups", body: []byte(`[1,2,3]`), sign: true}, 400},
		{"empty body", rawRequest{method: "POST", path: "/v1/groups", body: []byte(``), sign: true}, 400},
		{"unknown field", rawRequest{method: "POST", path: "/v1/groups", body: []byte(`{"spec":{"containers":[{"name":"main","image":"busybox:latest"}]},"bogus":1}`), sign: true}, 400},
		{"unknown spec field", rawRequest{method: "POST", path: "/v1/groups", body: with(func(s map[string]any) { s["cpus"] = 1 }), sign: true}, 400},
		{"cpu -1", rawRequest{method: "POST", path: "/v1/groups", body: with(func(s map[string]any) { s["cpu"] = -1 }), sign: true}, 400},
		{"container cpu -1", rawRequest{method: "POST", path: "/v1/groups", body: with(setCtr("resources", map[string]any{"limits": map[string]any{"cpu": -1}})), sign: true}, 400},
		{"memory 1Pi", rawRequest{method: "POST", path: "/v1/groups", body: with(func(s map[string]any) { s["memory"] = "1Pi" }), sign: true}, 400},
		{"memory garbage", rawRequest{method: "POST", path: "/v1/groups", body: with(func(s map[string]any) { s["memory"] = "lots" }), sign: true}, 400},
		{"10000 containers", rawRequest{method: "POST", path: "/v1/groups", body: with(manyContainers), sign: true}, 400},
		{"no containers", rawRequest{method: "POST", path: "/v1/groups", body: with(func(s map[string]any) { s["containers"] = []any{} }), sign: true}, 400},
		{"bad image reference", rawRequest{method: "POST", path: "/v1/groups", body: with(setCtr("image", "Not A::Valid//Ref")), sign: true}, 400},
		{"empty image", rawRequest{method: "POST", path: "/v1/groups", body: with(setCtr("image", "")), sign: true}, 400},
		{"duplicate container names", rawRequest{method: "POST", path: "/v1/groups", body: with(func(s map[string]any) {
			c := s["containers"].([]any)[0]
			s["containers"] = []any{c, c}
		}), sign: true}, 400},
		{"mount of an undeclared volume", rawRequest{method: "POST", path: "/v1/groups", body: with(setCtr("volumeMounts", []any{map[string]any{"name": "nope", "mountPath": "/data"}})), sign: true}, 400},
		{"bad restart policy", rawRequest{method: "POST", path: "/v1/groups", body: with(func(s map[string]any) { s["restartPolicy"] = "Sometimes" }), sign: true}, 400},
		{"bad name", rawRequest{method: "POST", path: "/v1/groups", body: func() []byte {
			m := validSpecJSON()
			m["name"] = "UPPER case/../name"
			b, _ := json.Marshal(m)
			return b
		}(), sign: true}, 400},
		{"unknown group get", rawRequest{method: "GET", path: "/v1/groups/g-doesnotexist000", sign: true}, 404},
		{"unknown group delete", rawRequest{method: "DELETE", path: "/v1/groups/g-doesnotexist000", sign: true}, 404},
		{"unknown group restart", rawRequest{method: "POST", path: "/v1/groups/g-doesnotexist000/restart", sign: true}, 404},
		{"unknown group logs", rawRequest{method: "GET", path: "/v1/groups/g-doesnotexist000/logs", sign: true}, 404},
		{"unknown group exec", rawRequest{method: "POST", path: "/v1/groups/g-doesnotexist000/exec", body: []byte(`{"command":["true"]}`), sign: true}, 404},
		{"unknown route", rawRequest{method: "GET", path: "/v1/nothing-here", sign: true}, 404},
		{"unsigned", rawRequest{method: "POST", path: "/v1/groups", body: valid}, 0},
		{"unsigned list", rawRequest{method: "GET", path: "/v1/groups"}, 0},
		{"wrong signature", rawRequest{method: "POST", path: "/v1/groups", body: valid, sign: true, edit: func(r *http.Request) {
			r.Header.Set("Authorization", fmt.Sprintf("%s Credential=%s, Signature=%s", api.SignAlgorithm, cl.cfg.AccessKeyID, strings.Repeat("ab", 32)))
		}}, 0},
		{"unknown key", rawRequest{method: "POST", path: "/v1/groups", body: valid, sign: true, edit: func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), cl.cfg.AccessKeyID, "AKnosuchkey0000000000", 1))
		}}, 0},
		{"garbage authorization", rawRequest{method: "GET", path: "/v1/groups", sign: true, edit: func(r *http.Request) { r.Header.Set("Authorization", "Basic Zm9vOmJhcg==") }}, 0},
		{"body does not match its hash", rawRequest{method: "POST", path: "/v1/groups", body: valid, sign: true, edit: func(r *http.Request) {
			b := with(func(s map[string]any) { s["memory"] = "128Mi" })
			r.Body = io.NopCloser(bytes.NewReader(b))
			r.ContentLength = int64(len(b))
		}}, 0},
		{"stale date", rawRequest{method: "POST", path: "/v1/groups", body: valid, sign: true, when: time.Now().Add(-2 * api.MaxClockSkew)}, 0},
		{"future date", rawRequest{method: "POST", path: "/v1/groups", body: valid, sign: true, when: time.Now().Add(2 * api.MaxClockSkew)}, 0},
		{"signed for another path", rawRequest{method: "GET", path: "/v1/groups", sign: true, edit: func(r *http.Request) {
			r.URL.Path = "/v1/hosts"
		}}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, e, body, resp := cl.raw(t, tc.req)
			checkAPIError(t, code, e, body, resp, tc.want)
		})
	}

	t.Run("replayed request", func(t *testing.T) {
		req := cl.rawReq(t, rawRequest{method: "GET", path: "/v1/groups", sign: true})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("first send: %d", resp.StatusCode)
		}
		again, _ := http.NewRequest("GET", req.URL.String(), nil)
		again.Header = req.Header.Clone()
		resp, err = http.DefaultClient.Do(again)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var e api.Error
		_ = json.Unmarshal(b, &e)
		checkAPIError(t, resp.StatusCode, &e, b, resp, 0)
	})

	t.Run("replayed create", func(t *testing.T) {
		// A create sent twice with the same signature must not make a
		// second group (nor the first one, were it invalid).
		req := cl.rawReq(t, rawRequest{method: "POST", path: "/v1/groups", body: with(func(s map[string]any) {}), sign: true})
		again, _ := http.NewRequest("POST", req.URL.String(), bytes.NewReader(with(func(s map[string]any) {})))
		again.Header = req.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("first send: %d", resp.StatusCode)
		}
		resp, err = http.DefaultClient.Do(again)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var e api.Error
		_ = json.Unmarshal(b, &e)
		checkAPIError(t, resp.StatusCode, &e, b, resp, 0)
		// The one real create is removed again so the count below holds.
		gs, err := cl.c.ListAllGroups(ctxT(t, 10*time.Second), client.ListOptions{Name: "bad-input-probe", All: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(gs) != 1 {
			t.Errorf("after a create and its replay: %d groups named bad-input-probe, want 1", len(gs))
		}
		cl.deleteLabeled(t, "suite", "badinput")
	})

	if after := countGroups(); after != before {
		t.Errorf("bad requests changed the group count: %d before, %d after", before, after)
	}
	if err := waitHTTP("http://"+cl.servers[0].api+"/healthz", 5*time.Second); err != nil {
		t.Errorf("server unhealthy after bad input: %v", err)
	}
	if cl.servers[0].p.exited() {
		t.Errorf("server exited during bad input")
	}
	for _, a := range cl.agents {
		if a.p.exited() {
			t.Errorf("agent %s exited during bad input", a.name)
		}
	}

	t.Run("ClientToken", func(t *testing.T) {
		labels := cl.labelsFor(t, "token")
		req := api.CreateGroupRequest{Name: "tokened", Labels: labels, ClientToken: "tok-" + fmt.Sprint(time.Now().UnixNano()), Spec: busybox("sleep", "1000")}
		g1, created1, err := cl.c.CreateGroup(ctxT(t, 10*time.Second), req)
		if err != nil {
			t.Fatal(err)
		}
		g2, created2, err := cl.c.CreateGroup(ctxT(t, 10*time.Second), req)
		if err != nil {
			t.Fatal(err)
		}
		if !created1 || created2 {
			t.Errorf("created flags %v, %v; want true, false", created1, created2)
		}
		if g1.ID != g2.ID {
			t.Errorf("same client token gave two groups: %s and %s", g1.ID, g2.ID)
		}
		gs, err := cl.c.ListAllGroups(ctxT(t, 10*time.Second), client.ListOptions{Labels: labels, All: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(gs) != 1 {
			t.Errorf("%d groups after two creates with one client token, want 1", len(gs))
		}
	})
}

// checkAPIError asserts a 4xx (want, or any 4xx when want is 0) with a
// complete JSON error body whose requestId matches the header.
func checkAPIError(t *testing.T, code int, e *api.Error, body []byte, resp *http.Response, want int) {
	t.Helper()
	if want != 0 && code != want {
		t.Errorf("status %d, want %d; body %s", code, want, trim(body))
	}
	if code < 400 || code >= 500 {
		t.Errorf("status %d, want a 4xx; body %s", code, trim(body))
		return
	}
	if e == nil || e.Code == "" || e.Message == "" || e.RequestID == "" {
		t.Errorf("error body %s: want code, message and requestId", trim(body))
		return
	}
	if h := resp.Header.Get(api.HeaderRequestID); h != e.RequestID {
		t.Errorf("requestId %q in the body, %q in the header", e.RequestID, h)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error Content-Type %q", ct)
	}
}

func trim(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}
