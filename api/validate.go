package api

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
)

// Limits on what one group may ask for. They keep absurd input from
// reaching the scheduler or a host.
const (
	MaxContainers      = 20
	MaxInitContainers  = 10
	MaxVolumes         = 50
	MaxEnv             = 500
	MaxArgs            = 1000
	MaxArgBytes        = 128 << 10
	MaxConfigFileBytes = 1 << 20
	MaxMilliCPU        = 64000     // 64 vCPU per group
	MaxMemory          = 512 << 30 // 512 GiB per group
	MinMemory          = 4 << 20   // below this a container cannot start
	MaxLabels          = 64
	MaxGPU             = 16
	MaxGracePeriod     = 3600
)

var (
	dnsLabel        = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	labelKey        = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)
	envName         = regexp.MustCompile(`^[-._a-zA-Z][-._a-zA-Z0-9]*$`)
	digestRe        = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
	tagRe           = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	hostRe          = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$`)
	pathComponentRe = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$`)
)

// ValidationError lists every problem found in a request.
type ValidationError struct{ Problems []string }

func (e *ValidationError) Error() string {
	if len(e.Problems) == 1 {
		return e.Problems[0]
	}
	return strings.Join(e.Problems, "; ")
}

type checker struct{ problems []string }

func (c *checker) addf(format string, args ...any) {
	if len(c.problems) < 20 {
		c.problems = append(c.problems, fmt.Sprintf(format, args...))
	}
}

func (c *checker) err() error {
	if len(c.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: c.problems}
}

