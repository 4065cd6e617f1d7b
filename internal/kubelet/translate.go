package kubelet

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiffhq/skiff/api"
)

// Labels put on every group made for a pod. The UID label is what ties a
// group to exactly one pod; namespace and name are for people and filters.
const (
	LabelNode      = "k8s.skiff.io/node"
	LabelNamespace = "k8s.skiff.io/namespace"
	LabelPod       = "k8s.skiff.io/pod"
	LabelUID       = "k8s.skiff.io/uid"
)

// errUnsupported marks a pod that skiff cannot run as specified. The pod is
// failed at once with a clear reason instead of being left Pending.
var errUnsupported = errors.New("unsupported")

// unsupportedError lists every unsupported field of one pod.
type unsupportedError struct{ fields []string }

func (e *unsupportedError) Error() string {
	return "skiff cannot run this pod: " + strings.Join(e.fields, "; ")
}

func (e *unsupportedError) Unwrap() error { return errUnsupported }

// groupName is the skiff group name of a pod: unique per pod UID, a valid
// DNS label.
func groupName(uid string) string { return "k8s-" + strings.ToLower(uid) }

// sources resolves what a pod refers to outside itself: ConfigMaps,
// Secrets and service-account tokens.
type sources interface {
	configMap(namespace, name string) (*corev1.ConfigMap, error)
	secret(namespace, name string) (*corev1.Secret, error)
	// token returns a bound service-account token for the pod.
	token(pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection) (string, error)
}

// translator turns a pod into a skiff group spec.
type translator struct {
	node   string
	src    sources
	apiURL *url.URL // the apiserver address pods are told about; nil: none
}

// checkSupported returns an unsupportedError naming each field of pod that
// skiff has no equivalent for.
func checkSupported(pod *corev1.Pod) error {
	var bad []string
	s := &pod.Spec
	if s.HostNetwork {
		bad = append(bad, "spec.hostNetwork: every skiff group has its own network")
	}
	if s.HostPID {
		bad = append(bad, "spec.hostPID is not available")
	}
	if s.HostIPC {
		bad = append(bad, "spec.hostIPC is not available")
	}
	for _, v := range s.Volumes {
		switch {
		case v.EmptyDir != nil, v.ConfigMap != nil, v.Secret != nil, v.DownwardAPI != nil, v.NFS != nil:
		case v.Projected != nil:
			for _, ps := range v.Projected.Sources {
				if ps.ClusterTrustBundle != nil || ps.PodCertificate != nil {
					bad = append(bad, fmt.Sprintf("volume %q: projected source kind is not supported", v.Name))
				}
			}
		default:
			bad = append(bad, fmt.Sprintf("volume %q: only emptyDir, nfs, configMap, secret, downwardAPI and projected volumes are supported", v.Name))
		}
	}
	all := append(append([]corev1.Container(nil), s.InitContainers...), s.Containers...)
	for i, c := range all {
		if i < len(s.InitContainers) && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			bad = append(bad, fmt.Sprintf("init container %q: sidecar containers (restartPolicy Always) are not supported", c.Name))
		}
		if len(c.VolumeDevices) > 0 {
			bad = append(bad, fmt.Sprintf("container %q: volumeDevices are not supported", c.Name))
		}
		for name, p := range map[string]*corev1.Probe{"livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe, "startupProbe": c.StartupProbe} {
			if p != nil && p.GRPC != nil {
				bad = append(bad, fmt.Sprintf("container %q: %s.grpc is not supported", c.Name, name))
			}
		}
	}
	if len(s.EphemeralContainers) > 0 {
		bad = append(bad, "ephemeral containers are not supported")
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	return &unsupportedError{fields: bad}
}

