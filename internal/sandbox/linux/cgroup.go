package linux

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroups manages the runtime's cgroup tree: <parent>/<sandbox>/<container>,
// either in the unified (v2) hierarchy or in the v1 cpu, cpuacct, memory and
// pids hierarchies (cpu and cpuacct may be one co-mounted hierarchy).
type cgroups struct {
	v2     bool
	root   string // v2: /sys/fs/cgroup
	parent string // relative, e.g. "skiff"
	// v1: the hierarchy mount of each controller we use.
	cpu, cpuacct, memory, pids string
}

const cfsPeriod = 100000 // µs

func newCgroups(mountRoot, parent string) (*cgroups, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(mountRoot, &st); err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	cg := &cgroups{root: mountRoot, parent: parent}
	if isUnified(mountRoot, st.Type) {
		cg.v2 = true
		// Controllers must be enabled on every level above the leaves.
		if err := cg.enableControllers(mountRoot); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Join(mountRoot, parent), 0o755); err != nil {
			return nil, fmt.Errorf("cgroups: %w", err)
		}
		if err := cg.enableControllers(filepath.Join(mountRoot, parent)); err != nil {
			return nil, err
		}
		return cg, nil
	}
	// v1 (or hybrid: the v2 mount is ignored). cpu and cpuacct may be the
	// same hierarchy through symlinks; resolve so we touch each once.
	for _, c := range []struct {
		name string
		dst  *string
	}{{"cpu", &cg.cpu}, {"cpuacct", &cg.cpuacct}, {"memory", &cg.memory}, {"pids", &cg.pids}} {
		p, err := filepath.EvalSymlinks(filepath.Join(mountRoot, c.name))
		if err != nil {
			return nil, fmt.Errorf("cgroups: v1 controller %s: %w", c.name, err)
		}
		*c.dst = p
		if err := os.MkdirAll(filepath.Join(p, parent), 0o755); err != nil {
			return nil, fmt.Errorf("cgroups: %w", err)
		}
	}
	return cg, nil
}

// isUnified tells the unified (v2) hierarchy: a cgroup2 mount, or (for
// tests over a plain directory) a root that is no v1 controller's mount
// yet has the v2 root's cgroup.controllers. A hybrid host's
// /sys/fs/cgroup is a tmpfs without that file: v1.
func isUnified(root string, fsType int64) bool {
	if fsType == unix.CGROUP2_SUPER_MAGIC {
		return true
	}
	if fsType == unix.CGROUP_SUPER_MAGIC {
		return false
	}
	_, err := os.Stat(filepath.Join(root, "cgroup.controllers"))
	return err == nil
}

// enableControllers enables cpu, memory and pids (those available) for
// the children of dir, in one write.
func (cg *cgroups) enableControllers(dir string) error {
	avail, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("cgroups: %w", err)
	}
	var enable []string
	for _, c := range []string{"cpu", "memory", "pids"} {
		for _, h := range strings.Fields(string(avail)) {
			if h == c {
				enable = append(enable, "+"+c)
			}
		}
	}
	if len(enable) == 0 {
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0); err != nil {
		return fmt.Errorf("cgroups: enable %v in %s: %w", enable, dir, err)
	}
	return nil
}

// dirs lists the directories of a cgroup (one per hierarchy).
func (cg *cgroups) dirs(rel string) []string {
	rel = filepath.Join(cg.parent, rel)
	if cg.v2 {
		return []string{filepath.Join(cg.root, rel)}
	}
	ds := []string{filepath.Join(cg.cpu, rel)}
	if cg.cpuacct != cg.cpu {
		ds = append(ds, filepath.Join(cg.cpuacct, rel))
	}
	return append(ds, filepath.Join(cg.memory, rel), filepath.Join(cg.pids, rel))
}

// procsFiles are the cgroup.procs files a process writes to join rel.
func (cg *cgroups) procsFiles(rel string) []string {
	ds := cg.dirs(rel)
	for i := range ds {
		ds[i] = filepath.Join(ds[i], "cgroup.procs")
	}
	return ds
}

// selfJoinFiles are the files a single-threaded process writes "0" to in
// order to join rel itself. In v1 that is "tasks": moving just the
// calling thread skips the global threadgroup lock, whose write side
// waits for an RCU grace period (milliseconds) when taken through
// cgroup.procs. v2 has no such file for domain cgroups: cgroup.procs.
func (cg *cgroups) selfJoinFiles(rel string) []string {
	if cg.v2 {
		return cg.procsFiles(rel)
	}
	ds := cg.dirs(rel)
	for i := range ds {
		ds[i] = filepath.Join(ds[i], "tasks")
	}
	return ds
}

