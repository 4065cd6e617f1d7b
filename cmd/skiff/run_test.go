package main

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/skiffhq/skiff/api"
)

func TestRunBuildsRequest(t *testing.T) {
	t.Setenv("FROM_HOST", "host-value")
	one := func(mut func(c *api.Container, r *api.CreateGroupRequest)) api.CreateGroupRequest {
		r := api.CreateGroupRequest{Spec: api.GroupSpec{
			RestartPolicy: api.RestartNever,
			Containers:    []api.Container{{Name: "main", Image: "busybox"}},
		}}
		mut(&r.Spec.Containers[0], &r)
		return r
	}
	tests := []struct {
		name string
		argv []string
		want api.CreateGroupRequest
	}{
		{"image only", []string{"busybox"}, one(func(c *api.Container, r *api.CreateGroupRequest) {})},
		{"name names group and container", []string{"--name", "web", "busybox"}, one(func(c *api.Container, r *api.CreateGroupRequest) {
			r.Name, c.Name = "web", "web"
		})},
		{"args after --", []string{"busybox", "--", "sh", "-c", "echo hi"}, one(func(c *api.Container, r *api.CreateGroupRequest) {
			c.Args = []string{"sh", "-c", "echo hi"}
		})},
		{"args without -- keep their flags", []string{"busybox", "ls", "-l", "-d"}, one(func(c *api.Container, r *api.CreateGroupRequest) {
			c.Args = []string{"ls", "-l", "-d"}
		})},
		{"entrypoint", []string{"--entrypoint", "/bin/echo", "busybox", "hi"}, one(func(c *api.Container, r *api.CreateGroupRequest) {
			c.Command, c.Args = []string{"/bin/echo"}, []string{"hi"}
		})},
		{"resources", []string{"--cpu", "0.5", "--memory", "256Mi", "busybox"}, one(func(c *api.Container, r *api.CreateGroupRequest) {
			c.Resources.Limits = api.ResourceList{CPU: 500, Memory: 256 << 20}
		})},
		{"millicores", []string{"--cpu", "250m", "-m", "1Gi", "busybox"}, one(func(c *api.Container, r *api.CreateGroupRequest) {
			c.Resources.Limits = api.ResourceList{CPU: 250, Memory: 1 << 30}
		})},
		{"env", []string{"-e", "A=1", "-e", "B=x=y", "-e", "EMPTY=", "-e", "FROM_HOST", "-e", "NOT_SET_ANYWHERE", "busybox"}, one(func(c *api.Container, r *api.CreateGroupRequest) {
			c.Env = []api.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "x=y"}, {Name: "EMPTY"}, {Name: "FROM_HOST", Value: "host-value"}}
		})},
		{"ports", []string{"-p", "8080:80", "-p", "53:53/udp", "-p", "9000", "busybox"}, one(func(c *api.Container, r *api.CreateGroupRequest) {
			c.Ports = []api.ContainerPort{
				{HostPort: 8080, ContainerPort: 80, Protocol: "TCP"},
				{HostPort: 53, ContainerPort: 53, Protocol: "UDP"},
				{ContainerPort: 9000, Protocol: "TCP"},
			}
		})},
		{"restart always", []string{"--restart", "always", "busybox"}, one(func(c *api.Container, r *api.CreateGroupRequest) {
			r.Spec.RestartPolicy = api.RestartAlways
		})},
		{"restart on-failure", []string{"--restart=on-failure", "busybox"}, one(func(c *api.Container, r *api.CreateGroupRequest) {
			r.Spec.RestartPolicy = api.RestartOnFailure
		})},
		{"labels workdir tty stdin token", []string{"--label", "app=web", "-l", "tier=fe", "-w", "/srv", "-t", "-i", "--client-token", "tok", "busybox"},
			one(func(c *api.Container, r *api.CreateGroupRequest) {
				r.Labels = map[string]string{"app": "web", "tier": "fe"}
				r.ClientToken = "tok"
				c.WorkingDir, c.TTY, c.Stdin = "/srv", true, true
			})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t)
			gs := f.serveGroups()
			gs.onCreate = func(g *api.Group) { g.Status = api.StatusRunning }
			stdout, stderr, code := f.cli("", append([]string{"run", "-d"}, tt.argv...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if stdout != "g-1\n" {
				t.Errorf("stdout %q, want the group id", stdout)
			}
			posts := f.requests("POST", "/v1/groups")
			if len(posts) != 1 {
				t.Fatalf("%d creates", len(posts))
			}
			var got api.CreateGroupRequest
			if err := json.Unmarshal(posts[0].Body, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				gb, _ := json.Marshal(got)
				wb, _ := json.Marshal(tt.want)
				t.Errorf("request\n got %s\nwant %s", gb, wb)
			}
			waits := f.requests("GET", "/v1/groups/g-1/wait")
			if len(waits) != 1 || waits[0].Query["status"][0] != "Running,ScheduleFailed,Succeeded,Failed,Expired" || waits[0].Query["timeout"][0] != "1m0s" {
				t.Errorf("wait requests %+v", waits)
			}
		})
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	tests := []struct {
		argv []string
		want string
	}{
		{[]string{"-p", "80:80:80", "busybox"}, "binding to one host address"},
		{[]string{"-p", "0:80", "busybox"}, "from 1 to 65535"},
		{[]string{"-p", "http", "busybox"}, "from 1 to 65535"},
		{[]string{"-p", "80/sctp", "busybox"}, "tcp or udp"},
		{[]string{"-p", "80:1", "-p", "80:2", "busybox"}, "published twice"},
		{[]string{"-e", "=x", "busybox"}, "non-empty name"},
		{[]string{"--cpu", "lots", "busybox"}, "invalid cpu"},
		{[]string{"--cpu", "0", "busybox"}, "more than 0"},
		{[]string{"--memory", "12 parsecs", "busybox"}, "invalid quantity"},
		{[]string{"--restart", "sometimes", "busybox"}, "want no, always or on-failure"},
		{[]string{"--restart", "on-failure:3", "busybox"}, "retry limit"},
		{[]string{"--label", "=v", "busybox"}, "KEY=VALUE"},
		{[]string{"-it", "busybox", "sh"}, "skiff exec -it"},
		{[]string{"--rm", "-d", "busybox"}, "--rm"},
		{[]string{"-o", "yaml", "busybox"}, "output format"},
		{[]string{}, "IMAGE"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.argv, " "), func(t *testing.T) {
			f := newFakeAPI(t)
			f.serveGroups()
			_, stderr, code := f.cli("", append([]string{"run"}, tt.argv...)...)
			if code != 1 || !strings.Contains(stderr, tt.want) || !strings.HasPrefix(stderr, "Error: ") {
				t.Errorf("exit %d, stderr %q; want 1 and %q", code, stderr, tt.want)
			}
			if !strings.Contains(stderr, "skiff run --help") {
				t.Errorf("no usage hint in %q", stderr)
			}
			if n := len(f.requests("POST", "/v1/groups")); n != 0 {
				t.Errorf("%d creates sent for a bad command line", n)
			}
		})
	}
}