// ValidateName checks a group or container name: a DNS label.
func ValidateName(name string) error {
	if !dnsLabel.MatchString(name) {
		return fmt.Errorf("name %q must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// ValidateImageRef checks the shape of an image reference:
// [host[:port]/]path[:tag][@sha256:hex].
func ValidateImageRef(ref string) error {
	if ref == "" {
		return errors.New("image is required")
	}
	bad := fmt.Errorf("image %q is not a valid reference (want e.g. busybox, busybox:1.36 or registry:5000/team/app@sha256:...)", ref)
	if len(ref) > 512 {
		return bad
	}
	rest := ref
	if i := strings.Index(rest, "@"); i >= 0 {
		if !digestRe.MatchString(rest[i+1:]) {
			return bad
		}
		rest = rest[:i]
	}
	if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") {
		if !tagRe.MatchString(rest[i+1:]) {
			return bad
		}
		rest = rest[:i]
	}
	parts := strings.Split(rest, "/")
	if len(parts) > 1 && (strings.ContainsAny(parts[0], ".:") || parts[0] == "localhost") {
		if !hostRe.MatchString(parts[0]) {
			return bad
		}
		parts = parts[1:]
	}
	for _, p := range parts {
		if !pathComponentRe.MatchString(p) {
			return bad
		}
	}
	return nil
}

// Validate checks a create request and fills defaults in place.
func (r *CreateGroupRequest) Validate() error {
	c := &checker{}
	if r.Name != "" {
		if err := ValidateName(r.Name); err != nil {
			c.addf("%v", err)
		}
	}
	if len(r.ClientToken) > 64 {
		c.addf("clientToken must be at most 64 characters")
	}
	validateLabels(c, "labels", r.Labels)
	r.Spec.validate(c)
	return c.err()
}

func validateLabels(c *checker, field string, m map[string]string) {
	if len(m) > MaxLabels {
		c.addf("%s: at most %d entries", field, MaxLabels)
		return
	}
	for k, v := range m {
		if !labelKey.MatchString(k) {
			c.addf("%s: key %q is not a valid label key", field, k)
		}
		if len(v) > 256 || strings.ContainsAny(v, "\n\r\x00") {
			c.addf("%s: value of %q is too long or has control characters", field, k)
		}
	}
}

func (s *GroupSpec) validate(c *checker) {
	if len(s.Containers) == 0 {
		c.addf("spec.containers: at least one container is required")
	}
	if len(s.Containers) > MaxContainers {
		c.addf("spec.containers: %d containers, at most %d allowed", len(s.Containers), MaxContainers)
		return
	}
	if len(s.InitContainers) > MaxInitContainers {
		c.addf("spec.initContainers: %d, at most %d allowed", len(s.InitContainers), MaxInitContainers)
		return
	}
	if len(s.Volumes) > MaxVolumes {
		c.addf("spec.volumes: %d, at most %d allowed", len(s.Volumes), MaxVolumes)
		return
	}
	switch s.RestartPolicy {
	case "":
		s.RestartPolicy = RestartAlways
	case RestartAlways, RestartOnFailure, RestartNever:
	default:
		c.addf("spec.restartPolicy %q: want Always, OnFailure or Never", s.RestartPolicy)
	}
	if s.CPU < 0 || s.CPU > MaxMilliCPU {
		c.addf("spec.cpu %v: must be between 0 and %d vCPU", s.CPU, MaxMilliCPU/1000)
	}
	if s.Memory < 0 || s.Memory > MaxMemory {
		c.addf("spec.memory %v: must be at most %v", s.Memory, Quantity(MaxMemory))
	} else if s.Memory != 0 && s.Memory < MinMemory {
		c.addf("spec.memory %v: must be at least %v", s.Memory, Quantity(MinMemory))
	}
	if s.GPU < 0 || s.GPU > MaxGPU {
		c.addf("spec.gpu %d: must be between 0 and %d", s.GPU, MaxGPU)
	}
	if g := s.TerminationGracePeriodSeconds; g != nil && (*g < 0 || *g > MaxGracePeriod) {
		c.addf("spec.terminationGracePeriodSeconds %d: must be between 0 and %d", *g, MaxGracePeriod)
	}
	if d := s.ActiveDeadlineSeconds; d != nil && *d <= 0 {
		c.addf("spec.activeDeadlineSeconds %d: must be positive", *d)
	}
	if s.Hostname != "" {
		if err := ValidateName(s.Hostname); err != nil {
			c.addf("spec.hostname: %v", err)
		}
	}
	validateLabels(c, "spec.tags", s.Tags)
	validateLabels(c, "spec.nodeSelector", s.NodeSelector)

	vols := map[string]bool{}
	for i, v := range s.Volumes {
		f := fmt.Sprintf("spec.volumes[%d]", i)
		if err := ValidateName(v.Name); err != nil {
			c.addf("%s: %v", f, err)
		}
		if vols[v.Name] {
			c.addf("%s: duplicate volume name %q", f, v.Name)
		}
		vols[v.Name] = true
		n := 0
		if v.EmptyDir != nil {
			n++
			if v.EmptyDir.Medium != "" && v.EmptyDir.Medium != "Memory" {
				c.addf("%s.emptyDir.medium %q: want \"\" or Memory", f, v.EmptyDir.Medium)
			}
			if v.EmptyDir.SizeLimit < 0 || v.EmptyDir.SizeLimit > MaxMemory {
				c.addf("%s.emptyDir.sizeLimit out of range", f)
			}
		}
		if v.ConfigFile != nil {
			n++
			total := 0
			for j, it := range v.ConfigFile.Items {
				total += len(it.Content)
				if it.Path == "" || path.IsAbs(it.Path) || strings.Contains(it.Path, "..") {
					c.addf("%s.configFile.items[%d].path %q: must be relative, without '..'", f, j, it.Path)
				}
			}
			if total > MaxConfigFileBytes {
				c.addf("%s.configFile: %d bytes of content, at most %d", f, total, MaxConfigFileBytes)
			}
		}
		if v.HostPath != nil {
			n++
			if !path.IsAbs(v.HostPath.Path) {
				c.addf("%s.hostPath.path %q: must be absolute", f, v.HostPath.Path)
			}
		}
		if v.NFS != nil {
			n++
			if err := validateNFSServer(v.NFS.Server); err != nil {
				c.addf("%s.nfs.server %q: %v", f, v.NFS.Server, err)
			}
			if p := v.NFS.Path; !path.IsAbs(p) || path.Clean(p) != p || len(p) > MaxNFSPath || strings.ContainsAny(p, "\x00\n") {
				c.addf("%s.nfs.path %q: must be an absolute, clean path of at most %d bytes", f, p, MaxNFSPath)
			}
		}
		if n != 1 {
			c.addf("%s: exactly one of emptyDir, configFile, hostPath, nfs is required", f)
		}
	}

	names := map[string]bool{}
	var sumCPU CPU
	var sumMem Quantity
	ports := map[string]bool{}
	for kind, list := range map[string][]Container{"spec.containers": s.Containers, "spec.initContainers": s.InitContainers} {
		for i := range list {
			ct := &list[i]
			f := fmt.Sprintf("%s[%d]", kind, i)
			ct.validate(c, f, vols, ports)
			if names[ct.Name] {
				c.addf("%s: duplicate container name %q", f, ct.Name)
			}
			names[ct.Name] = true
			if kind == "spec.containers" {
				sumCPU += ct.Resources.Limits.CPU
				sumMem += ct.Resources.Limits.Memory
			}
		}
	}
	if s.CPU != 0 && sumCPU > s.CPU {
		c.addf("spec: containers' cpu limits (%v) exceed the group's cpu (%v)", sumCPU, s.CPU)
	}
	if s.Memory != 0 && sumMem > s.Memory {
		c.addf("spec: containers' memory limits (%v) exceed the group's memory (%v)", sumMem, s.Memory)
	}
	if sumCPU > MaxMilliCPU {
		c.addf("spec: containers ask for %v vCPU, at most %d allowed", sumCPU, MaxMilliCPU/1000)
	}
	if sumMem > MaxMemory {
		c.addf("spec: containers ask for %v memory, at most %v allowed", sumMem, Quantity(MaxMemory))
	}
}

func (ct *Container) validate(c *checker, f string, vols map[string]bool, ports map[string]bool) {
	if err := ValidateName(ct.Name); err != nil {
		c.addf("%s.name: %v", f, err)
	}
	if err := ValidateImageRef(ct.Image); err != nil {
		c.addf("%s.image: %v", f, err)
	}
	switch ct.ImagePullPolicy {
	case "", "Always", "IfNotPresent", "Never":
	default:
		c.addf("%s.imagePullPolicy %q: want Always, IfNotPresent or Never", f, ct.ImagePullPolicy)
	}
	if n := len(ct.Command) + len(ct.Args); n > MaxArgs {
		c.addf("%s: %d command and args, at most %d", f, n, MaxArgs)
	}
	size := 0
	for _, a := range append(append([]string{}, ct.Command...), ct.Args...) {
		size += len(a)
		if strings.ContainsRune(a, 0) {
			c.addf("%s: command and args must not contain NUL bytes", f)
			break
		}
	}
	if len(ct.Env) > MaxEnv {
		c.addf("%s.env: %d entries, at most %d", f, len(ct.Env), MaxEnv)
	}
	for j, e := range ct.Env {
		size += len(e.Name) + len(e.Value)
		if !envName.MatchString(e.Name) {
			c.addf("%s.env[%d].name %q: not a valid variable name", f, j, e.Name)
		}
		if strings.ContainsRune(e.Value, 0) {
			c.addf("%s.env[%d].value must not contain NUL bytes", f, j)
		}
		if e.ValueFrom != nil && (e.ValueFrom.FieldRef == nil || !validFieldPath(e.ValueFrom.FieldRef.FieldPath)) {
			c.addf("%s.env[%d].valueFrom: only fieldRef with metadata.name, metadata.uid, status.podIP, status.hostIP or spec.nodeName is supported", f, j)
		}
	}
	if size > MaxArgBytes {
		c.addf("%s: command, args and env total %d bytes, at most %d", f, size, MaxArgBytes)
	}
	if ct.WorkingDir != "" && !path.IsAbs(ct.WorkingDir) {
		c.addf("%s.workingDir %q: must be absolute", f, ct.WorkingDir)
	}
	l := ct.Resources.Limits
	if l.CPU < 0 || l.CPU > MaxMilliCPU {
		c.addf("%s.resources.limits.cpu %v: must be between 0 and %d", f, l.CPU, MaxMilliCPU/1000)
	}
	if l.Memory < 0 || l.Memory > MaxMemory {
		c.addf("%s.resources.limits.memory %v: must be at most %v", f, l.Memory, Quantity(MaxMemory))
	} else if l.Memory != 0 && l.Memory < MinMemory {
		c.addf("%s.resources.limits.memory %v: must be at least %v", f, l.Memory, Quantity(MinMemory))
	}
	if l.Pids < 0 || l.GPU < 0 || l.GPU > MaxGPU {
		c.addf("%s.resources.limits: pids and gpu must not be negative", f)
	}
	for j, p := range ct.Ports {
		if p.ContainerPort < 1 || p.ContainerPort > 65535 {
			c.addf("%s.ports[%d].containerPort %d: must be 1-65535", f, j, p.ContainerPort)
		}
		if p.HostPort < 0 || p.HostPort > 65535 {
			c.addf("%s.ports[%d].hostPort %d: must be 0-65535", f, j, p.HostPort)
		}
		proto := strings.ToUpper(p.Protocol)
		if proto != "" && proto != "TCP" && proto != "UDP" {
			c.addf("%s.ports[%d].protocol %q: want TCP or UDP", f, j, p.Protocol)
		}
		if p.HostPort != 0 {
			if proto == "" {
				proto = "TCP"
			}
			k := fmt.Sprintf("%s/%d", proto, p.HostPort)
			if ports[k] {
				c.addf("%s.ports[%d]: host port %s is published twice", f, j, k)
			}
			ports[k] = true
		}
	}
	for j, m := range ct.VolumeMounts {
		if !vols[m.Name] {
			c.addf("%s.volumeMounts[%d]: volume %q is not declared in spec.volumes", f, j, m.Name)
		}
		if !path.IsAbs(m.MountPath) || strings.Contains(m.MountPath, "..") {
			c.addf("%s.volumeMounts[%d].mountPath %q: must be absolute, without '..'", f, j, m.MountPath)
		}
		if m.SubPath != "" && (path.IsAbs(m.SubPath) || strings.Contains(m.SubPath, "..")) {
			c.addf("%s.volumeMounts[%d].subPath %q: must be relative, without '..'", f, j, m.SubPath)
		}
	}
	for name, p := range map[string]*Probe{"livenessProbe": ct.LivenessProbe, "readinessProbe": ct.ReadinessProbe, "startupProbe": ct.StartupProbe} {
		if p != nil {
			validateProbe(c, f+"."+name, p)
		}
	}
	if ct.Lifecycle != nil {
		for name, h := range map[string]*Handler{"postStart": ct.Lifecycle.PostStart, "preStop": ct.Lifecycle.PreStop} {
			if h != nil {
				validateHandler(c, f+".lifecycle."+name, h.Exec, h.HTTPGet, h.TCPSocket)
			}
		}
	}
}

func validFieldPath(p string) bool {
	switch p {
	case "metadata.name", "metadata.uid", "metadata.namespace", "status.podIP", "status.hostIP", "spec.nodeName":
		return true
	}
	return strings.HasPrefix(p, "metadata.labels['") && strings.HasSuffix(p, "']")
}

func validateProbe(c *checker, f string, p *Probe) {
	validateHandler(c, f, p.Exec, p.HTTPGet, p.TCPSocket)
	if p.InitialDelaySeconds < 0 || p.PeriodSeconds < 0 || p.TimeoutSeconds < 0 || p.SuccessThreshold < 0 || p.FailureThreshold < 0 {
		c.addf("%s: delays, periods and thresholds must not be negative", f)
	}
}

func validateHandler(c *checker, f string, e *ExecAction, h *HTTPGetAction, t *TCPSocketAction) {
	n := 0
	if e != nil {
		n++
		if len(e.Command) == 0 {
			c.addf("%s.exec.command: required", f)
		}
	}
	if h != nil {
		n++
		if h.Port < 1 || h.Port > 65535 {
			c.addf("%s.httpGet.port %d: must be 1-65535", f, h.Port)
		}
	}
	if t != nil {
		n++
		if t.Port < 1 || t.Port > 65535 {
			c.addf("%s.tcpSocket.port %d: must be 1-65535", f, t.Port)
		}
	}
	if n != 1 {
		c.addf("%s: exactly one of exec, httpGet, tcpSocket is required", f)
	}
}

// Requests returns what a group asks of a host: the group-level cpu and
// memory when set, else the sum of its containers' limits (init containers
// run before the others, so the larger of the two counts, as Kubernetes
// computes a pod's effective request). Unset amounts default to 0.25 vCPU
// and 256 MiB per container, so that every group takes some capacity.
func (s *GroupSpec) Requests() Resources {
	var cpu CPU
	var mem Quantity
	gpu := s.GPU
	for _, ct := range s.Containers {
		cpu += orCPU(ct.Resources.Limits.CPU, ct.Resources.Requests.CPU)
		mem += orMem(ct.Resources.Limits.Memory, ct.Resources.Requests.Memory)
		gpu += ct.Resources.Limits.GPU
	}
	for _, ct := range s.InitContainers {
		cpu = max(cpu, orCPU(ct.Resources.Limits.CPU, ct.Resources.Requests.CPU))
		mem = max(mem, orMem(ct.Resources.Limits.Memory, ct.Resources.Requests.Memory))
	}
	if s.CPU > 0 {
		cpu = s.CPU
	}
	if s.Memory > 0 {
		mem = s.Memory
	}
	return Resources{MilliCPU: int64(cpu), Memory: int64(mem), GPU: gpu, Groups: 1}
}

func orCPU(a, b CPU) CPU {
	if a > 0 {
		return a
	}
	if b > 0 {
		return b
	}
	return 250
}

func orMem(a, b Quantity) Quantity {
	if a > 0 {
		return a
	}
	if b > 0 {
		return b
	}
	return 256 << 20
}
