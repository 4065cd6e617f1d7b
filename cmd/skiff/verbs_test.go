package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/skiffhq/skiff/api"
)

func TestCreateFile(t *testing.T) {
	const yamlSpec = `
name: web
labels: {app: web}
spec:
  restartPolicy: Always
  containers:
  - name: web
    image: nginx
    args: [nginx, -g, daemon off;]
    resources:
      limits: {cpu: 0.5, memory: 256Mi}
    ports:
    - {containerPort: 80, hostPort: 8080}
`
	want := api.CreateGroupRequest{
		Name:   "web",
		Labels: map[string]string{"app": "web"},
		Spec: api.GroupSpec{
			RestartPolicy: api.RestartAlways,
			Containers: []api.Container{{
				Name: "web", Image: "nginx", Args: []string{"nginx", "-g", "daemon off;"},
				Resources: api.ResourceRequirements{Limits: api.ResourceList{CPU: 500, Memory: 256 << 20}},
				Ports:     []api.ContainerPort{{ContainerPort: 80, HostPort: 8080}},
			}},
		},
	}
	jsonSpec, _ := json.Marshal(want)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		args    []string
		stdin   string
		wantErr string // "" for success
	}{
		{"yaml file", []string{"-f", write("g.yaml", yamlSpec)}, "", ""},
		{"json file", []string{"-f", write("g.json", string(jsonSpec))}, "", ""},
		{"stdin", []string{"-f", "-"}, yamlSpec, ""},
		{"unknown top-level field", []string{"-f", write("bad1.yaml", "nmae: web\n"+yamlSpec[strings.Index(yamlSpec, "spec:"):])}, "", `unknown field "nmae"`},
		{"unknown nested field", []string{"-f", write("bad2.yaml", strings.Replace(yamlSpec, "image: nginx", "image: nginx\n    imag: x", 1))}, "", `unknown field "imag"`},
		{"group instead of request", []string{"-f", write("bad3.json", `{"id":"g-1","spec":{"containers":[{"name":"a","image":"b"}]}}`)}, "", `unknown field "id"`},
		{"empty", []string{"-f", write("empty.yaml", "\n")}, "", "empty"},
		{"no containers", []string{"-f", write("nc.yaml", "name: x\nspec: {}\n")}, "", "spec.containers is empty"},
		{"bad quantity", []string{"-f", write("q.yaml", strings.Replace(yamlSpec, "256Mi", "lots", 1))}, "", "invalid quantity"},
		{"not yaml", []string{"-f", write("junk.yaml", "{[")}, "", "not valid YAML or JSON"},
		{"missing file", []string{"-f", filepath.Join(dir, "nope.yaml")}, "", "no such file"},
		{"no -f", nil, "", "-f FILE is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t)
			f.serveGroups()
			stdout, stderr, code := f.cli(tt.stdin, append([]string{"create"}, tt.args...)...)
			posts := f.requests("POST", "/v1/groups")
			if tt.wantErr != "" {
				if code != 1 || !strings.Contains(stderr, tt.wantErr) {
					t.Errorf("exit %d stderr %q, want %q", code, stderr, tt.wantErr)
				}
				if len(posts) != 0 {
					t.Error("a bad file was sent")
				}
				return
			}
			if code != 0 || stdout != "g-1\n" {
				t.Fatalf("exit %d stdout %q stderr %q", code, stdout, stderr)
			}
			var got api.CreateGroupRequest
			if err := json.Unmarshal(posts[0].Body, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("sent %+v", got)
			}
		})
	}
}

