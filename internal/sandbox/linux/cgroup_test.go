package linux

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeUnified makes a directory that looks like a cgroup v2 root: the
// kernel would create the interface files of each new cgroup; the test
// creates those the code reads.
func fakeUnified(t *testing.T) string {
	root := t.TempDir()
	for f, c := range map[string]string{"cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n", "cgroup.subtree_control": ""} {
		if err := os.WriteFile(filepath.Join(root, f), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func readTrim(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestCgroupV2Writes(t *testing.T) {
	root := fakeUnified(t)
	// Each level's cgroup.controllers appears with the directory in a
	// real hierarchy; here they are put there before use.
	mkLevel := func(rel string) {
		d := filepath.Join(root, rel)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "cgroup.controllers"), []byte("cpu memory pids\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mkLevel("skiff")
	cg, err := newCgroups(root, "skiff")
	if err != nil {
		t.Fatal(err)
	}
	if !cg.v2 {
		t.Fatal("fake unified root detected as v1")
	}
	if got := readTrim(t, filepath.Join(root, "cgroup.subtree_control")); got != "+cpu +memory +pids" {
		t.Errorf("root subtree_control %q", got)
	}
	if got := readTrim(t, filepath.Join(root, "skiff/cgroup.subtree_control")); got != "+cpu +memory +pids" {
		t.Errorf("parent subtree_control %q", got)
	}
	mkLevel("skiff/g1")
	if err := cg.create("g1", 1500, 256<<20, 100, true); err != nil {
		t.Fatal(err)
	}
	if err := cg.create("g1/c", 250, 64<<20, 0, false); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{
		"skiff/g1/cgroup.subtree_control": "+cpu +memory +pids",
		"skiff/g1/cpu.max":                "150000 100000",
		"skiff/g1/cpu.weight":             "59",
		"skiff/g1/memory.max":             "268435456",
		"skiff/g1/memory.swap.max":        "0",
		"skiff/g1/pids.max":               "100",
		"skiff/g1/c/cpu.max":              "25000 100000",
		"skiff/g1/c/memory.max":           "67108864",
	} {
		if got := readTrim(t, filepath.Join(root, f)); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "skiff/g1/c/pids.max")); err == nil {
		t.Error("pids.max written without a limit")
	}
	if got := cg.procsFiles("g1/c"); len(got) != 1 || got[0] != filepath.Join(root, "skiff/g1/c/cgroup.procs") {
		t.Errorf("procs files %v", got)
	}
	// OOM kills are read from memory.events.
	if err := os.WriteFile(filepath.Join(root, "skiff/g1/c/memory.events"), []byte("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if n := cg.oomKills("g1/c"); n != 1 {
		t.Errorf("oomKills = %d", n)
	}
}

// TestCgroupDetection: this host's hierarchy is found as what it is (the
// CI machine is hybrid: v1).
func TestCgroupDetection(t *testing.T) {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		t.Skip(err)
	}
	want := st.Type == unix.CGROUP2_SUPER_MAGIC
	if got := isUnified("/sys/fs/cgroup", st.Type); got != want {
		t.Errorf("isUnified = %v, want %v (fs type %#x)", got, want, st.Type)
	}
	if os.Geteuid() == 0 && !want {
		parent := "skiff-detect-test"
		cg, err := newCgroups("/sys/fs/cgroup", parent)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			for _, d := range cg.dirs("") {
				os.Remove(d)
			}
		}()
		if cg.v2 || cg.memory == "" || cg.pids == "" {
			t.Errorf("hybrid host: %+v, want v1 controllers", cg)
		}
	}
}

// TestCgroupRewriteLimitsV2: a claimed prepared sandbox gets the group's
// limits, 0 meaning none.
func TestCgroupRewriteLimitsV2(t *testing.T) {
	root := fakeUnified(t)
	for _, rel := range []string{"skiff", "skiff/_p1"} {
		if err := os.MkdirAll(filepath.Join(root, rel), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, rel, "cgroup.controllers"), []byte("cpu memory pids\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cg, err := newCgroups(root, "skiff")
	if err != nil {
		t.Fatal(err)
	}
	if err := cg.create("_p1", 500, 64<<20, 4096, true); err != nil {
		t.Fatal(err)
	}
	if err := cg.rewriteLimits("_p1", 0, 128<<20, 0); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{
		"skiff/_p1/cpu.max":    "max",
		"skiff/_p1/cpu.weight": "100",
		"skiff/_p1/memory.max": "134217728",
		"skiff/_p1/pids.max":   "max",
	} {
		if got := readTrim(t, filepath.Join(root, f)); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}
}
