package bench

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/skiffhq/skiff/internal/mountinfo"
)

// leakScope is what one skiff instance of the replay may leave on the
// machine: the checks of scripts/leakcheck.sh (mounts, veths, cgroups,
// processes), narrowed to this instance so that other skiffs running on
// the same machine do not count: mounts and processes under its
// directory, cgroups under its agent's cgroup parent, and veths routing
// into its pod range.
type leakScope struct {
	dir          string       // the instance's directory (data dir inside)
	cgroupParent string       // "skiff/<hash>" of the agent's data dir
	cidr         netip.Prefix // the instance's --cluster-cidr
}

// cgroupParentOf mirrors cmd/skiff's cgroup parent per agent data dir
// (FNV-1a of the path), so the check finds the instance's cgroups.
func cgroupParentOf(agentDataDir string) string {
	var h uint32 = 2166136261
	for i := 0; i < len(agentDataDir); i++ {
		h ^= uint32(agentDataDir[i])
		h *= 16777619
	}
	return fmt.Sprintf("skiff/%08x", h)
}

// leaks lists what the instance left.
func (s leakScope) leaks() []string {
	var out []string
	for _, m := range s.mounts() {
		out = append(out, "mount "+m)
	}
	for _, r := range s.routes() {
		out = append(out, "veth "+r[1]+" (route "+r[0]+")")
	}
	for _, c := range s.cgroupDirs() {
		out = append(out, "cgroup "+c)
	}
	procs := s.processes()
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

// cleanup removes what the instance left, as a last resort.
func (s leakScope) cleanup() {
	for range 3 {
		procs := s.processes()
		if len(procs) == 0 {
			break
		}
		for pid := range procs {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(300 * time.Millisecond)
	}
	ms := s.mounts()
	sort.Sort(sort.Reverse(sort.StringSlice(ms))) // deepest first
	for _, m := range ms {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
	for _, r := range s.routes() {
		_ = exec.Command("ip", "link", "del", r[1]).Run()
	}
	dirs := s.cgroupDirs()
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		_ = os.Remove(d)
	}
	for _, root := range cgroupRoots() { // the instance's own parent, now empty
		_ = os.Remove(filepath.Join(root, s.cgroupParent))
	}
}

// mounts are the mount points under the instance's directory.
func (s leakScope) mounts() []string {
	mps, _ := mountinfo.Under(s.dir)
	return mps
}

// routes are [destination, device] of the routes into the instance's pod
// range through a skiff veth ("sk…").
func (s leakScope) routes() [][2]string {
	if !s.cidr.IsValid() {
		return nil
	}
	out, _ := exec.Command("ip", "-4", "-o", "route", "show").Output()
	var res [][2]string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		dst := f[0]
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		p, err := netip.ParsePrefix(dst)
		if err != nil || !s.cidr.Overlaps(p) || p.Bits() < s.cidr.Bits() {
			continue
		}
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "dev" && strings.HasPrefix(f[i+1], "sk") {
				res = append(res, [2]string{f[0], f[i+1]})
			}
		}
	}
	return res
}

func cgroupRoots() []string {
	roots := []string{"/sys/fs/cgroup"}
	if m, _ := filepath.Glob("/sys/fs/cgroup/*"); len(m) > 0 {
		for _, d := range m {
			if fi, err := os.Stat(d); err == nil && fi.IsDir() {
				roots = append(roots, d)
			}
		}
	}
	return roots
}

// cgroupDirs are the cgroups under the instance's parent, in any
// hierarchy (v2, or each v1 controller).
func (s leakScope) cgroupDirs() []string {
	if s.cgroupParent == "" {
		return nil
	}
	var out []string
	for _, root := range cgroupRoots() {
		base := filepath.Join(root, s.cgroupParent)
		_ = filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return filepath.SkipDir
			}
			if d.IsDir() && p != base {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}

// processes are those whose command line names the instance's directory
// or that live in its cgroups.
func (s leakScope) processes() map[int]string {
	out := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	cgMark := []byte("/" + s.cgroupParent + "/")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		cg, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		line := strings.TrimSpace(string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))
		if (s.dir != "" && strings.Contains(line, s.dir)) || (s.cgroupParent != "" && bytes.Contains(cg, cgMark)) {
			out[pid] = line
		}
	}
	return out
}
