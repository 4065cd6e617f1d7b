// Package sandbox defines the runtime interface through which a host agent
// runs container groups, and the types that cross it. Implementations live in
// sub-packages: linux (real namespaces, cgroups and overlayfs) and sim (no
// processes, for control-plane scale tests). One conformance suite in
// sandboxtest runs against every implementation.
//
// A sandbox is the group-level part of a container group: its network, IPC
// and UTS namespaces, its cgroup, its IP and its volumes. Containers are
// started into a sandbox one by one. Preparing the sandbox is separate from
// starting workloads in it so that sandboxes can be built ahead of demand.
package sandbox

import (
	"context"
	"errors"
	"io"
	"time"
)

// Error classes. Implementations wrap them with %w.
var (
	ErrNotFound    = errors.New("not found")
	ErrExists      = errors.New("already exists")
	ErrInvalid     = errors.New("invalid")
	ErrCannotRun   = errors.New("container cannot run")
	ErrNotRunning  = errors.New("container is not running")
	ErrUnavailable = errors.New("unavailable")
)

// Runtime runs sandboxes and their containers on one host. All methods are
// safe for concurrent use. A Runtime keeps its own durable state: a new
// Runtime over the same state directory finds every sandbox and container
// that survived the previous one (see Recover).
type Runtime interface {
	// Name is the runtime class: "linux", "sim".
	Name() string

	// CreateSandbox builds a sandbox: namespaces, cgroup, IP, volumes.
	// It is idempotent for the same ID.
	CreateSandbox(ctx context.Context, cfg SandboxConfig) (*SandboxInfo, error)

	// StartContainer starts one container in a sandbox and returns once its
	// workload process runs (or failed to start: ErrCannotRun with a reason).
	// A container name may be started again after it exited; the previous
	// instance's log is kept as "previous".
	StartContainer(ctx context.Context, sandboxID string, cfg ContainerConfig) (*ContainerInfo, error)

	// StopContainer sends SIGTERM, waits up to grace, then SIGKILLs, and
	// returns when the container's processes are gone.
	StopContainer(ctx context.Context, sandboxID, name string, grace time.Duration) error

	// RemoveSandbox stops whatever still runs and removes every trace of the
	// sandbox: processes, mounts, namespaces, cgroups, veths, IP, files.
	// Removing a missing sandbox is not an error.
	RemoveSandbox(ctx context.Context, sandboxID string) error

	// Exec runs a command inside a running container, joining its
	// namespaces and cgroup, and returns its exit code.
	Exec(ctx context.Context, sandboxID, name string, cfg ExecConfig) (int, error)

	// Logs opens a container's log: its current instance, or the previous
	// one (see LogOptions).
	Logs(ctx context.Context, sandboxID, name string, opts LogOptions) (io.ReadCloser, error)

	// Stats reads a sandbox's resource use.
	Stats(ctx context.Context, sandboxID string) (*Stats, error)

	// Recover returns every sandbox the runtime knows of, with the state of
	// each container as it is now. Containers that ended while nobody was
	// watching are reported as exited (their exit code may be unknown).
	Recover(ctx context.Context) ([]SandboxState, error)

	// Exits delivers one event per container exit, for the runtime's life.
	Exits() <-chan ExitEvent

	// Close releases the runtime's resources without touching sandboxes.
	Close() error
}

// SandboxConfig describes a sandbox.
type SandboxConfig struct {
	ID       string
	Hostname string
	// MilliCPU and Memory are the group's limits (0: unlimited).
	MilliCPU int64
	Memory   int64
	Pids     int64
	// DNS and hosts file contents.
	Nameservers []string
	Searches    []string
	Options     []string
	HostAliases map[string][]string // ip -> names
	Volumes     []VolumeConfig
	// Ports are published on the host: HostPort → the group's ContainerPort.
	Ports  []Port
	Labels map[string]string
	// SharePID puts the group's containers into one pid namespace, where
	// they see and may signal each other's processes (Kubernetes'
	// shareProcessNamespace). Its pid 1 is a small idle reaper.
	SharePID bool
	// PoolClass, with a runtime that implements Pool, lets CreateSandbox
	// take a prepared sandbox of that class (any class when none of it is
	// left) instead of building one. "" never takes from the pool.
	PoolClass string
}

// Port is a published port.
type Port struct {
	HostPort      int
	ContainerPort int
	Protocol      string // "tcp" (default) or "udp"
	HostIP        string // "" for every host address
}

// VolumeConfig is a group volume as the runtime makes it.
type VolumeConfig struct {
	Name string
	// Kind is "emptyDir", "memory", "files", "hostPath" or "nfs".
	Kind      string
	SizeLimit int64
	Files     []File
	HostPath  string
	NFS       *NFSVolume `json:",omitempty"`
}

// NFSVolume is the export an "nfs" volume mounts.
type NFSVolume struct {
	Server   string // host name or IP address
	Path     string // exported directory
	ReadOnly bool
}

// File is one file of a files volume.
type File struct {
	Path    string
	Content []byte
	Mode    uint32
}