func TestPsFilters(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	timeNow = func() time.Time { return now }
	t.Cleanup(func() { timeNow = time.Now })
	groups := []api.Group{
		{ID: "g-1", Name: "web", Status: api.StatusRunning, HostID: "h1", IP: "10.0.0.2", CreatedAt: now.Add(-3 * time.Minute),
			Spec: api.GroupSpec{Containers: []api.Container{{Image: "nginx"}, {Image: "sidecar"}}}},
		{ID: "g-2", Name: "job", Status: api.StatusSucceeded, CreatedAt: now.Add(-2 * time.Hour),
			Spec: api.GroupSpec{Containers: []api.Container{{Image: "busybox"}}}},
		{ID: "g-3", Status: api.StatusPending, Reason: "Pulling", CreatedAt: now.Add(-5 * time.Second),
			Spec: api.GroupSpec{Containers: []api.Container{{Image: "redis"}}}},
	}
	tests := []struct {
		name      string
		argv      []string
		wantQuery map[string][]string
		wantIDs   []string
		wantErr   string
	}{
		{"default hides ended", nil, map[string][]string{}, []string{"g-1", "g-3"}, ""},
		{"all", []string{"-a"}, map[string][]string{"all": {"true"}}, []string{"g-1", "g-2", "g-3"}, ""},
		{"name and labels", []string{"--filter", "name=web", "-f", "label=app=web", "-f", "label=tier=fe"},
			map[string][]string{"name": {"web"}, "label": {"app=web", "tier=fe"}}, []string{"g-1", "g-3"}, ""},
		{"one status goes to the server", []string{"-f", "status=succeeded"}, map[string][]string{"status": {"Succeeded"}}, []string{"g-1", "g-2", "g-3"}, ""},
		{"several statuses", []string{"-f", "status=Running", "-f", "status=Pending"}, map[string][]string{"status": {"Running,Pending"}}, []string{"g-1", "g-2", "g-3"}, ""},
		{"unknown filter", []string{"-f", "color=red"}, nil, nil, "unknown filter"},
		{"bad status", []string{"-f", "status=Happy"}, nil, nil, "unknown status"},
		{"malformed", []string{"-f", "name"}, nil, nil, "want name=NAME"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t)
			f.mux.HandleFunc("GET /v1/groups", func(w http.ResponseWriter, r *http.Request) {
				jsonReply(w, 200, api.List[api.Group]{Items: groups, Total: len(groups)})
			})
			stdout, stderr, code := f.cli("", append([]string{"ps", "-q"}, tt.argv...)...)
			if tt.wantErr != "" {
				if code != 1 || !strings.Contains(stderr, tt.wantErr) {
					t.Errorf("exit %d stderr %q", code, stderr)
				}
				return
			}
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if got := strings.Fields(stdout); !reflect.DeepEqual(got, tt.wantIDs) {
				t.Errorf("ids %v, want %v", got, tt.wantIDs)
			}
			q := f.requests("GET", "/v1/groups")[0].Query
			if !reflect.DeepEqual(q, tt.wantQuery) {
				t.Errorf("query %v, want %v", q, tt.wantQuery)
			}
		})
	}

	f := newFakeAPI(t)
	f.mux.HandleFunc("GET /v1/groups", func(w http.ResponseWriter, r *http.Request) {
		jsonReply(w, 200, api.List[api.Group]{Items: groups, Total: len(groups)})
	})
	stdout, _, _ := f.cli("", "ps")
	want := "" +
		"ID    NAME   STATUS              IMAGE      HOST   IP         AGE\n" +
		"g-1   web    Running             nginx +1   h1     10.0.0.2   3m\n" +
		"g-3   -      Pending (Pulling)   redis      -      -          5s\n"
	if stdout != want {
		t.Errorf("table\n%s\nwant\n%s", stdout, want)
	}
	stdout, _, _ = f.cli("", "ps", "-a", "-o", "json")
	var got []api.Group
	if err := json.Unmarshal([]byte(stdout), &got); err != nil || len(got) != 3 {
		t.Errorf("json %q: %v", stdout, err)
	}
}

