// Package api holds skiff's public wire types: the container group (pod)
// spec and status, hosts, images, events and errors, as the native REST API
// speaks them. The CLI, the agent, the virtual kubelet and SDK users import
// it; it has no dependency on the rest of skiff.
//
// Field names follow the Kubernetes pod spec wherever the concepts coincide,
// plus ECI's group-level cpu, memory, instanceType, zone and tags.
package api

import "time"

// Status is a container group's lifecycle status, with ECI's names.
type Status string

const (
	StatusPending        Status = "Pending"
	StatusScheduling     Status = "Scheduling"
	StatusScheduleFailed Status = "ScheduleFailed"
	StatusRunning        Status = "Running"
	StatusSucceeded      Status = "Succeeded"
	StatusFailed         Status = "Failed"
	StatusRestarting     Status = "Restarting"
	StatusUpdating       Status = "Updating"
	StatusTerminating    Status = "Terminating"
	StatusExpired        Status = "Expired"
)

// AllStatuses lists every status, in lifecycle order.
var AllStatuses = []Status{
	StatusPending, StatusScheduling, StatusScheduleFailed, StatusRunning,
	StatusSucceeded, StatusFailed, StatusRestarting, StatusUpdating,
	StatusTerminating, StatusExpired,
}

// Terminal reports whether a group in status s will never run again.
func (s Status) Terminal() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusExpired
}

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	for _, v := range AllStatuses {
		if v == s {
			return true
		}
	}
	return false
}

// RestartPolicy is the Kubernetes pod restart policy.
type RestartPolicy string

const (
	RestartAlways    RestartPolicy = "Always"
	RestartOnFailure RestartPolicy = "OnFailure"
	RestartNever     RestartPolicy = "Never"
)

// Group is a container group: what the user asked for and what is.
type Group struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	AccountID   string            `json:"accountId,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	ClientToken string            `json:"clientToken,omitempty"`
	Spec        GroupSpec         `json:"spec"`

	Status   Status `json:"status"`
	Reason   string `json:"reason,omitempty"`
	Message  string `json:"message,omitempty"`
	HostID   string `json:"hostId,omitempty"`
	IP       string `json:"ip,omitempty"`
	HostIP   string `json:"hostIp,omitempty"`
	Deleting bool   `json:"deleting,omitempty"`
	// RestartGeneration is bumped by the restart call; the agent restarts
	// every container when it sees a new value.
	RestartGeneration int64 `json:"restartGeneration,omitempty"`
	// SpecGeneration is bumped by an update that changes what runs
	// (containers, volumes, resources…); the agent rebuilds the group's
	// containers when it sees a new value. AppliedSpecGeneration is the
	// one its host last reported running.
	SpecGeneration        int64 `json:"specGeneration,omitempty"`
	AppliedSpecGeneration int64 `json:"appliedSpecGeneration,omitempty"`

	CreatedAt   time.Time  `json:"createdAt"`
	ScheduledAt *time.Time `json:"scheduledAt,omitempty"`
	// MeterFrom is when the group's current billing interval began, if
	// not at ScheduledAt: an update that changed its shape closed the
	// interval before it (package tenancy).
	MeterFrom *time.Time `json:"meterFrom,omitempty"`
	StartedAt *time.Time `json:"startedAt,omitempty"`
	// SpotReclaimAt is set on a spot group chosen for reclaim: the time
	// its containers are stopped (status Expired, reason SpotReclaimed).
	SpotReclaimAt *time.Time `json:"spotReclaimAt,omitempty"`
	// RunningAt is when the group last became Running.
	RunningAt  *time.Time `json:"runningAt,omitempty"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	UpdatedAt  time.Time  `json:"updatedAt"`

	Containers     []ContainerStatus `json:"containers,omitempty"`
	InitContainers []ContainerStatus `json:"initContainers,omitempty"`

	// Revision is the store's modification revision of this record; it
	// changes on every write and orders watch events.
	Revision int64 `json:"revision,omitempty"`
}

