package server

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/skiffhq/skiff/api"
)

// A batch create stores every valid item and fails the bad ones alone, in
// their places: invalid spec, a name taken before, a name twice in the
// batch, a client token seen before.
func TestBatchCreate(t *testing.T) {
	ts := startServer(t)
	if code, out := ts.do(t, "POST", "/v1/groups", []byte(`{"name":"taken","clientToken":"tok","spec":{"containers":[{"name":"a","image":"busybox"}]}}`), nil); code != 201 {
		t.Fatalf("create: %d %s", code, out)
	}
	var items []string
	for i := range 70 { // more than one store chunk
		items = append(items, fmt.Sprintf(`{"name":"b%d","labels":{"batch":"1"},"spec":{"containers":[{"name":"a","image":"busybox"}]}}`, i))
	}
	items = append(items,
		`{"name":"bad","spec":{"containers":[]}}`,
		`{"name":"taken","spec":{"containers":[{"name":"a","image":"busybox"}]}}`,
		`{"name":"b0","spec":{"containers":[{"name":"a","image":"busybox"}]}}`,
		`{"name":"other","clientToken":"tok","spec":{"containers":[{"name":"a","image":"busybox"}]}}`,
	)
	code, out := ts.do(t, "POST", "/v1/groups:batch", []byte(`{"items":[`+strings.Join(items, ",")+`]}`), nil)
	if code != 200 {
		t.Fatalf("batch: %d %s", code, out)
	}
	var res api.BatchCreateResponse
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Items) != 74 || res.Created != 70 {
		t.Fatalf("batch: %d results, %d created; want 74, 70", len(res.Items), res.Created)
	}
	for i := range 70 {
		r := res.Items[i]
		if r.Error != nil || r.Group == nil || !r.Created || r.Group.Name != fmt.Sprintf("b%d", i) || r.Group.Status != api.StatusPending {
			t.Fatalf("item %d: %+v", i, r)
		}
	}
	for i, want := range map[int]string{70: "InvalidParameter", 71: "", 72: ""} {
		if res.Items[i].Error == nil || (want != "" && !strings.Contains(res.Items[i].Error.Code, want)) {
			t.Errorf("item %d: %+v, want an error %s", i, res.Items[i], want)
		}
	}
	if r := res.Items[73]; r.Error != nil || r.Created || r.Group == nil || r.Group.Name != "taken" {
		t.Errorf("used token: %+v, want the earlier group, not created", r)
	}
	if n := ts.count(t); n != 71 {
		t.Errorf("%d groups stored, want 71", n)
	}
	// The whole call fails only when its body does.
	for _, body := range []string{`{"items":[]}`, `{"items":[`, `{"nope":1}`} {
		if code, out := ts.do(t, "POST", "/v1/groups:batch", []byte(body), nil); code != 400 {
			t.Errorf("%s: %d %s, want 400", body, code, out)
		}
	}
}