func TestPsFollowsPages(t *testing.T) {
	f := newFakeAPI(t)
	f.mux.HandleFunc("GET /v1/groups", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("nextToken") == "" {
			jsonReply(w, 200, api.List[api.Group]{Items: []api.Group{{ID: "a", Status: api.StatusRunning}}, NextToken: "p2"})
			return
		}
		jsonReply(w, 200, api.List[api.Group]{Items: []api.Group{{ID: "b", Status: api.StatusRunning}}})
	})
	stdout, _, code := f.cli("", "ps", "-q")
	if code != 0 || stdout != "a\nb\n" {
		t.Errorf("exit %d stdout %q", code, stdout)
	}
}

func TestErrorsAreReported(t *testing.T) {
	f := newFakeAPI(t)
	f.serveGroups()
	_, stderr, code := f.cli("", "inspect", "ghost")
	if code != 1 || !strings.Contains(stderr, "Error: ghost: no group ghost (code InvalidContainerGroup.NotFound, request req-7)") {
		t.Errorf("exit %d stderr %q", code, stderr)
	}
	_, stderr, code = f.cli("", "rm", "ghost")
	want := "Error: ghost: no group ghost (code InvalidContainerGroup.NotFound, request req-7)\nList groups with `skiff ps -a`.\n"
	if code != 1 || stderr != want {
		t.Errorf("exit %d stderr %q, want %q", code, stderr, want)
	}
	_, stderr, code = f.cli("", "hosts")
	if code != 1 || !strings.HasPrefix(stderr, "Error: no route /v1/hosts (code NotFound, request req-404)") {
		t.Errorf("exit %d stderr %q", code, stderr)
	}

	// No config: say how to get one.
	_, stderr, code = runCLI("", "--config", filepath.Join(t.TempDir(), "none.json"), "ps")
	if code != 1 || !strings.Contains(stderr, "no client config at") || !strings.Contains(stderr, "skiff up") {
		t.Errorf("exit %d stderr %q", code, stderr)
	}
	// SKIFF_CONFIG is honoured without --config.
	t.Setenv("SKIFF_CONFIG", f.cfg)
	f.mux.HandleFunc("GET /v1/groups", func(w http.ResponseWriter, r *http.Request) { jsonReply(w, 200, api.List[api.Group]{}) })
	if _, stderr, code := runCLI("", "ps"); code != 0 {
		t.Errorf("SKIFF_CONFIG ignored: %s", stderr)
	}

	// Nothing listening.
	cfg := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(cfg, []byte(`{"endpoint":"http://127.0.0.1:1","accessKeyId":"a","accessKeySecret":"b"}`), 0o600)
	_, stderr, code = runCLI("", "--config", cfg, "ps")
	if code != 1 || !strings.Contains(stderr, "Is the skiff server at http://127.0.0.1:1 running?") {
		t.Errorf("exit %d stderr %q", code, stderr)
	}
}