// SandboxInfo is what CreateSandbox returns.
type SandboxInfo struct {
	ID string
	IP string
	// FromPool is set when the sandbox was a prepared one (a pool hit).
	FromPool bool
}

// Pool is implemented by runtimes that can build sandboxes ahead of demand
// (the warm pool). A prepared sandbox has everything that does not depend
// on the group: its namespaces (net, ipc, uts, user), its cgroup with the
// class's limits, its IP and veth. CreateSandbox with a PoolClass takes one
// and finishes it with the group's hostname, limits, volumes, DNS and
// hosts files and published ports; to the caller the result is the same
// as a sandbox built from scratch.
//
// Prepared sandboxes are durable like any other: a new Runtime over the
// same state finds them again (they are in PoolStats, not in Recover), and
// DrainPool removes them without a trace. Each prepared sandbox goes to
// exactly one claim or one DrainPool, however they race; one cut off
// half-way by a crash is removed by the next Runtime.
type Pool interface {
	// PrepareSandbox builds one prepared sandbox of class. It lets group
	// work in flight go first (briefly), so a refill does not slow
	// creates and starts.
	PrepareSandbox(ctx context.Context, class PoolClass) error
	// DrainPool removes up to n prepared sandboxes of class (n < 0: all)
	// and returns how many it removed. An empty class name means every
	// class.
	DrainPool(ctx context.Context, class string, n int) (int, error)
	// PoolStats returns the number of prepared sandboxes per class.
	PoolStats() map[string]int
}

// PoolClass is a shape class of prepared sandboxes: the cgroup limits they
// are built with. A claim rewrites the limits when the group's differ.
type PoolClass struct {
	Name     string
	MilliCPU int64
	Memory   int64
}

// ContainerConfig describes one container to start.
type ContainerConfig struct {
	Name string
	// RootfsLayers are read-only directories, lowest first, stacked under a
	// private writable layer with overlayfs.
	RootfsLayers []string
	Args         []string // argv, resolved by the caller (entrypoint+cmd)
	Env          []string
	WorkingDir   string
	UID, GID     uint32
	TTY          bool
	Stdin        bool
	ReadOnlyRoot bool
	MilliCPU     int64
	Memory       int64
	Pids         int64
	Mounts       []Mount
}

// Mount attaches a sandbox volume inside a container.
type Mount struct {
	Volume      string
	Destination string
	SubPath     string
	ReadOnly    bool
}

// ContainerInfo is a started container.
type ContainerInfo struct {
	Name      string
	PID       int
	StartedAt time.Time
}

// ExitEvent reports that a container's workload ended.
type ExitEvent struct {
	SandboxID string
	Name      string
	PID       int
	// ExitCode is the process's exit code, 128+signal when killed by a
	// signal, or -1 when the runtime could not observe it.
	ExitCode   int
	Signal     int
	OOMKilled  bool
	FinishedAt time.Time
	Message    string
}

// ExecConfig is a command run in a container.
type ExecConfig struct {
	Args   []string
	Env    []string
	TTY    bool
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer // ignored with TTY
	// Resize delivers terminal sizes with TTY.
	Resize <-chan TermSize
}

// Attacher is implemented by runtimes that can attach to the stdio of a
// running container started with TTY or Stdin (Kubernetes' attach).
type Attacher interface {
	// Attach copies cfg.Stdin to the container's stdin or terminal and its
	// output (stdout and stderr merged) to cfg.Stdout, until the container
	// ends (nil), ctx is done, or the attachment is taken over by another
	// one. The output also goes on to the container's log as usual.
	// A container started without TTY or Stdin: ErrInvalid.
	Attach(ctx context.Context, sandboxID, name string, cfg AttachConfig) error
}

// AttachConfig is what Attach connects to a container.
type AttachConfig struct {
	Stdin  io.Reader
	Stdout io.Writer
	// Resize delivers terminal sizes (TTY containers).
	Resize <-chan TermSize
}

// TermSize is a terminal size.
type TermSize struct{ Rows, Cols uint16 }

// LogOptions selects part of a log. Logs returns plain text, one line per
// line the container wrote (stdout and stderr merged), optionally prefixed
// with the RFC 3339 time the runtime first saw it.
type LogOptions struct {
	Previous bool
	Follow   bool
	Tail     int // lines from the end; <0 all
	Since    time.Time
	// Timestamps prefixes each line with its RFC 3339 time.
	Timestamps bool
}

// Stats is a sandbox's resource use.
type Stats struct {
	Time       time.Time
	CPUNanos   uint64
	MemoryUsed uint64
	Pids       uint64
	RxBytes    uint64
	TxBytes    uint64
	Containers map[string]ContainerStats
}

// ContainerStats is one container's resource use.
type ContainerStats struct {
	CPUNanos   uint64
	MemoryUsed uint64
	Pids       uint64
}

// SandboxState is a sandbox as Recover finds it.
type SandboxState struct {
	ID         string
	IP         string
	Containers []ContainerState
}

// ContainerState is a container as Recover finds it.
type ContainerState struct {
	Name      string
	PID       int
	Running   bool
	StartedAt time.Time
	// Exit is set when the container ended.
	Exit *ExitEvent
}