// GroupSpec is what the user asks for. It is immutable after create except
// through an update call.
type GroupSpec struct {
	Containers     []Container `json:"containers"`
	InitContainers []Container `json:"initContainers,omitempty"`
	Volumes        []Volume    `json:"volumes,omitempty"`

	// CPU (vCPU) and Memory (bytes or a quantity such as "512Mi") for the
	// whole group, as ECI has them. When zero, the sum of the containers'.
	CPU          CPU      `json:"cpu,omitempty"`
	Memory       Quantity `json:"memory,omitempty"`
	GPU          int      `json:"gpu,omitempty"`
	InstanceType string   `json:"instanceType,omitempty"`
	Zone         string   `json:"zone,omitempty"`
	// NodeSelector restricts placement to hosts carrying all these labels.
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	Tags         map[string]string `json:"tags,omitempty"`

	RestartPolicy                 RestartPolicy    `json:"restartPolicy,omitempty"`
	TerminationGracePeriodSeconds *int64           `json:"terminationGracePeriodSeconds,omitempty"`
	ActiveDeadlineSeconds         *int64           `json:"activeDeadlineSeconds,omitempty"`
	DNSConfig                     *DNSConfig       `json:"dnsConfig,omitempty"`
	HostAliases                   []HostAlias      `json:"hostAliases,omitempty"`
	Hostname                      string           `json:"hostname,omitempty"`
	SecurityContext               *SecurityContext `json:"securityContext,omitempty"`
	ShareProcessNamespace         bool             `json:"shareProcessNamespace,omitempty"`

	// ImageRegistryCredentials log in to private registries for this
	// group's pulls (ECI's ImageRegistryCredential). API responses carry
	// the server and user name only, never the password.
	ImageRegistryCredentials []ImageRegistryCredential `json:"imageRegistryCredentials,omitempty"`
	// InsecureRegistries (ECI's InsecureRegistry) are registries, HOST[:PORT],
	// whose TLS certificate is not verified; PlainHTTPRegistries (ECI's
	// PlainHttpRegistry) are spoken to over plain HTTP.
	InsecureRegistries  []string `json:"insecureRegistries,omitempty"`
	PlainHTTPRegistries []string `json:"plainHttpRegistries,omitempty"`
	// ImageCacheID pins an image cache; when empty and AutoMatchImageCache
	// is not false, the server fills in a Ready cache of the account that
	// holds every image of the group.
	ImageCacheID        string `json:"imageCacheId,omitempty"`
	AutoMatchImageCache *bool  `json:"autoMatchImageCache,omitempty"`

	// SpotStrategy is ECI's: "" or NoSpot (on demand), SpotAsPriceGo (run
	// at the spot price, whatever it is) or SpotWithPriceLimit (only while
	// the spot price is at most SpotPriceLimit per hour). Spot groups may
	// be reclaimed when on-demand work needs their capacity.
	SpotStrategy   string  `json:"spotStrategy,omitempty"`
	SpotPriceLimit float64 `json:"spotPriceLimit,omitempty"`
}

// Container is one process tree in a group.
type Container struct {
	Name            string               `json:"name"`
	Image           string               `json:"image"`
	ImagePullPolicy string               `json:"imagePullPolicy,omitempty"`
	Command         []string             `json:"command,omitempty"`
	Args            []string             `json:"args,omitempty"`
	WorkingDir      string               `json:"workingDir,omitempty"`
	Env             []EnvVar             `json:"env,omitempty"`
	Ports           []ContainerPort      `json:"ports,omitempty"`
	Resources       ResourceRequirements `json:"resources,omitempty"`
	VolumeMounts    []VolumeMount        `json:"volumeMounts,omitempty"`
	LivenessProbe   *Probe               `json:"livenessProbe,omitempty"`
	ReadinessProbe  *Probe               `json:"readinessProbe,omitempty"`
	StartupProbe    *Probe               `json:"startupProbe,omitempty"`
	Lifecycle       *Lifecycle           `json:"lifecycle,omitempty"`
	SecurityContext *SecurityContext     `json:"securityContext,omitempty"`
	TTY             bool                 `json:"tty,omitempty"`
	Stdin           bool                 `json:"stdin,omitempty"`
	StdinOnce       bool                 `json:"stdinOnce,omitempty"`
}

// EnvVar is one environment variable.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
	// ValueFrom is accepted for Kubernetes compatibility: fieldRef paths of
	// the group itself (metadata.name, status.podIP, ...).
	ValueFrom *EnvVarSource `json:"valueFrom,omitempty"`
}