func TestRunDetachedReportsFailure(t *testing.T) {
	f := newFakeAPI(t)
	gs := f.serveGroups()
	gs.onCreate = func(g *api.Group) {
		g.Status, g.Reason, g.Message = api.StatusScheduleFailed, "NoCapacity", "no host has 64 CPUs free"
	}
	stdout, stderr, code := f.cli("", "run", "-d", "--cpu", "64", "busybox")
	if code != 1 || stdout != "g-1\n" {
		t.Errorf("exit %d stdout %q", code, stdout)
	}
	if !strings.Contains(stderr, "ScheduleFailed (NoCapacity): no host has 64 CPUs free") {
		t.Errorf("stderr %q", stderr)
	}
}

func TestRunDetachedWaitTimeout(t *testing.T) {
	f := newFakeAPI(t)
	gs := f.serveGroups()
	gs.onWait = func(w http.ResponseWriter, g *api.Group) {
		jsonReply(w, http.StatusRequestTimeout, api.Error{Code: "WaitTimeout", Message: "timed out", RequestID: "r1"})
	}
	stdout, stderr, code := f.cli("", "run", "-d", "--wait-timeout", "2s", "busybox")
	if code != 1 || stdout != "g-1\n" || !strings.Contains(stderr, "still Pending after 2s") || !strings.Contains(stderr, "skiff events g-1") {
		t.Errorf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
}

func TestRunAttachedFollowsLogsAndExitsWithCode(t *testing.T) {
	f := newFakeAPI(t)
	gs := f.serveGroups()
	gs.onCreate = func(g *api.Group) {
		g.Status = api.StatusRunning
		g.Containers = []api.ContainerStatus{{Name: "main", State: api.ContainerRunning}}
	}
	f.mux.HandleFunc("GET /v1/groups/{id}/logs", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("follow") != "true" || r.URL.Query().Get("container") != "main" {
			t.Errorf("logs query %v", r.URL.Query())
		}
		w.Write([]byte("hello\nworld\n"))
		// The container ends with the stream.
		gs.mu.Lock()
		g := gs.groups[r.PathValue("id")]
		three := 3
		g.Status = api.StatusFailed
		g.Containers = []api.ContainerStatus{{Name: "main", State: api.ContainerTerminated, ExitCode: &three, Reason: "Error"}}
		gs.mu.Unlock()
	})
	stdout, stderr, code := f.cli("", "run", "--rm", "busybox", "sh", "-c", "echo hello; echo world; exit 3")
	if code != 3 || stdout != "hello\nworld\n" {
		t.Errorf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	if stderr != "" {
		t.Errorf("stderr %q", stderr)
	}
	dels := f.requests("DELETE", "/v1/groups/g-1")
	if len(dels) != 1 || dels[0].Query["force"][0] != "true" {
		t.Errorf("--rm deletes %+v", dels)
	}
}

func TestParseHelpers(t *testing.T) {
	if _, err := parseRestart("Never"); err != nil {
		t.Error(err)
	}
	env, err := parseEnv([]string{"A=1", "B"}, func(string) (string, bool) { return "", false })
	if err != nil || len(env) != 1 {
		t.Errorf("env %v %v", env, err)
	}
}
