package server

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestECIJavaScriptSDK drives the ECI front through a second official SDK,
// Alibaba Cloud's JavaScript one (@alicloud/eci20180808), which signs with
// signature V3 by default; then again with signature 1.0. It needs node
// and the SDK: set SKIFF_ECI_JS_MODULES to a node_modules directory that
// holds it (npm install @alicloud/eci20180808 @alicloud/openapi-client);
// without them it skips.
func TestECIJavaScriptSDK(t *testing.T) {
	mods := os.Getenv("SKIFF_ECI_JS_MODULES")
	node, err := exec.LookPath("node")
	if mods == "" || err != nil {
		t.Skip("needs node and SKIFF_ECI_JS_MODULES (a node_modules with @alicloud/eci20180808)")
	}
	if _, err := os.Stat(filepath.Join(mods, "@alicloud", "eci20180808")); err != nil {
		t.Skipf("no @alicloud/eci20180808 under %s", mods)
	}
	ts := startServer(t)
	startSimAgent(t, ts, 8000, 16<<30)
	for _, sig := range []string{"v3", "v2"} {
		t.Run(sig, func(t *testing.T) {
			cmd := exec.Command(node, "testdata/eci-js/smoke.js")
			cmd.Env = append(os.Environ(), "NODE_PATH="+mods, "ECI_KEY="+ts.cfg.AccessKeyID, "ECI_SECRET="+ts.cfg.AccessKeySecret,
				"ECI_ENDPOINT="+strings.TrimPrefix(ts.cfg.Endpoint, "http://"), "ECI_SIGNATURE="+sig)
			done := make(chan struct{})
			var out []byte
			go func() { out, err = cmd.CombinedOutput(); close(done) }()
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Fatalf("node timed out: %s", out)
			}
			if err != nil {
				t.Fatalf("node: %v\n%s", err, out)
			}
			var got struct {
				Region   string
				ID       string
				Describe struct {
					Total     int
					Name, Env string
					Tag       string
					CPU       float64
				}
				Status struct {
					Total     int
					ID, Phase string
				}
				Updated struct {
					Tag  string
					Args []string
					Env  []string
				}
				Usage    map[string]float64
				NotFound struct {
					Code   string
					Status int
				}
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			t.Logf("%s", out)
			switch {
			case got.Region != "skiff" || !strings.HasPrefix(got.ID, "g-"):
				t.Errorf("region/create: %s", out)
			case got.Describe.Total != 1 || got.Describe.Name != "js-sdk" || got.Describe.CPU != 0.5 || got.Describe.Env != "A" || got.Describe.Tag != "js":
				t.Errorf("describe: %s", out)
			case got.Status.Total != 1 || got.Status.ID != got.ID || got.Status.Phase == "":
				t.Errorf("status: %s", out)
			case got.Updated.Tag != "js2" || strings.Join(got.Updated.Args, " ") != "sleep 7200" || strings.Join(got.Updated.Env, ",") != "B=2":
				t.Errorf("update: %s", out)
			case got.Usage["UsedCpu"] != 0.5:
				t.Errorf("usage: %s", out)
			case got.NotFound.Code != "ResourceNotFound" || got.NotFound.Status != 404:
				t.Errorf("not found: %s", out)
			}
		})
	}
}