// create makes the cgroup rel with the given limits (0: none).
func (cg *cgroups) create(rel string, milliCPU, memory, pids int64, leafParent bool) error {
	for _, d := range cg.dirs(rel) {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cgroup %s: %w", rel, err)
		}
	}
	if cg.v2 && leafParent {
		if err := cg.enableControllers(cg.dirs(rel)[0]); err != nil {
			return err
		}
	}
	return cg.setLimits(rel, milliCPU, memory, pids)
}

func (cg *cgroups) setLimits(rel string, milliCPU, memory, pids int64) error {
	rel = filepath.Join(cg.parent, rel)
	var writes [][2]string
	if cg.v2 {
		d := filepath.Join(cg.root, rel)
		if milliCPU > 0 {
			writes = append(writes,
				[2]string{filepath.Join(d, "cpu.max"), fmt.Sprintf("%d %d", cfsQuota(milliCPU), cfsPeriod)},
				// Same share of a contended CPU as v1's cpu.shares.
				[2]string{filepath.Join(d, "cpu.weight"), strconv.FormatInt(weight(milliCPU), 10)})
		}
		if memory > 0 {
			writes = append(writes, [2]string{filepath.Join(d, "memory.max"), strconv.FormatInt(memory, 10)},
				// The container's pages are its own: no swapping around the limit.
				[2]string{filepath.Join(d, "memory.swap.max"), "0"})
		}
		if pids > 0 {
			writes = append(writes, [2]string{filepath.Join(d, "pids.max"), strconv.FormatInt(pids, 10)})
		}
	} else {
		if milliCPU > 0 {
			d := filepath.Join(cg.cpu, rel)
			writes = append(writes,
				[2]string{filepath.Join(d, "cpu.cfs_period_us"), strconv.Itoa(cfsPeriod)},
				[2]string{filepath.Join(d, "cpu.cfs_quota_us"), strconv.FormatInt(cfsQuota(milliCPU), 10)},
				[2]string{filepath.Join(d, "cpu.shares"), strconv.FormatInt(shares(milliCPU), 10)})
		}
		if memory > 0 {
			writes = append(writes, [2]string{filepath.Join(cg.memory, rel, "memory.limit_in_bytes"), strconv.FormatInt(memory, 10)})
		}
		if pids > 0 {
			writes = append(writes, [2]string{filepath.Join(cg.pids, rel, "pids.max"), strconv.FormatInt(pids, 10)})
		}
	}
	for _, w := range writes {
		if err := os.WriteFile(w[0], []byte(w[1]), 0); err != nil {
			// memory.swap.max is missing without swap accounting: fine.
			if errors.Is(err, os.ErrNotExist) && strings.HasSuffix(w[0], "swap.max") {
				continue
			}
			return fmt.Errorf("cgroup limit %s: %w", w[0], err)
		}
	}
	return nil
}

// rewriteLimits sets all three limits of rel, 0 meaning none (which
// setLimits leaves alone): a prepared sandbox claimed by a group of
// another shape.
func (cg *cgroups) rewriteLimits(rel string, milliCPU, memory, pids int64) error {
	if err := cg.setLimits(rel, milliCPU, memory, pids); err != nil {
		return err
	}
	full := filepath.Join(cg.parent, rel)
	var writes [][2]string
	if cg.v2 {
		d := filepath.Join(cg.root, full)
		if milliCPU == 0 {
			writes = append(writes, [2]string{filepath.Join(d, "cpu.max"), "max"}, [2]string{filepath.Join(d, "cpu.weight"), "100"})
		}
		if memory == 0 {
			writes = append(writes, [2]string{filepath.Join(d, "memory.max"), "max"}, [2]string{filepath.Join(d, "memory.swap.max"), "max"})
		}
		if pids == 0 {
			writes = append(writes, [2]string{filepath.Join(d, "pids.max"), "max"})
		}
	} else {
		if milliCPU == 0 {
			d := filepath.Join(cg.cpu, full)
			writes = append(writes, [2]string{filepath.Join(d, "cpu.cfs_quota_us"), "-1"}, [2]string{filepath.Join(d, "cpu.shares"), "1024"})
		}
		if memory == 0 {
			writes = append(writes, [2]string{filepath.Join(cg.memory, full, "memory.limit_in_bytes"), "-1"})
		}
		if pids == 0 {
			writes = append(writes, [2]string{filepath.Join(cg.pids, full, "pids.max"), "max"})
		}
	}
	for _, w := range writes {
		if err := os.WriteFile(w[0], []byte(w[1]), 0); err != nil {
			if errors.Is(err, os.ErrNotExist) && strings.HasSuffix(w[0], "swap.max") {
				continue // no swap accounting
			}
			return fmt.Errorf("cgroup limit %s: %w", w[0], err)
		}
	}
	return nil
}