// group builds the create request for pod.
func (t *translator) group(pod *corev1.Pod) (*api.CreateGroupRequest, error) {
	if err := checkSupported(pod); err != nil {
		return nil, err
	}
	s := &pod.Spec
	spec := api.GroupSpec{
		RestartPolicy:                 api.RestartPolicy(s.RestartPolicy),
		TerminationGracePeriodSeconds: s.TerminationGracePeriodSeconds,
		ActiveDeadlineSeconds:         s.ActiveDeadlineSeconds,
		Hostname:                      podHostname(pod),
		NodeSelector:                  nil,
	}
	if s.ShareProcessNamespace != nil {
		spec.ShareProcessNamespace = *s.ShareProcessNamespace
	}
	for _, h := range s.HostAliases {
		spec.HostAliases = append(spec.HostAliases, api.HostAlias{IP: h.IP, Hostnames: h.Hostnames})
	}
	if d := s.DNSConfig; d != nil {
		dc := &api.DNSConfig{Nameservers: d.Nameservers, Searches: d.Searches}
		for _, o := range d.Options {
			dc.Options = append(dc.Options, api.DNSOption{Name: o.Name, Value: o.Value})
		}
		spec.DNSConfig = dc
	}
	if sc := s.SecurityContext; sc != nil && (sc.RunAsUser != nil || sc.RunAsGroup != nil || len(sc.Sysctls) > 0) {
		gsc := &api.SecurityContext{RunAsUser: sc.RunAsUser, RunAsGroup: sc.RunAsGroup}
		for _, x := range sc.Sysctls {
			gsc.Sysctls = append(gsc.Sysctls, api.Sysctl{Name: x.Name, Value: x.Value})
		}
		spec.SecurityContext = gsc
	}
	creds, err := t.pullSecrets(pod)
	if err != nil {
		return nil, err
	}
	spec.ImageRegistryCredentials = creds

	for i := range s.Volumes {
		v, err := t.volume(pod, &s.Volumes[i])
		if err != nil {
			return nil, err
		}
		spec.Volumes = append(spec.Volumes, v)
	}
	for i := range s.InitContainers {
		c, err := t.container(pod, &s.InitContainers[i])
		if err != nil {
			return nil, err
		}
		spec.InitContainers = append(spec.InitContainers, c)
	}
	for i := range s.Containers {
		c, err := t.container(pod, &s.Containers[i])
		if err != nil {
			return nil, err
		}
		spec.Containers = append(spec.Containers, c)
	}
	return &api.CreateGroupRequest{
		Name:        groupName(string(pod.UID)),
		ClientToken: string(pod.UID),
		Labels: map[string]string{
			LabelNode:      t.node,
			LabelNamespace: pod.Namespace,
			LabelPod:       pod.Name,
			LabelUID:       string(pod.UID),
		},
		Spec: spec,
	}, nil
}

// podHostname is the pod's hostname as Kubernetes gives it: spec.hostname,
// else the pod name cut to one DNS label.
func podHostname(pod *corev1.Pod) string {
	h := pod.Spec.Hostname
	if h == "" {
		h = pod.Name
	}
	h = strings.ToLower(h)
	if i := strings.IndexByte(h, '.'); i >= 0 {
		h = h[:i]
	}
	if len(h) > 63 {
		h = h[:63]
	}
	return strings.TrimRight(h, "-")
}

func (t *translator) container(pod *corev1.Pod, c *corev1.Container) (api.Container, error) {
	out := api.Container{
		Name:            c.Name,
		Image:           c.Image,
		ImagePullPolicy: string(c.ImagePullPolicy),
		Command:         c.Command,
		Args:            c.Args,
		WorkingDir:      c.WorkingDir,
		TTY:             c.TTY,
		Stdin:           c.Stdin,
		StdinOnce:       c.StdinOnce,
	}
	env, err := t.env(pod, c)
	if err != nil {
		return out, err
	}
	out.Env = env
	for _, p := range c.Ports {
		out.Ports = append(out.Ports, api.ContainerPort{Name: p.Name, ContainerPort: int(p.ContainerPort),
			HostPort: int(p.HostPort), Protocol: string(p.Protocol)})
	}
	out.Resources = api.ResourceRequirements{Limits: resourceList(c.Resources.Limits), Requests: resourceList(c.Resources.Requests)}
	for _, m := range c.VolumeMounts {
		// ConfigMap, Secret, downwardAPI and projected volumes are always
		// mounted read-only, as Kubernetes mounts them; live updates go
		// through skiff's volume API, not the mount.
		ro := m.ReadOnly || isProjectedKind(pod, m.Name)
		out.VolumeMounts = append(out.VolumeMounts, api.VolumeMount{Name: volName(m.Name), MountPath: m.MountPath, SubPath: m.SubPath, ReadOnly: ro})
	}
	if out.LivenessProbe, err = probe(c, c.LivenessProbe); err != nil {
		return out, err
	}
	if out.ReadinessProbe, err = probe(c, c.ReadinessProbe); err != nil {
		return out, err
	}
	if out.StartupProbe, err = probe(c, c.StartupProbe); err != nil {
		return out, err
	}
	if lc := c.Lifecycle; lc != nil {
		l := &api.Lifecycle{}
		if l.PostStart, err = handler(c, lc.PostStart); err != nil {
			return out, err
		}
		if l.PreStop, err = handler(c, lc.PreStop); err != nil {
			return out, err
		}
		if l.PostStart != nil || l.PreStop != nil {
			out.Lifecycle = l
		}
	}
	if sc := c.SecurityContext; sc != nil {
		o := &api.SecurityContext{RunAsUser: sc.RunAsUser, RunAsGroup: sc.RunAsGroup}
		if sc.ReadOnlyRootFilesystem != nil {
			o.ReadOnlyRootFilesystem = *sc.ReadOnlyRootFilesystem
		}
		if sc.Privileged != nil {
			o.Privileged = *sc.Privileged
		}
		out.SecurityContext = o
	}
	return out, nil
}

