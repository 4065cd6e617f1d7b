package integration

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiffhq/skiff/internal/mountinfo"
)

// podRange holds every pod CIDR the tests hand to agents. TestMain refuses
// to run when the machine already routes into it.
var podRange = netip.MustParsePrefix("10.213.0.0/16")

// Pod CIDRs of the clusters; each test's agents take distinct ones so that
// clusters never share addresses even when a leak survives a test.
var (
	cidrsShared = []string{"10.213.0.0/20", "10.213.16.0/20", "10.213.32.0/20"}
	cidrsCrash  = []string{"10.213.48.0/20", "10.213.64.0/20", "10.213.80.0/20"}
	cidrsHA     = []string{"10.213.96.0/20"}
)

// cgroupParents records the cgroup parent ("skiff/<hash>") of every agent
// data dir the tests used, for the final leak check.
var cgroupParents = struct {
	sync.Mutex
	m map[string]bool
}{m: map[string]bool{}}

// cgroupParentOf mirrors cmd/skiff's choice of a cgroup parent per agent
// data dir (FNV-1a of the path), so a test can find its sandboxes' cgroups.
func cgroupParentOf(dataDir string) string {
	var h uint32 = 2166136261
	for i := 0; i < len(dataDir); i++ {
		h ^= uint32(dataDir[i])
		h *= 16777619
	}
	return fmt.Sprintf("skiff/%08x", h)
}

func registerCgroupParent(p string) {
	cgroupParents.Lock()
	cgroupParents.m[p] = true
	cgroupParents.Unlock()
}

