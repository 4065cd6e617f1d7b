package linux

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// initEnv marks a process started as the sandbox init stage. An environment
// variable (rather than argv[0]) survives wrappers that rewrite argv.
const initEnv = "_SKIFF_SANDBOX_INIT"

// initSockFD is the init stage's end of the socketpair to the runtime.
const initSockFD = 3

// initConfig is what the runtime sends the init stage (see encode).
type initConfig struct {
	// UserNS is "user" when the sandbox has a user namespace (the init
	// stage gets it as an fd), "" for none; HostID is the host uid/gid
	// its root maps to.
	UserNS       string
	HostID       uint32
	Rootfs       string   // mount point for the overlay
	Lower        []string // read-only layers, lowest first
	Upper, Work  string
	Mounts       []initMount // done after pivot_root, in order
	ReadOnlyRoot bool
	Args         []string
	Env          []string
	Cwd          string
	UID, GID     uint32
}

// initMount is a bind mount from a host path (or a tmpfs) into the container.
type initMount struct {
	Source   string // host path; "" with Type "tmpfs"
	Dest     string // container path
	Type     string // "bind" or "tmpfs"
	Data     string // tmpfs options
	ReadOnly bool
}

// initMsg is what the init stage reports: Ready once the container is set
// up and waits for "go", or Error when it cannot run.
type initMsg struct {
	Ready bool   `json:",omitempty"`
	Error string `json:",omitempty"`
}

// Limits of the init stage's config, as rootfs.h has them.
const (
	initConfigMagic = "skiff-init-1"
	initConfigMax   = 8 << 20
	initMaxLayers   = 500
	initMaxMounts   = 1024
)

var errNUL = errors.New("argument or environment variable with a NUL byte")

// encode lays the config out for the init stage's C half (rootfs.c): a
// 4-byte big-endian length, then NUL-terminated fields in a fixed order,
// lists preceded by their length:
//
//	magic host_id rootfs upper work read_only_root cwd uid gid
//	nlower lower... nmounts (type source dest data ro)... nargs args... nenv env...
//
// The C side checks every field again; a string with a NUL byte cannot be
// sent and is an error here.
func (c *initConfig) encode() ([]byte, error) {
	b := make([]byte, 4, 4096)
	var bad bool
	str := func(s string) {
		if strings.IndexByte(s, 0) >= 0 {
			bad = true
		}
		b = append(append(b, s...), 0)
	}
	num := func(n uint64) { b = append(strconv.AppendUint(b, n, 10), 0) }
	flag := func(v bool) {
		if v {
			str("1")
		} else {
			str("0")
		}
	}
	if len(c.Lower) > initMaxLayers {
		return nil, fmt.Errorf("%d rootfs layers, at most %d", len(c.Lower), initMaxLayers)
	}
	if len(c.Mounts) > initMaxMounts {
		return nil, fmt.Errorf("%d mounts, at most %d", len(c.Mounts), initMaxMounts)
	}
	str(initConfigMagic)
	num(uint64(c.HostID))
	str(c.Rootfs)
	str(c.Upper)
	str(c.Work)
	flag(c.ReadOnlyRoot)
	str(c.Cwd)
	num(uint64(c.UID))
	num(uint64(c.GID))
	num(uint64(len(c.Lower)))
	for _, l := range c.Lower {
		str(l)
	}
	num(uint64(len(c.Mounts)))
	for _, m := range c.Mounts {
		str(m.Type)
		str(m.Source)
		str(m.Dest)
		str(m.Data)
		flag(m.ReadOnly)
	}
	for _, list := range [][]string{c.Args, c.Env} {
		num(uint64(len(list)))
		for _, s := range list {
			str(s)
		}
	}
	if bad {
		return nil, errNUL
	}
	n := len(b) - 4
	if n > initConfigMax {
		return nil, fmt.Errorf("container config of %d bytes (arguments, environment, mounts), at most %d", n, initConfigMax)
	}
	binary.BigEndian.PutUint32(b, uint32(n))
	return b, nil
}

// Init is kept for binaries that call it first thing, as they had to when
// part of the init stage ran in Go. The init stage (lockdown.c, rootfs.c)
// is now all C constructors that exec the workload or exit before the Go
// runtime starts; if this process is one all the same, say so and exit.
func Init() {
	if os.Getenv(initEnv) == "" {
		return
	}
	_ = json.NewEncoder(os.NewFile(initSockFD, "init")).Encode(initMsg{Error: "sandbox init stage: the C constructor did not run"})
	os.Exit(1)
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