// volName maps a Kubernetes volume name (a DNS label, like skiff's) as is.
func volName(n string) string { return n }

func isProjectedKind(pod *corev1.Pod, name string) bool {
	for _, v := range pod.Spec.Volumes {
		if v.Name == name {
			return v.ConfigMap != nil || v.Secret != nil || v.Projected != nil || v.DownwardAPI != nil
		}
	}
	return false
}

func resourceList(rl corev1.ResourceList) api.ResourceList {
	var out api.ResourceList
	if q, ok := rl[corev1.ResourceCPU]; ok {
		out.CPU = api.CPU(q.MilliValue())
	}
	if q, ok := rl[corev1.ResourceMemory]; ok {
		out.Memory = api.Quantity(q.Value())
	}
	if q, ok := rl["nvidia.com/gpu"]; ok {
		out.GPU = int(q.Value())
	}
	return out
}

// port resolves a probe or hook port, which may name a container port.
func port(c *corev1.Container, p intOrName) (int, error) {
	if p.isName {
		for _, cp := range c.Ports {
			if cp.Name == p.name {
				return int(cp.ContainerPort), nil
			}
		}
		return 0, &unsupportedError{fields: []string{fmt.Sprintf("container %q: no port named %q", c.Name, p.name)}}
	}
	return p.n, nil
}

func probe(c *corev1.Container, p *corev1.Probe) (*api.Probe, error) {
	if p == nil {
		return nil, nil
	}
	h, err := handlerOf(c, p.Exec, p.HTTPGet, p.TCPSocket, nil)
	if err != nil {
		return nil, err
	}
	return &api.Probe{Exec: h.Exec, HTTPGet: h.HTTPGet, TCPSocket: h.TCPSocket,
		InitialDelaySeconds: p.InitialDelaySeconds, PeriodSeconds: p.PeriodSeconds, TimeoutSeconds: p.TimeoutSeconds,
		SuccessThreshold: p.SuccessThreshold, FailureThreshold: p.FailureThreshold}, nil
}

func handler(c *corev1.Container, h *corev1.LifecycleHandler) (*api.Handler, error) {
	if h == nil {
		return nil, nil
	}
	return handlerOf(c, h.Exec, h.HTTPGet, h.TCPSocket, h.Sleep)
}

func handlerOf(c *corev1.Container, e *corev1.ExecAction, hg *corev1.HTTPGetAction, ts *corev1.TCPSocketAction, sl *corev1.SleepAction) (*api.Handler, error) {
	out := &api.Handler{}
	switch {
	case e != nil:
		out.Exec = &api.ExecAction{Command: e.Command}
	case hg != nil:
		p, err := port(c, toIntOrName(hg.Port.Type == intstr.String, hg.Port.StrVal, int(hg.Port.IntVal)))
		if err != nil {
			return nil, err
		}
		out.HTTPGet = &api.HTTPGetAction{Path: hg.Path, Port: p, Scheme: string(hg.Scheme)}
	case ts != nil:
		p, err := port(c, toIntOrName(ts.Port.Type == intstr.String, ts.Port.StrVal, int(ts.Port.IntVal)))
		if err != nil {
			return nil, err
		}
		out.TCPSocket = &api.TCPSocketAction{Port: p}
	case sl != nil:
		// skiff hooks have no sleep action; the image's sleep does it.
		out.Exec = &api.ExecAction{Command: []string{"sleep", strconv.FormatInt(sl.Seconds, 10)}}
	default:
		return nil, nil
	}
	return out, nil
}

