package linux

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// On disk, under Config.StateDir:
//
//	pins/, pins/mnt                        the pin namespace (pinns.go)
//	sandboxes/<key>/sandbox.json           sandboxState
//	sandboxes/<key>/ns/{net,ipc,uts,user}  pins of an earlier version, in
//	                                       the host mount namespace
//	sandboxes/<key>/etc/{hosts,...}        generated files, bind-mounted
//	sandboxes/<key>/volumes/<name>/        emptyDir, memory (tmpfs), files
//	sandboxes/<key>/containers/<name>/
//	    state.json                        containerState
//	    fs/{upper,work,root}              the writable layer of the instance
//	    current.log, current.idx          log of the instance and its index
//	    previous.log, previous.idx        the instance before
//	    attach.sock                       the stdio relay's socket (TTY/Stdin only)
//
// <key> names a sandbox's resources: its directory, cgroup, pins, network
// attachment and ID range. It is the group's ID for a sandbox built for
// its group, and "_p<random>" for one built ahead of demand (see pool.go),
// which keeps its key when a group claims it: Config.ID says whose it is.
// A key of the pool cannot be a group ID (those start with a letter or
// digit).
type sandboxState struct {
	Config    sandbox.SandboxConfig
	IP        string
	CreatedAt time.Time
	// HostID is the first host uid/gid of the sandbox's user namespace
	// (0: none).
	HostID uint32
	// PausePID and PauseTicks identify the pid 1 of a shared pid
	// namespace (SandboxConfig.SharePID).
	PausePID   int    `json:",omitempty"`
	PauseTicks uint64 `json:",omitempty"`
	// Complete is set once CreateSandbox finished; a sandbox found without
	// it was cut off half-way and is removed on recovery (unless it is a
	// prepared one, waiting in the pool).
	Complete bool
	// Pool is the class of a sandbox built ahead of demand, "" for one
	// built for its group. Prepared is set once PrepareSandbox finished:
	// with no Config.ID, the sandbox waits in the pool; with one, it was
	// being claimed, and Complete says whether that finished.
	Pool     string `json:",omitempty"`
	Prepared bool   `json:",omitempty"`
}

type containerState struct {
	Name     string
	Instance int
	PID      int
	// StartTicks is the process's start time (/proc/pid/stat field 22),
	// which tells our process from another one that reused its pid.
	StartTicks uint64
	StartedAt  time.Time
	Running    bool
	UID, GID   uint32
	Env        []string // for Exec
	// TTY and Stdin are the container's stdio modes; RelayPID and
	// RelayTicks identify its stdio relay (relay.c), which only such
	// containers have.
	TTY        bool   `json:",omitempty"`
	Stdin      bool   `json:",omitempty"`
	RelayPID   int    `json:",omitempty"`
	RelayTicks uint64 `json:",omitempty"`
	Exit       *sandbox.ExitEvent
}

// writeJSON replaces path atomically (temp file + rename). No fsync: after
// a host crash, sandboxes are gone anyway; after an agent crash the page
// cache has the data.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// procStartTicks reads the start time of pid from /proc/pid/stat, and
// whether it has exited (a zombie).
func procStartTicks(pid int) (ticks uint64, exited bool, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false, err
	}
	// comm may contain spaces and parentheses: fields start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, false, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	ticks, err = strconv.ParseUint(f[19], 10, 64)
	return ticks, f[0] == "Z" || f[0] == "X", err
}

func sandboxDir(stateDir, id string) string {
	return filepath.Join(stateDir, "sandboxes", id)
}