func cfsQuota(milliCPU int64) int64 { return max(milliCPU*cfsPeriod/1000, 1000) }
func shares(milliCPU int64) int64   { return max(milliCPU*1024/1000, 2) }
func weight(milliCPU int64) int64 {
	// The mapping systemd and runc use from shares [2, 262144] to weight [1, 10000].
	return min(max(1+((shares(milliCPU)-2)*9999)/262142, 1), 10000)
}

// addProc moves pid into rel.
func (cg *cgroups) addProc(rel string, pid int) error {
	s := []byte(strconv.Itoa(pid))
	for _, f := range cg.procsFiles(rel) {
		if err := os.WriteFile(f, s, 0); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	return nil
}

// remove kills whatever is left in rel and its children, then removes them.
// Children are given as relative names (rel/child).
func (cg *cgroups) remove(rel string, children []string) error {
	var errs []error
	for _, c := range children {
		errs = append(errs, cg.removeOne(filepath.Join(rel, c)))
	}
	errs = append(errs, cg.removeOne(rel))
	return errors.Join(errs...)
}

func (cg *cgroups) removeOne(rel string) error {
	var errs []error
	for _, d := range cg.dirs(rel) {
		if err := removeCgroupDir(d, cg.v2); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func removeCgroupDir(d string, v2 bool) error {
	// A cgroup whose last process just died may stay busy for a moment.
	deadline := time.Now().Add(5 * time.Second)
	for attempt := 0; ; attempt++ {
		err := unix.Rmdir(d)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", d, err)
		}
		// Kill leftovers: cgroup.kill where the kernel has it, else one by one.
		if !v2 || os.WriteFile(filepath.Join(d, "cgroup.kill"), []byte("1"), 0) != nil {
			for _, pid := range readPids(filepath.Join(d, "cgroup.procs")) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(time.Duration(min(attempt+1, 20)) * time.Millisecond)
	}
}

func readPids(path string) []int {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

// kill sends SIGKILL to every process in rel (one pass).
func (cg *cgroups) kill(rel string) {
	for _, d := range cg.dirs(rel) {
		if cg.v2 && os.WriteFile(filepath.Join(d, "cgroup.kill"), []byte("1"), 0) == nil {
			return
		}
		for _, pid := range readPids(filepath.Join(d, "cgroup.procs")) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		return // v1: every hierarchy holds the same processes
	}
}

// oomKills is how many processes the kernel's OOM killer killed in rel.
func (cg *cgroups) oomKills(rel string) uint64 {
	var f string
	if cg.v2 {
		f = filepath.Join(cg.root, cg.parent, rel, "memory.events")
	} else {
		f = filepath.Join(cg.memory, cg.parent, rel, "memory.oom_control")
	}
	return keyedValue(f, "oom_kill")
}

// usage reads CPU time (ns), memory in use (bytes) and pids of rel.
func (cg *cgroups) usage(rel string) (cpu, mem, pids uint64) {
	rel = filepath.Join(cg.parent, rel)
	if cg.v2 {
		d := filepath.Join(cg.root, rel)
		cpu = keyedValue(filepath.Join(d, "cpu.stat"), "usage_usec") * 1000
		mem = singleValue(filepath.Join(d, "memory.current"))
		pids = singleValue(filepath.Join(d, "pids.current"))
		return
	}
	cpu = singleValue(filepath.Join(cg.cpuacct, rel, "cpuacct.usage"))
	mem = singleValue(filepath.Join(cg.memory, rel, "memory.usage_in_bytes"))
	pids = singleValue(filepath.Join(cg.pids, rel, "pids.current"))
	return
}

func singleValue(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64)
	return v
}

// keyedValue reads "key value" lines (memory.events, cpu.stat, ...).
func keyedValue(path, key string) uint64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), " ")
		if ok && k == key {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}