// EnvVarSource selects a value from the group's own fields.
type EnvVarSource struct {
	FieldRef *FieldRef `json:"fieldRef,omitempty"`
}

// FieldRef names a field of the group, as Kubernetes' ObjectFieldSelector.
type FieldRef struct {
	FieldPath string `json:"fieldPath"`
}

// ContainerPort is a port the container listens on, optionally published
// on the host.
type ContainerPort struct {
	Name          string `json:"name,omitempty"`
	ContainerPort int    `json:"containerPort"`
	HostPort      int    `json:"hostPort,omitempty"`
	Protocol      string `json:"protocol,omitempty"` // TCP (default) or UDP
}

// ResourceRequirements are per-container limits and requests.
type ResourceRequirements struct {
	Limits   ResourceList `json:"limits,omitempty"`
	Requests ResourceList `json:"requests,omitempty"`
}

// ResourceList is an amount of each resource, with Kubernetes' keys.
type ResourceList struct {
	CPU    CPU      `json:"cpu,omitempty"`
	Memory Quantity `json:"memory,omitempty"`
	Pids   int64    `json:"pids,omitempty"`
	GPU    int      `json:"nvidia.com/gpu,omitempty"`
}

// VolumeMount mounts a group volume into a container.
type VolumeMount struct {
	Name      string `json:"name"`
	MountPath string `json:"mountPath"`
	SubPath   string `json:"subPath,omitempty"`
	ReadOnly  bool   `json:"readOnly,omitempty"`
}

// Volume is a group-level volume shared by its containers.
type Volume struct {
	Name       string            `json:"name"`
	EmptyDir   *EmptyDirVolume   `json:"emptyDir,omitempty"`
	ConfigFile *ConfigFileVolume `json:"configFile,omitempty"`
	HostPath   *HostPathVolume   `json:"hostPath,omitempty"`
	NFS        *NFSVolume        `json:"nfs,omitempty"`
}

// EmptyDirVolume is scratch space that lives as long as the group.
type EmptyDirVolume struct {
	Medium    string   `json:"medium,omitempty"` // "" (disk) or "Memory"
	SizeLimit Quantity `json:"sizeLimit,omitempty"`
}

// ConfigFileVolume is a set of files given in the spec.
type ConfigFileVolume struct {
	Items       []ConfigFileItem `json:"items"`
	DefaultMode *int32           `json:"defaultMode,omitempty"`
}

// ConfigFileItem is one file of a ConfigFileVolume.
type ConfigFileItem struct {
	Path    string `json:"path"`
	Content string `json:"content"`
	Mode    *int32 `json:"mode,omitempty"`
}

// HostPathVolume mounts a host directory; admin accounts only.
type HostPathVolume struct {
	Path string `json:"path"`
	Type string `json:"type,omitempty"`
}