func allCgroupParents() []string {
	cgroupParents.Lock()
	defer cgroupParents.Unlock()
	var out []string
	for p := range cgroupParents.m {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// scope says what belongs to a run (or one cluster): paths under root,
// cgroups under parents, veths routing into cidr.
type scope struct {
	root    string
	parents []string
	cidr    netip.Prefix
}

// machineState is what existed before the tests started.
type machineState struct {
	veths map[string]bool
}

func snapshotMachine() machineState {
	s := machineState{veths: map[string]bool{}}
	for _, v := range skVeths() {
		s.veths[v] = true
	}
	return s
}

func globalScope() scope {
	return scope{root: testRoot, parents: allCgroupParents(), cidr: podRange}
}

// findLeaks lists everything the run left on the machine.
func findLeaks(base machineState) []string {
	return globalScope().leaks(base)
}

func forceCleanup(base machineState, logf func(string, ...any)) {
	globalScope().cleanup(base, logf)
}

// checkPodRangeFree fails when the machine already has routes or addresses
// in podRange (the tests would collide with something real).
func checkPodRangeFree() error {
	out, err := exec.Command("ip", "-4", "-o", "route", "show", "table", "all").Output()
	if err != nil {
		return fmt.Errorf("ip route: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		dst := f[0]
		if dst == "default" || dst == "broadcast" || dst == "local" || dst == "unicast" {
			if len(f) < 2 || dst == "default" {
				continue
			}
			dst = f[1]
		}
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		p, err := netip.ParsePrefix(dst)
		if err != nil {
			continue
		}
		if p.Overlaps(podRange) && p.Bits() > 0 {
			return fmt.Errorf("this machine already routes %s, inside the tests' pod range %s; free it or change podRange", p, podRange)
		}
	}
	return nil
}

// skVeths lists host links named like skiff's host-side veths.
func skVeths() []string {
	// A dump interrupted by concurrent changes still lists what it saw.
	out, _ := exec.Command("ip", "-o", "link", "show").Output()
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(name, "sk") && len(name) == 15 {
			names = append(names, name)
		}
	}
	return names
}

// vethRoutes maps each sk* link to the destinations routed through it.
func vethRoutes() map[string][]netip.Prefix {
	out, _ := exec.Command("ip", "-4", "-o", "route", "show").Output()
	m := map[string][]netip.Prefix{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		dev := ""
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "dev" {
				dev = f[i+1]
			}
		}
		if !strings.HasPrefix(dev, "sk") {
			continue
		}
		dst := f[0]
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		if p, err := netip.ParsePrefix(dst); err == nil {
			m[dev] = append(m[dev], p)
		}
	}
	return m
}

// ourVeths are the sk* links that route into s.cidr. (A veth of ours
// without a route cannot outlive its group unless the group's network
// namespace does, and that is held by a process or a bind mount, which the
// other checks find.)
func (s scope) ourVeths(base machineState) []string {
	routes := vethRoutes()
	var out []string
	for _, v := range skVeths() {
		if base.veths[v] {
			continue
		}
		for _, p := range routes[v] {
			if s.cidr.Overlaps(p) {
				out = append(out, v)
				break
			}
		}
	}
	return out
}

// ourMounts lists mount points that mention s.root, deepest first.
func (s scope) ourMounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, s.root) {
			continue
		}
		fs := strings.Fields(line)
		if len(fs) > 4 {
			out = append(out, mountinfo.Unescape(fs[4]))
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// cgroupDirs lists every cgroup directory below s's parents (not the
// parents themselves), deepest first, in every hierarchy.
func (s scope) cgroupDirs(includeParents bool) []string {
	hier, _ := filepath.Glob("/sys/fs/cgroup/*")
	hier = append(hier, "/sys/fs/cgroup")
	var out []string
	for _, h := range hier {
		for _, p := range s.parents {
			dir := filepath.Join(h, p)
			if st, err := os.Stat(dir); err != nil || !st.IsDir() {
				continue
			}
			_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
				if err != nil || !d.IsDir() {
					return nil
				}
				if path != dir || includeParents {
					out = append(out, path)
				}
				return nil
			})
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// ourProcesses lists processes whose command line mentions s.root (the
// server and agents: their data dirs are there) or that sit in one of s's
// cgroups (sandbox init and workload processes).
func (s scope) ourProcesses() map[int]string {
	self := os.Getpid()
	out := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmd := strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
		if s.root != "" && strings.Contains(cmd, s.root) {
			out[pid] = cmd
			continue
		}
		cg, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if err != nil {
			continue
		}
		for _, p := range s.parents {
			if strings.Contains(string(cg), "/"+p+"/") {
				out[pid] = fmt.Sprintf("%s (in cgroup %s)", cmd, p)
				break
			}
		}
	}
	return out
}

// leaks describes everything of s still on the machine.
func (s scope) leaks(base machineState) []string {
	var out []string
	for _, m := range s.ourMounts() {
		out = append(out, "mount "+m)
	}
	for _, v := range s.ourVeths(base) {
		out = append(out, "veth "+v)
	}
	for _, c := range s.cgroupDirs(false) {
		out = append(out, "cgroup "+c)
	}
	procs := s.ourProcesses()
	pids := make([]int, 0, len(procs))
	for p := range procs {
		pids = append(pids, p)
	}
	sort.Ints(pids)
	for _, p := range pids {
		out = append(out, fmt.Sprintf("process %d: %s", p, procs[p]))
	}
	return out
}

// cleanup removes what s left, as a last resort: kill its processes,
// unmount, delete veths, remove cgroups (parents included).
func (s scope) cleanup(base machineState, logf func(string, ...any)) {
	for i := 0; i < 3; i++ {
		procs := s.ourProcesses()
		if len(procs) == 0 {
			break
		}
		for pid, cmd := range procs {
			logf("kill -9 %d (%s)", pid, cmd)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(300 * time.Millisecond)
	}
	for _, m := range s.ourMounts() {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			logf("umount %s: %v", m, err)
		}
	}
	for _, v := range s.ourVeths(base) {
		if out, err := exec.Command("ip", "link", "del", v).CombinedOutput(); err != nil {
			logf("ip link del %s: %v %s", v, err, out)
		}
	}
	for _, c := range s.cgroupDirs(true) {
		if err := os.Remove(c); err != nil && !os.IsNotExist(err) {
			logf("rmdir %s: %v", c, err)
		}
	}
}
