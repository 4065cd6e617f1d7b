package kubelet

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// TestCreateBatcher: many concurrent creates become few batch calls, each
// create gets its own answer (an item's error stays its own), and a lone
// create goes out on its own at once.
func TestCreateBatcher(t *testing.T) {
	var calls, batchCalls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		time.Sleep(20 * time.Millisecond) // a store transaction
		one := func(req api.CreateGroupRequest) api.BatchCreateResult {
			if req.Name == "bad" {
				return api.BatchCreateResult{Error: &api.Error{Code: "InvalidParameter", Message: "bad"}}
			}
			return api.BatchCreateResult{Group: &api.Group{ID: "g-" + req.Name, Name: req.Name}, Created: true}
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/groups:batch":
			batchCalls.Add(1)
			var req api.BatchCreateRequest
			_ = json.NewDecoder(r.Body).Decode(&req)
			var resp api.BatchCreateResponse
			for _, it := range req.Items {
				resp.Items = append(resp.Items, one(it))
			}
			_ = json.NewEncoder(w).Encode(resp)
		case "/v1/groups":
			var req api.CreateGroupRequest
			_ = json.NewDecoder(r.Body).Decode(&req)
			res := one(req)
			if res.Error != nil {
				w.WriteHeader(http.StatusBadRequest)
				_ = json.NewEncoder(w).Encode(res.Error)
				return
			}
			w.WriteHeader(http.StatusCreated)
			_ = json.NewEncoder(w).Encode(res.Group)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	cl, err := client.New(api.ClientConfig{Endpoint: srv.URL, AccessKeyID: "AK", AccessKeySecret: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	b := newCreateBatcher(cl)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.run(ctx)

	create := func(name string) (*api.Group, error) {
		type res struct {
			g   *api.Group
			err error
		}
		ch := make(chan res, 1)
		b.submit(ctx, api.CreateGroupRequest{Name: name}, func(g *api.Group, _ bool, err error) { ch <- res{g, err} })
		r := <-ch
		return r.g, r.err
	}
	if g, err := create("lone"); err != nil || g.ID != "g-lone" || batchCalls.Load() != 0 {
		t.Fatalf("lone create: %v %v (batch calls %d)", g, err, batchCalls.Load())
	}
	calls.Store(0)
	const n = 300
	var wg sync.WaitGroup
	var bad atomic.Int32
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := "p" + itoa(i)
			if i == 7 {
				name = "bad"
			}
			g, err := create(name)
			switch {
			case name == "bad":
				if !invalidCreate(err) {
					t.Errorf("bad item: %v, want an invalid create", err)
				}
				bad.Add(1)
			case err != nil || g == nil || g.ID != "g-"+name:
				t.Errorf("create %s: %+v %v", name, g, err)
			}
		}(i)
	}
	wg.Wait()
	if bad.Load() != 1 {
		t.Errorf("bad answered %d times", bad.Load())
	}
	if c := calls.Load(); c > n/10 {
		t.Errorf("%d creates took %d calls", n, c)
	}
	t.Logf("%d creates in %d calls", n, calls.Load())
}

func itoa(i int) string { return portString(i) }