func TestRmAndRestart(t *testing.T) {
	f := newFakeAPI(t)
	gs := f.serveGroups()
	gs.groups["g-1"] = &api.Group{ID: "g-1", Name: "web"}
	gs.groups["g-2"] = &api.Group{ID: "g-2", Name: "db"}
	stdout, stderr, code := f.cli("", "rm", "-f", "web", "ghost", "g-2")
	if code != 1 || stdout != "web\ng-2\n" || !strings.Contains(stderr, "Error: ghost: no group ghost") {
		t.Errorf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	if d := f.requests("DELETE", "/v1/groups/web"); len(d) != 1 || d[0].Query["force"][0] != "true" {
		t.Errorf("delete %+v", d)
	}
	f.mux.HandleFunc("POST /v1/groups/{id}/restart", func(w http.ResponseWriter, r *http.Request) {
		jsonReply(w, 200, api.Group{ID: "g-1", RestartGeneration: 2})
	})
	stdout, _, code = f.cli("", "restart", "-o", "json", "web")
	var got []api.Group
	if code != 0 || json.Unmarshal([]byte(stdout), &got) != nil || got[0].RestartGeneration != 2 {
		t.Errorf("exit %d stdout %q", code, stdout)
	}
}

func TestLogsFlags(t *testing.T) {
	f := newFakeAPI(t)
	f.mux.HandleFunc("GET /v1/groups/{id}/logs", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("a line\n"))
	})
	stdout, stderr, code := f.cli("", "logs", "-f", "--tail", "10", "--since", "10m", "--previous", "-c", "side", "--timestamps", "web")
	if code != 0 || stdout != "a line\n" {
		t.Fatalf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	q := f.requests("GET", "/v1/groups/web/logs")[0].Query
	want := map[string][]string{"follow": {"true"}, "tail": {"10"}, "since": {"10m"}, "previous": {"true"}, "container": {"side"}, "timestamps": {"true"}}
	if !reflect.DeepEqual(q, want) {
		t.Errorf("query %v", q)
	}
	f.cli("", "logs", "--since", "2026-01-02T15:04:05Z", "--tail", "all", "web")
	if q := f.requests("GET", "/v1/groups/web/logs")[1].Query; !reflect.DeepEqual(q, map[string][]string{"since": {"2026-01-02T15:04:05Z"}}) {
		t.Errorf("query %v", q)
	}
	for _, bad := range [][]string{{"--tail", "-5"}, {"--tail", "x"}, {"--since", "yesterday"}, {"--since", "-5m"}} {
		if _, stderr, code := f.cli("", append(append([]string{"logs"}, bad...), "web")...); code != 1 || !strings.Contains(stderr, bad[0]) {
			t.Errorf("%v: exit %d stderr %q", bad, code, stderr)
		}
	}
}

