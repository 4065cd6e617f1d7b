package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The peers run for real: three containers each with runc and podman
// (those installed), then nothing of them is left: no process, no mount,
// no work directory.
func TestRunPeer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runc and podman containers need root")
	}
	img := filepath.Join(t.TempDir(), "bb.tar")
	if out, err := exec.Command("../../scripts/build-test-image.sh", img).CombinedOutput(); err != nil {
		t.Skipf("no test image (busybox-static missing?): %v: %s", err, out)
	}
	for _, rt := range []string{"runc", "podman"} {
		t.Run(rt, func(t *testing.T) {
			if _, err := exec.LookPath(rt); err != nil {
				t.Skipf("%s is not installed", rt)
			}
			work := t.TempDir()
			marker := "7777" + rt[:1] // a command line only these containers have
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res, err := RunPeer(ctx, PeerConfig{Runtime: rt, ImageTar: img, Command: []string{"sleep", marker}, WorkDir: work}, 3, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Timeline) != 3 || res.Seconds <= 0 || res.TeardownSeconds <= 0 {
				t.Errorf("result %+v", res)
			}
			if out, _ := exec.Command("pgrep", "-f", "sleep "+marker).Output(); len(out) > 0 {
				t.Errorf("peer containers still run: pids %s", strings.Fields(string(out)))
			}
			mounts, _ := os.ReadFile("/proc/self/mountinfo")
			if strings.Contains(string(mounts), work) {
				t.Errorf("mounts left under %s", work)
			}
			if ents, _ := os.ReadDir(work); len(ents) != 0 {
				t.Errorf("work dir not emptied: %d entries", len(ents))
			}
		})
	}
	if _, err := RunPeer(context.Background(), PeerConfig{Runtime: "docker", ImageTar: img}, 1, t.Logf); err == nil {
		t.Error("an unknown peer was accepted")
	}
}