// NFSVolume mounts a directory exported by an NFS server (ECI's
// NFSVolume; Kubernetes' nfs volume).
type NFSVolume struct {
	// Server is the server's host name or IP address.
	Server string `json:"server"`
	// Path is the exported directory, or a directory below it.
	Path     string `json:"path"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Probe checks a container's health.
type Probe struct {
	Exec                *ExecAction      `json:"exec,omitempty"`
	HTTPGet             *HTTPGetAction   `json:"httpGet,omitempty"`
	TCPSocket           *TCPSocketAction `json:"tcpSocket,omitempty"`
	InitialDelaySeconds int32            `json:"initialDelaySeconds,omitempty"`
	PeriodSeconds       int32            `json:"periodSeconds,omitempty"`
	TimeoutSeconds      int32            `json:"timeoutSeconds,omitempty"`
	SuccessThreshold    int32            `json:"successThreshold,omitempty"`
	FailureThreshold    int32            `json:"failureThreshold,omitempty"`
}

// ExecAction runs a command in the container.
type ExecAction struct {
	Command []string `json:"command"`
}

// HTTPGetAction makes an HTTP GET against the group's IP.
type HTTPGetAction struct {
	Path   string `json:"path,omitempty"`
	Port   int    `json:"port"`
	Scheme string `json:"scheme,omitempty"`
}

// TCPSocketAction opens a TCP connection to the group's IP.
type TCPSocketAction struct {
	Port int `json:"port"`
}

// Lifecycle holds the container hooks.
type Lifecycle struct {
	PostStart *Handler `json:"postStart,omitempty"`
	PreStop   *Handler `json:"preStop,omitempty"`
}

// Handler is a hook action.
type Handler struct {
	Exec      *ExecAction      `json:"exec,omitempty"`
	HTTPGet   *HTTPGetAction   `json:"httpGet,omitempty"`
	TCPSocket *TCPSocketAction `json:"tcpSocket,omitempty"`
}

// SecurityContext holds per-group or per-container security settings.
type SecurityContext struct {
	RunAsUser              *int64   `json:"runAsUser,omitempty"`
	RunAsGroup             *int64   `json:"runAsGroup,omitempty"`
	ReadOnlyRootFilesystem bool     `json:"readOnlyRootFilesystem,omitempty"`
	Privileged             bool     `json:"privileged,omitempty"`
	Sysctls                []Sysctl `json:"sysctls,omitempty"`
}

// Sysctl is a namespaced kernel parameter.
type Sysctl struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// DNSConfig is written into the group's resolv.conf.
type DNSConfig struct {
	Nameservers []string    `json:"nameservers,omitempty"`
	Searches    []string    `json:"searches,omitempty"`
	Options     []DNSOption `json:"options,omitempty"`
}

// DNSOption is one resolv.conf option.
type DNSOption struct {
	Name  string  `json:"name"`
	Value *string `json:"value,omitempty"`
}

// HostAlias adds lines to the group's /etc/hosts.
type HostAlias struct {
	IP        string   `json:"ip"`
	Hostnames []string `json:"hostnames"`
}

// ContainerState is a container's coarse state.
type ContainerState string

const (
	ContainerWaiting    ContainerState = "Waiting"
	ContainerRunning    ContainerState = "Running"
	ContainerTerminated ContainerState = "Terminated"
)

// ContainerStatus is what is known of one container.
type ContainerStatus struct {
	Name         string         `json:"name"`
	Image        string         `json:"image,omitempty"`
	ImageID      string         `json:"imageId,omitempty"`
	State        ContainerState `json:"state"`
	Ready        bool           `json:"ready"`
	RestartCount int            `json:"restartCount"`
	ExitCode     *int           `json:"exitCode,omitempty"`
	Signal       int            `json:"signal,omitempty"`
	Reason       string         `json:"reason,omitempty"`
	Message      string         `json:"message,omitempty"`
	PID          int            `json:"pid,omitempty"`
	StartedAt    *time.Time     `json:"startedAt,omitempty"`
	FinishedAt   *time.Time     `json:"finishedAt,omitempty"`
	// LastState is the previous instance's end, as Kubernetes keeps it.
	LastState *ContainerStatus `json:"lastState,omitempty"`
}

// Event is something that happened to a group, as Kubernetes events.
type Event struct {
	GroupID   string    `json:"groupId"`
	Type      string    `json:"type"` // Normal or Warning
	Reason    string    `json:"reason"`
	Message   string    `json:"message"`
	Container string    `json:"container,omitempty"`
	HostID    string    `json:"hostId,omitempty"`
	Time      time.Time `json:"time"`
	Count     int       `json:"count,omitempty"`
}

// HostState is a host's readiness.
type HostState string

const (
	HostReady    HostState = "Ready"
	HostNotReady HostState = "NotReady"
)

// Resources is a bundle of schedulable capacity.
type Resources struct {
	MilliCPU int64 `json:"milliCpu"`
	Memory   int64 `json:"memory"`
	GPU      int   `json:"gpu,omitempty"`
	Groups   int   `json:"groups,omitempty"`
}

// Host is one machine running a skiff agent.
type Host struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	Address   string            `json:"address,omitempty"`
	Zone      string            `json:"zone,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	State     HostState         `json:"state"`
	Capacity  Resources         `json:"capacity"`
	Allocated Resources         `json:"allocated"`
	PodCIDR   string            `json:"podCidr,omitempty"`
	Runtime   string            `json:"runtime,omitempty"`
	// Server is the API address of the server replica the agent is
	// connected to; other replicas forward host-bound calls there.
	Server        string    `json:"server,omitempty"`
	Version       string    `json:"version,omitempty"`
	JoinedAt      time.Time `json:"joinedAt"`
	LastHeartbeat time.Time `json:"lastHeartbeat"`
	Revision      int64     `json:"revision,omitempty"`
	// Pool is the host's warm pool per shape class (pool.go), as its agent
	// last reported it, with the targets the control plane set.
	Pool *HostPool `json:"pool,omitempty"`
}