func TestExecOneShot(t *testing.T) {
	f := newFakeAPI(t)
	f.mux.HandleFunc("POST /v1/groups/{id}/exec", func(w http.ResponseWriter, r *http.Request) {
		var req api.ExecRequest
		json.NewDecoder(r.Body).Decode(&req)
		jsonReply(w, 200, api.ExecResult{Stdout: strings.Join(req.Command, "|") + "\n", Stderr: "warn\n", ExitCode: 4})
	})
	stdout, stderr, code := f.cli("", "exec", "-c", "app", "web", "--", "ls", "-l", "/")
	if code != 4 || stdout != "ls|-l|/\n" || stderr != "warn\n" {
		t.Errorf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	var req api.ExecRequest
	json.Unmarshal(f.requests("POST", "/v1/groups/web/exec")[0].Body, &req)
	if req.Container != "app" || len(req.Command) != 3 {
		t.Errorf("request %+v", req)
	}
	// Without --, flags after the id belong to the command.
	stdout, _, _ = f.cli("", "exec", "web", "ls", "-la")
	if stdout != "ls|-la\n" {
		t.Errorf("stdout %q", stdout)
	}
	if _, stderr, code := f.cli("", "exec", "web"); code != 1 || !strings.Contains(stderr, "COMMAND") {
		t.Errorf("no command: %d %q", code, stderr)
	}
}

func TestExecInteractiveStreams(t *testing.T) {
	f := newFakeAPI(t)
	f.mux.HandleFunc("GET /v1/groups/{id}/exec/ws", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("stdin") != "true" || r.URL.Query().Get("tty") != "" {
			t.Errorf("query %v", r.URL.Query())
		}
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		var in bytes.Buffer
		for {
			_, msg, err := conn.Read(r.Context())
			if err != nil {
				return
			}
			switch msg[0] {
			case api.ExecChannelStdin:
				in.Write(msg[1:])
			case api.ExecChannelClose:
				conn.Write(r.Context(), websocket.MessageBinary, append([]byte{api.ExecChannelStdout}, strings.ToUpper(in.String())...))
				conn.Write(r.Context(), websocket.MessageBinary, append([]byte{api.ExecChannelStderr}, "done\n"...))
				b, _ := json.Marshal(api.ExecExit{ExitCode: 2})
				conn.Write(r.Context(), websocket.MessageBinary, append([]byte{api.ExecChannelExit}, b...))
				conn.Close(websocket.StatusNormalClosure, "")
				return
			}
		}
	})
	stdout, stderr, code := f.cli("piped input\n", "exec", "-i", "web", "cat")
	if code != 2 || stdout != "PIPED INPUT\n" || stderr != "done\n" {
		t.Errorf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
}

func TestWaitVerb(t *testing.T) {
	f := newFakeAPI(t)
	gs := f.serveGroups()
	gs.groups["g-1"] = &api.Group{ID: "g-1", Name: "ok", Status: api.StatusRunning}
	gs.groups["g-2"] = &api.Group{ID: "g-2", Name: "bad", Status: api.StatusFailed, Reason: "OOMKilled"}
	stdout, stderr, code := f.cli("", "wait", "ok", "--for", "running", "--timeout", "5s")
	if code != 0 || stdout != "ok\n" {
		t.Errorf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	if q := f.requests("GET", "/v1/groups/ok/wait")[0].Query; q["status"][0] != "Running,ScheduleFailed,Succeeded,Failed,Expired" || q["timeout"][0] != "5s" {
		t.Errorf("query %v", q)
	}
	_, stderr, code = f.cli("", "wait", "bad")
	if code != 1 || !strings.Contains(stderr, "will not become Running: the group is Failed (OOMKilled)") {
		t.Errorf("exit %d stderr %q", code, stderr)
	}
	if _, stderr, code := f.cli("", "wait", "ok", "--for", "Dancing"); code != 1 || !strings.Contains(stderr, "unknown status") {
		t.Errorf("exit %d stderr %q", code, stderr)
	}
}

func TestStats(t *testing.T) {
	old := statsSampleGap
	statsSampleGap = time.Millisecond
	t.Cleanup(func() { statsSampleGap = old })
	f := newFakeAPI(t)
	f.mux.HandleFunc("GET /v1/groups", func(w http.ResponseWriter, r *http.Request) {
		jsonReply(w, 200, api.List[api.Group]{Items: []api.Group{{ID: "g-1", Name: "web", Status: api.StatusRunning,
			Spec: api.GroupSpec{Memory: 512 << 20}}}})
	})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	n := 0
	f.mux.HandleFunc("GET /v1/groups/{id}/metrics", func(w http.ResponseWriter, r *http.Request) {
		n++
		// Half a core busy over one second.
		jsonReply(w, 200, api.Metrics{GroupID: "g-1", Time: t0.Add(time.Duration(n) * time.Second), CPUNanos: uint64(n) * 5e8,
			MemoryUsed: 128 << 20, Pids: 3, RxBytes: 2048, TxBytes: 1 << 20})
	})
	stdout, stderr, code := f.cli("", "stats")
	want := "" +
		"ID    NAME   CPU %   MEM USAGE / LIMIT   MEM %   PIDS   NET I/O\n" +
		"g-1   web    50.0%   128Mi / 512Mi       25.0%   3      2Ki / 1Mi\n"
	if code != 0 || stdout != want {
		t.Errorf("exit %d stderr %q\n%s\nwant\n%s", code, stderr, stdout, want)
	}
	if q := f.requests("GET", "/v1/groups")[0].Query; q["status"][0] != "Running" {
		t.Errorf("query %v", q)
	}
}

func TestHostsAndImages(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	timeNow = func() time.Time { return now }
	t.Cleanup(func() { timeNow = time.Now })
	f := newFakeAPI(t)
	f.mux.HandleFunc("GET /v1/hosts", func(w http.ResponseWriter, r *http.Request) {
		jsonReply(w, 200, api.List[api.Host]{Items: []api.Host{{ID: "h-1", Name: "node1", State: api.HostReady, Zone: "z1",
			Capacity:  api.Resources{MilliCPU: 2000, Memory: 24 << 30, Groups: 3000},
			Allocated: api.Resources{MilliCPU: 1500, Memory: 3 << 29, Groups: 12},
			JoinedAt:  now.Add(-72 * time.Hour),
			Pool:      &api.HostPool{Classes: []api.PoolClassStatus{{Class: "c0.25", Size: 3, Target: 4, Hits: 9, Misses: 2}, {Class: "c1", Size: 1, Target: 1}}}}}})
	})
	f.mux.HandleFunc("GET /v1/images", func(w http.ResponseWriter, r *http.Request) {
		jsonReply(w, 200, api.List[api.Image]{Items: []api.Image{{Ref: "busybox:latest", Digest: "sha256:0123456789abcdef0123", Size: 4404019, Layers: 1, Hosts: []string{"h-1"}}}})
	})
	stdout, _, code := f.cli("", "hosts")
	want := "" +
		"ID    NAME    STATE   ZONE   CPU     MEM          GROUPS    POOL   HIT/MISS   AGE\n" +
		"h-1   node1   Ready   z1     1.5/2   1.5Gi/24Gi   12/3000   4/5    9/2        3d\n"
	if code != 0 || stdout != want {
		t.Errorf("hosts\n%s\nwant\n%s", stdout, want)
	}
	stdout, _, code = f.cli("", "image", "ls")
	want = "" +
		"REF              DIGEST                SIZE    LAYERS   HOSTS   AGE\n" +
		"busybox:latest   sha256:0123456789ab   4.2Mi   1        1       -\n"
	if code != 0 || stdout != want {
		t.Errorf("images\n%s\nwant\n%s", stdout, want)
	}
	stdout, _, _ = f.cli("", "hosts", "-o", "json")
	var hs []api.Host
	if err := json.Unmarshal([]byte(stdout), &hs); err != nil || hs[0].Capacity.Groups != 3000 || hs[0].Pool.Classes[0].Hits != 9 {
		t.Errorf("hosts json %q %v", stdout, err)
	}
}

func TestImageImport(t *testing.T) {
	f := newFakeAPI(t)
	f.mux.HandleFunc("POST /v1/images/import", func(w http.ResponseWriter, r *http.Request) {
		jsonReply(w, 200, api.ImportResult{Images: []api.Image{{Ref: "app:1", Digest: "sha256:ab", Size: 10}},
			Hosts: []api.HostImportStat{{HostID: "h-1"}, {HostID: "h-2", Error: "disk full"}}})
	})
	p := filepath.Join(t.TempDir(), "app.tar")
	os.WriteFile(p, bytes.Repeat([]byte{1}, 10000), 0o644)
	stdout, stderr, code := f.cli("", "image", "import", p)
	if code != 0 || !strings.Contains(stdout, "app:1") || !strings.Contains(stderr, "Warning: host h-2: disk full") ||
		!strings.Contains(stderr, "Uploaded app.tar: 9.8Ki / 9.8Ki (100%)") {
		t.Errorf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	if b := f.requests("POST", "/v1/images/import")[0].Body; len(b) != 10000 {
		t.Errorf("sent %d bytes", len(b))
	}
}

func TestHumanFormats(t *testing.T) {
	for in, want := range map[int64]string{0: "0B", 512: "512B", 1024: "1Ki", 1536: "1.5Ki", 256 << 20: "256Mi", 3 << 29: "1.5Gi", 1 << 40: "1Ti"} {
		if got := humanBytes(in); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[time.Duration]string{0: "0s", 3 * time.Second: "3s", 5*time.Minute + 30*time.Second: "5m", 3 * time.Hour: "3h", 47 * time.Hour: "47h", 72 * time.Hour: "3d", -time.Second: "0s"} {
		if got := humanDuration(in); got != want {
			t.Errorf("humanDuration(%s) = %q, want %q", in, got, want)
		}
	}
	if got := fmt.Sprint(humanCores(250)); got != "0.25" {
		t.Errorf("humanCores %q", got)
	}
}
