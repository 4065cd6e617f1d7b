package kube

import (
	"os"
	"testing"
	"time"
)

// TestPause keeps the cluster up for a person to look at, when
// SKIFF_KUBE_PAUSE is a duration ("10m"); the kubeconfig is in the log.
func TestPause(t *testing.T) {
	requireEnv(t)
	d, err := time.ParseDuration(os.Getenv("SKIFF_KUBE_PAUSE"))
	if err != nil {
		t.Skip("SKIFF_KUBE_PAUSE not set")
	}
	t.Logf("cluster up for %s: kubectl --kubeconfig %s; skiff --config %s", d, e.kubeconfig, e.skiffCfg)
	time.Sleep(d)
}