// Image is an image present in a host's store.
type Image struct {
	Ref       string    `json:"ref"`
	Digest    string    `json:"digest"`
	Size      int64     `json:"size"`
	Layers    int       `json:"layers"`
	Hosts     []string  `json:"hosts,omitempty"`
	CreatedAt time.Time `json:"createdAt,omitempty"`
}

// List is a page of results. NextToken is empty on the last page.
type List[T any] struct {
	Items     []T    `json:"items"`
	NextToken string `json:"nextToken,omitempty"`
	Total     int    `json:"total"`
}

// ExecRequest runs a command in a container once.
type ExecRequest struct {
	Container string   `json:"container,omitempty"`
	Command   []string `json:"command"`
	Stdin     string   `json:"stdin,omitempty"`
	// TimeoutSeconds bounds the run; 0 means 60 s.
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
}

// ExecResult is the outcome of a one-shot exec.
type ExecResult struct {
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exitCode"`
}

// Metrics is a point-in-time resource reading of a group.
type Metrics struct {
	GroupID    string             `json:"groupId"`
	Time       time.Time          `json:"time"`
	CPUNanos   uint64             `json:"cpuUsageNanoseconds"`
	MemoryUsed uint64             `json:"memoryUsageBytes"`
	MemoryRSS  uint64             `json:"memoryRssBytes,omitempty"`
	Pids       uint64             `json:"pids"`
	RxBytes    uint64             `json:"networkRxBytes"`
	TxBytes    uint64             `json:"networkTxBytes"`
	Containers []ContainerMetrics `json:"containers,omitempty"`
}

// ContainerMetrics is one container's share of Metrics.
type ContainerMetrics struct {
	Name       string `json:"name"`
	CPUNanos   uint64 `json:"cpuUsageNanoseconds"`
	MemoryUsed uint64 `json:"memoryUsageBytes"`
	Pids       uint64 `json:"pids"`
}

// WatchEvent is one line of the watch stream.
type WatchEvent struct {
	Type  string `json:"type"` // ADDED, MODIFIED, DELETED
	Group *Group `json:"group"`
}

// Error is the body of every non-2xx response.
type Error struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"requestId"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// ClientConfig is what the CLI reads from ~/.skiff/config.json.
type ClientConfig struct {
	Endpoint        string `json:"endpoint"`
	AccessKeyID     string `json:"accessKeyId"`
	AccessKeySecret string `json:"accessKeySecret"`
}

// CreateGroupRequest is the body of POST /v1/groups. A repeated create with
// the same ClientToken returns the group the first one made.
type CreateGroupRequest struct {
	Name        string            `json:"name,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	ClientToken string            `json:"clientToken,omitempty"`
	Spec        GroupSpec         `json:"spec"`
}

// ImportResult is the body returned by POST /v1/images/import.
type ImportResult struct {
	Images []Image          `json:"images"`
	Hosts  []HostImportStat `json:"hosts"`
}

// HostImportStat says how an import went on one host.
type HostImportStat struct {
	HostID string `json:"hostId"`
	Error  string `json:"error,omitempty"`
}

// Interactive exec over WebSocket (GET /v1/groups/{id}/exec/ws). Every
// binary message starts with one channel byte; the rest is payload.
const (
	ExecChannelStdin  byte = 0 // client → server: bytes for the process
	ExecChannelStdout byte = 1 // server → client
	ExecChannelStderr byte = 2 // server → client (without a TTY)
	ExecChannelExit   byte = 3 // server → client: JSON ExecExit, then close
	ExecChannelResize byte = 4 // client → server: JSON TermSize
	ExecChannelClose  byte = 5 // client → server: stdin reached EOF
)

// ExecExit ends an interactive exec.
type ExecExit struct {
	ExitCode int    `json:"exitCode"`
	Error    string `json:"error,omitempty"`
}

// TermSize is a terminal size for exec resize messages.
type TermSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}