type intOrName struct {
	isName bool
	name   string
	n      int
}

func toIntOrName(isName bool, name string, n int) intOrName {
	return intOrName{isName: isName, name: name, n: n}
}

// env resolves a container's environment the way the kubelet does:
// envFrom first, then env, with $(VAR) references expanded.
func (t *translator) env(pod *corev1.Pod, c *corev1.Container) ([]api.EnvVar, error) {
	vals := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	// What an in-cluster client needs. There is no kube-proxy on skiff
	// hosts, so the real apiserver address stands in for the service IP.
	if t.apiURL != nil {
		host, p, _ := net.SplitHostPort(t.apiURL.Host)
		if host == "" {
			host, p = t.apiURL.Host, "443"
		}
		set("KUBERNETES_SERVICE_HOST", host)
		set("KUBERNETES_SERVICE_PORT", p)
		set("KUBERNETES_SERVICE_PORT_HTTPS", p)
		set("KUBERNETES_PORT", "tcp://"+net.JoinHostPort(host, p))
		set("KUBERNETES_PORT_"+p+"_TCP", "tcp://"+net.JoinHostPort(host, p))
		set("KUBERNETES_PORT_"+p+"_TCP_PROTO", "tcp")
		set("KUBERNETES_PORT_"+p+"_TCP_PORT", p)
		set("KUBERNETES_PORT_"+p+"_TCP_ADDR", host)
	}
	for _, ef := range c.EnvFrom {
		var data map[string]string
		switch {
		case ef.ConfigMapRef != nil:
			cm, err := t.src.configMap(pod.Namespace, ef.ConfigMapRef.Name)
			if err != nil {
				if optional(ef.ConfigMapRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("container %q envFrom configMap %q: %w", c.Name, ef.ConfigMapRef.Name, err)
			}
			data = cm.Data
		case ef.SecretRef != nil:
			sec, err := t.src.secret(pod.Namespace, ef.SecretRef.Name)
			if err != nil {
				if optional(ef.SecretRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("container %q envFrom secret %q: %w", c.Name, ef.SecretRef.Name, err)
			}
			data = map[string]string{}
			for k, v := range sec.Data {
				data[k] = string(v)
			}
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			set(ef.Prefix+k, data[k])
		}
	}
	var passthrough []api.EnvVar // resolved by skiff at start (pod IP, host IP)
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, vals))
			continue
		}
		vf := e.ValueFrom
		switch {
		case vf.FieldRef != nil:
			switch vf.FieldRef.FieldPath {
			case "status.podIP", "status.podIPs", "status.hostIP", "status.hostIPs":
				p := strings.TrimSuffix(vf.FieldRef.FieldPath, "s")
				passthrough = append(passthrough, api.EnvVar{Name: e.Name, ValueFrom: &api.EnvVarSource{FieldRef: &api.FieldRef{FieldPath: p}}})
				delete(vals, e.Name)
				continue
			}
			v, err := fieldValue(pod, t.node, vf.FieldRef.FieldPath)
			if err != nil {
				return nil, fmt.Errorf("container %q env %s: %w", c.Name, e.Name, err)
			}
			set(e.Name, v)
		case vf.ResourceFieldRef != nil:
			v, err := resourceValue(pod, c, vf.ResourceFieldRef)
			if err != nil {
				return nil, fmt.Errorf("container %q env %s: %w", c.Name, e.Name, err)
			}
			set(e.Name, v)
		case vf.ConfigMapKeyRef != nil:
			r := vf.ConfigMapKeyRef
			cm, err := t.src.configMap(pod.Namespace, r.Name)
			if err != nil {
				if optional(r.Optional) {
					continue
				}
				return nil, fmt.Errorf("container %q env %s: configMap %q: %w", c.Name, e.Name, r.Name, err)
			}
			v, ok := cm.Data[r.Key]
			if !ok {
				if b, okb := cm.BinaryData[r.Key]; okb {
					v, ok = string(b), true
				}
			}
			if !ok {
				if optional(r.Optional) {
					continue
				}
				return nil, fmt.Errorf("container %q env %s: configMap %q has no key %q", c.Name, e.Name, r.Name, r.Key)
			}
			set(e.Name, v)
		case vf.SecretKeyRef != nil:
			r := vf.SecretKeyRef
			sec, err := t.src.secret(pod.Namespace, r.Name)
			if err != nil {
				if optional(r.Optional) {
					continue
				}
				return nil, fmt.Errorf("container %q env %s: secret %q: %w", c.Name, e.Name, r.Name, err)
			}
			v, ok := sec.Data[r.Key]
			if !ok {
				if optional(r.Optional) {
					continue
				}
				return nil, fmt.Errorf("container %q env %s: secret %q has no key %q", c.Name, e.Name, r.Name, r.Key)
			}
			set(e.Name, string(v))
		default:
			return nil, &unsupportedError{fields: []string{fmt.Sprintf("container %q env %s: valueFrom kind is not supported", c.Name, e.Name)}}
		}
	}
	out := make([]api.EnvVar, 0, len(order)+len(passthrough))
	for _, k := range order {
		if v, ok := vals[k]; ok {
			out = append(out, api.EnvVar{Name: k, Value: v})
		}
	}
	return append(out, passthrough...), nil
}

