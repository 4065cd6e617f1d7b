package integration

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
)

// TestHA runs a second server replica on the first one's etcd: exactly one
// of them leads, and groups created through either are scheduled.
func TestHA(t *testing.T) {
	requireRoot(t)
	cl := newCluster(t, clusterOptions{agents: []agentSpec{{name: "ha-host", podCIDR: cidrsHA[0], cpu: "8", memory: "2Gi"}}})
	s1 := cl.servers[0]
	s2 := cl.startServer("server-2", s1.etcdClient)
	c2 := cl.clientFor(s2)

	var leaders map[string]float64
	err := poll(30*time.Second, func() (bool, error) {
		leaders = map[string]float64{}
		n := 0.0
		for _, s := range cl.servers {
			v, err := leaderGauge(s)
			if err != nil {
				return false, nil
			}
			leaders[s.name] = v
			n += v
		}
		return n == 1, nil
	})
	if err != nil {
		t.Fatalf("skiff_server_leader: %v, want exactly one replica at 1", leaders)
	}
	t.Logf("leaders: %v", leaders)

	cl.importImage(t, 1)
	labels := map[string]string{"suite": "ha"}
	g1 := cl.create(t, "via-server-1", busybox("sleep", "100000"), labels)
	g2, _, err := c2.CreateGroup(ctxT(t, 10*time.Second), api.CreateGroupRequest{Name: "via-server-2", Labels: labels, Spec: busybox("sleep", "100000")})
	if err != nil {
		t.Fatalf("create through server-2: %v", err)
	}
	for _, id := range []string{g1.ID, g2.ID} {
		cl.waitStatus(t, nil, id, api.StatusRunning, 60*time.Second)
		// Both replicas see the same state.
		if g, err := c2.GetGroup(ctxT(t, 10*time.Second), id); err != nil || g.Status != api.StatusRunning {
			t.Errorf("server-2 sees %s as %v (%v)", id, describe(g), err)
		}
	}
	// Exec through the replica the agent is not connected to.
	res, err := c2.Exec(ctxT(t, 30*time.Second), g2.ID, api.ExecRequest{Command: []string{"echo", "hi"}})
	if err != nil {
		t.Errorf("exec through server-2 (the agent is connected to server-1): %v", err)
	} else if res.Stdout != "hi\n" {
		t.Errorf("exec through server-2: %+v", res)
	}
	if v, _ := leaderGauge(s1); v+leaders["server-2"] < 1 {
		t.Errorf("no leader any more")
	}
}

// leaderGauge reads skiff_server_leader from a replica's /metrics.
func leaderGauge(s *server) (float64, error) {
	resp, err := http.Get("http://" + s.api + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, resp.Body)
		return 0, fmt.Errorf("/metrics: %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "skiff_server_leader" {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	return 0, fmt.Errorf("/metrics of %s has no skiff_server_leader", s.name)
}