func optional(b *bool) bool { return b != nil && *b }

// expand replaces $(VAR) with earlier variables' values; $$ escapes, and
// unknown references stay as written, as Kubernetes does.
func expand(s string, vals map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vals[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// fieldValue is a downward-API field of the pod.
func fieldValue(pod *corev1.Pod, node, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return node, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return pod.Status.PodIP, nil
	case "status.hostIP", "status.hostIPs":
		return pod.Status.HostIP, nil
	}
	for _, pre := range []string{"metadata.labels", "metadata.annotations"} {
		if strings.HasPrefix(path, pre+"['") && strings.HasSuffix(path, "']") {
			k := path[len(pre)+2 : len(path)-2]
			if pre == "metadata.labels" {
				return pod.Labels[k], nil
			}
			return pod.Annotations[k], nil
		}
	}
	return "", &unsupportedError{fields: []string{fmt.Sprintf("fieldRef %q is not supported", path)}}
}

// formatMap renders labels or annotations as the downward API does.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s=%q", k, m[k])
	}
	return b.String()
}

// resourceValue is a resourceFieldRef: a container's request or limit in
// units of the divisor, rounded up; limits default to the node's capacity
// as Kubernetes does (here: unset means 0 → the whole group's share).
func resourceValue(pod *corev1.Pod, c *corev1.Container, r *corev1.ResourceFieldSelector) (string, error) {
	ctr := c
	if r.ContainerName != "" && r.ContainerName != c.Name {
		ctr = nil
		for i := range pod.Spec.Containers {
			if pod.Spec.Containers[i].Name == r.ContainerName {
				ctr = &pod.Spec.Containers[i]
			}
		}
		if ctr == nil {
			return "", fmt.Errorf("resourceFieldRef: no container %q", r.ContainerName)
		}
	}
	var q resource.Quantity
	var ok bool
	switch r.Resource {
	case "limits.cpu":
		q, ok = ctr.Resources.Limits[corev1.ResourceCPU]
	case "limits.memory":
		q, ok = ctr.Resources.Limits[corev1.ResourceMemory]
	case "limits.ephemeral-storage":
		q, ok = ctr.Resources.Limits[corev1.ResourceEphemeralStorage]
	case "requests.cpu":
		q, ok = ctr.Resources.Requests[corev1.ResourceCPU]
	case "requests.memory":
		q, ok = ctr.Resources.Requests[corev1.ResourceMemory]
	case "requests.ephemeral-storage":
		q, ok = ctr.Resources.Requests[corev1.ResourceEphemeralStorage]
	default:
		return "", &unsupportedError{fields: []string{fmt.Sprintf("resourceFieldRef %q is not supported", r.Resource)}}
	}
	if !ok {
		// Kubernetes falls back to the node's allocatable for an unset
		// limit; a skiff group without limits has no fixed bound, so 0
		// for requests and 1 unit for limits would both mislead: report 0.
		return "0", nil
	}
	div := r.Divisor
	if div.IsZero() {
		div = resource.MustParse("1")
	}
	if strings.HasSuffix(r.Resource, "cpu") {
		v := (q.MilliValue() + div.MilliValue() - 1) / div.MilliValue()
		return strconv.FormatInt(v, 10), nil
	}
	v := (q.Value() + div.Value() - 1) / div.Value()
	return strconv.FormatInt(v, 10), nil
}
