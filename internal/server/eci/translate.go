package eci

import (
	"encoding/base64"
	"fmt"
	"math"
	"strings"

	"github.com/skiffhq/skiff/api"
)

const gib = 1 << 30

// sdkListArtifact is what the Go SDK (v1.63) sends for a list nested in a
// struct parameter (a probe's Exec.Command): the list's Go formatting, not
// its items, whether the list is empty or not. It carries nothing, so it
// reads as absent; the list form (Exec.Command.N) works.
const sdkListArtifact = "<[]string Value>"

// cpuOf converts ECI's vCPU (a float) to millicores.
func cpuOf(f *float64) api.CPU {
	if f == nil {
		return 0
	}
	return api.CPU(math.Round(*f * 1000))
}

// memOf converts ECI's GiB (a float) to bytes.
func memOf(f *float64) api.Quantity {
	if f == nil {
		return 0
	}
	return api.Quantity(math.Round(*f * gib))
}

// decodeCreate translates CreateContainerGroup's flattened parameters into
// the native create request. Validation of the result is the service
// layer's (api.CreateGroupRequest.Validate); here only what the flat form
// itself can get wrong is checked.
func decodeCreate(p *params) *api.CreateGroupRequest {
	req := &api.CreateGroupRequest{Name: p.required("ContainerGroupName"), ClientToken: p.str("ClientToken")}
	if len(req.ClientToken) > 64 {
		p.fail(invalid("ClientToken", "at most 64 characters"))
	}
	s := &req.Spec
	s.Zone = p.str("ZoneId")
	s.InstanceType = p.str("InstanceType")
	s.RestartPolicy = api.RestartPolicy(p.oneOf("RestartPolicy", "Always", "OnFailure", "Never"))
	s.CPU = cpuOf(p.float("Cpu", 0, 1024))
	s.Memory = memOf(p.float("Memory", 0, 4096))
	s.TerminationGracePeriodSeconds = p.int("TerminationGracePeriodSeconds", 0, api.MaxGracePeriod)
	s.ActiveDeadlineSeconds = p.int("ActiveDeadlineSeconds", 1, math.MaxInt32)
	s.SpotStrategy = p.oneOf("SpotStrategy", api.SpotNone, api.SpotAsPriceGo, api.SpotWithLimit)
	if f := p.float("SpotPriceLimit", 0, 1e6); f != nil {
		s.SpotPriceLimit = *f
	}
	s.Tags = tags(p, "Tag")
	s.ImageRegistryCredentials = decodeRegistryCredentials(p)
	s.InsecureRegistries = splitList(p.str("InsecureRegistry"))
	s.PlainHTTPRegistries = splitList(p.str("PlainHttpRegistry"))
	if p.has("AutoMatchImageCache") {
		b := p.bool("AutoMatchImageCache")
		s.AutoMatchImageCache = &b
	}
	// An image cache's SnapshotId is its id (DescribeImageCaches).
	s.ImageCacheID = p.str("ImageSnapshotId")

	for _, n := range p.indices("Container") {
		s.Containers = append(s.Containers, decodeContainer(p, fmt.Sprintf("Container.%d.", n), false))
	}
	if len(s.Containers) == 0 && p.err == nil {
		p.fail(missing("Container.1.Image"))
	}
	for _, n := range p.indices("InitContainer") {
		s.InitContainers = append(s.InitContainers, decodeContainer(p, fmt.Sprintf("InitContainer.%d.", n), true))
	}
	for _, n := range p.indices("Volume") {
		if v, ok := decodeVolume(p, fmt.Sprintf("Volume.%d.", n)); ok {
			s.Volumes = append(s.Volumes, v)
		}
	}
	if dns := decodeDNS(p); dns != nil {
		s.DNSConfig = dns
	}
	for _, n := range p.indices("HostAliase") {
		f := fmt.Sprintf("HostAliase.%d.", n)
		s.HostAliases = append(s.HostAliases, api.HostAlias{IP: p.required(f + "Ip"), Hostnames: p.strList(f + "Hostname")})
	}
	if sys := sysctls(p, "SecurityContext.Sysctl"); len(sys) > 0 {
		s.SecurityContext = &api.SecurityContext{Sysctls: sys}
	}
	return req
}

func tags(p *params, prefix string) map[string]string {
	idx := p.indices(prefix)
	if len(idx) == 0 {
		return nil
	}
	out := map[string]string{}
	for _, n := range idx {
		f := fmt.Sprintf("%s.%d.", prefix, n)
		k := p.required(f + "Key")
		if _, dup := out[k]; dup {
			p.fail(invalid(f+"Key", "duplicate tag key"))
		}
		out[k] = p.str(f + "Value")
	}
	return out
}

func decodeRegistryCredentials(p *params) []api.ImageRegistryCredential {
	var out []api.ImageRegistryCredential
	for _, n := range p.indices("ImageRegistryCredential") {
		f := fmt.Sprintf("ImageRegistryCredential.%d.", n)
		out = append(out, api.ImageRegistryCredential{Server: p.required(f + "Server"), UserName: p.required(f + "UserName"), Password: p.str(f + "Password")})
	}
	return out
}

// splitList splits ECI's comma-separated list parameters.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func sysctls(p *params, prefix string) []api.Sysctl {
	var out []api.Sysctl
	for _, n := range p.indices(prefix) {
		f := fmt.Sprintf("%s.%d.", prefix, n)
		out = append(out, api.Sysctl{Name: p.required(f + "Name"), Value: p.str(f + "Value")})
	}
	return out
}

func decodeContainer(p *params, f string, init bool) api.Container {
	c := api.Container{
		Name:            p.required(f + "Name"),
		Image:           p.required(f + "Image"),
		WorkingDir:      p.str(f + "WorkingDir"),
		ImagePullPolicy: p.oneOf(f+"ImagePullPolicy", "Always", "IfNotPresent", "Never"),
		Command:         p.strList(f + "Command"),
		Args:            p.strList(f + "Arg"),
		TTY:             p.bool(f + "Tty"),
		Stdin:           p.bool(f + "Stdin"),
		StdinOnce:       p.bool(f + "StdinOnce"),
	}
	c.Resources.Limits.CPU = cpuOf(p.float(f+"Cpu", 0, 1024))
	c.Resources.Limits.Memory = memOf(p.float(f+"Memory", 0, 4096))
	if g := p.int(f+"Gpu", 0, api.MaxGPU); g != nil {
		c.Resources.Limits.GPU = int(*g)
	}
	for _, n := range p.indices(f + "EnvironmentVar") {
		e := fmt.Sprintf("%sEnvironmentVar.%d.", f, n)
		ev := api.EnvVar{Name: p.required(e + "Key"), Value: p.str(e + "Value")}
		if fp := p.str(e + "FieldRef.FieldPath"); fp != "" {
			ev.ValueFrom = &api.EnvVarSource{FieldRef: &api.FieldRef{FieldPath: fp}}
		}
		c.Env = append(c.Env, ev)
	}
	for _, n := range p.indices(f + "Port") {
		e := fmt.Sprintf("%sPort.%d.", f, n)
		port := p.int(e+"Port", 1, 65535)
		if port == nil {
			p.fail(missing(e + "Port"))
			continue
		}
		proto := strings.ToUpper(p.oneOf(e+"Protocol", "TCP", "UDP", "tcp", "udp"))
		c.Ports = append(c.Ports, api.ContainerPort{ContainerPort: int(*port), Protocol: proto})
	}
	for _, n := range p.indices(f + "VolumeMount") {
		e := fmt.Sprintf("%sVolumeMount.%d.", f, n)
		c.VolumeMounts = append(c.VolumeMounts, api.VolumeMount{Name: p.required(e + "Name"), MountPath: p.required(e + "MountPath"),
			SubPath: p.str(e + "SubPath"), ReadOnly: p.bool(e + "ReadOnly")})
		p.oneOf(e+"MountPropagation", "None", "HostToCotainer", "HostToContainer", "Bidirectional")
	}
	if !init {
		c.ReadinessProbe = decodeProbe(p, f+"ReadinessProbe.")
		c.LivenessProbe = decodeProbe(p, f+"LivenessProbe.")
		c.StartupProbe = decodeProbe(p, f+"StartupProbe.")
		post := decodeHandler(p, f+"LifecyclePostStartHandler")
		pre := decodeHandler(p, f+"LifecyclePreStopHandler")
		if post != nil || pre != nil {
			c.Lifecycle = &api.Lifecycle{PostStart: post, PreStop: pre}
		}
	}
	sc := &api.SecurityContext{}
	set := false
	if u := p.int(f+"SecurityContext.RunAsUser", 0, math.MaxInt32); u != nil {
		sc.RunAsUser, set = u, true
	}
	if p.bool(f + "SecurityContext.ReadOnlyRootFilesystem") {
		sc.ReadOnlyRootFilesystem, set = true, true
	}
	if caps := p.strList(f + "SecurityContext.Capability.Add"); len(caps) > 0 {
		p.fail(unsupported(f+"SecurityContext.Capability.Add", "skiff containers run with a fixed, reduced capability set"))
	}
	if set {
		c.SecurityContext = sc
	}
	return c
}

// decodeProbe reads a probe: prefix is "Container.N.ReadinessProbe.".
func decodeProbe(p *params, f string) *api.Probe {
	pr := &api.Probe{}
	any := false
	i32 := func(k string, lo int64) int32 {
		if v := p.int(f+k, lo, math.MaxInt32); v != nil {
			any = true
			return int32(*v)
		}
		return 0
	}
	pr.InitialDelaySeconds = i32("InitialDelaySeconds", 0)
	pr.PeriodSeconds = i32("PeriodSeconds", 1)
	pr.TimeoutSeconds = i32("TimeoutSeconds", 1)
	pr.SuccessThreshold = i32("SuccessThreshold", 1)
	pr.FailureThreshold = i32("FailureThreshold", 1)
	if cmd := p.strList(f + "Exec.Command"); len(cmd) > 0 {
		pr.Exec = &api.ExecAction{Command: cmd}
	} else if v := p.str(f + "Exec.Command"); v != "" && v != sdkListArtifact {
		p.fail(invalid(f+"Exec.Command", "must be a list: "+f+"Exec.Command.1, "+f+"Exec.Command.2, ..."))
	}
	if port := p.int(f+"HttpGet.Port", 1, 65535); port != nil {
		pr.HTTPGet = &api.HTTPGetAction{Path: p.str(f + "HttpGet.Path"), Port: int(*port), Scheme: strings.ToUpper(p.oneOf(f+"HttpGet.Scheme", "HTTP", "HTTPS", "http", "https"))}
	}
	if port := p.int(f+"TcpSocket.Port", 1, 65535); port != nil {
		pr.TCPSocket = &api.TCPSocketAction{Port: int(*port)}
	}
	if pr.Exec == nil && pr.HTTPGet == nil && pr.TCPSocket == nil {
		if any {
			p.fail(invalid(strings.TrimSuffix(f, "."), "a probe needs one of Exec.Command, HttpGet.Port or TcpSocket.Port"))
		}
		return nil
	}
	return pr
}

// decodeHandler reads a lifecycle hook: prefix is
// "Container.N.LifecyclePostStartHandler" (ECI flattens the hook names).
func decodeHandler(p *params, f string) *api.Handler {
	h := &api.Handler{}
	if cmd := p.strList(f + "Exec"); len(cmd) > 0 {
		h.Exec = &api.ExecAction{Command: cmd}
	}
	if port := p.int(f+"HttpGetPort", 1, 65535); port != nil {
		h.HTTPGet = &api.HTTPGetAction{Path: p.str(f + "HttpGetPath"), Port: int(*port), Scheme: strings.ToUpper(p.oneOf(f+"HttpGetScheme", "HTTP", "HTTPS", "http", "https"))}
	}
	if port := p.int(f+"TcpSocketPort", 1, 65535); port != nil {
		h.TCPSocket = &api.TCPSocketAction{Port: int(*port)}
	}
	if h.Exec == nil && h.HTTPGet == nil && h.TCPSocket == nil {
		return nil
	}
	return h
}

func decodeVolume(p *params, f string) (api.Volume, bool) {
	v := api.Volume{Name: p.required(f + "Name")}
	switch t := p.str(f + "Type"); t {
	case "EmptyDirVolume", "":
		if t == "" && !p.has(f+"EmptyDirVolume.Medium") {
			p.fail(missing(f + "Type"))
			return v, false
		}
		ed := &api.EmptyDirVolume{Medium: p.oneOf(f+"EmptyDirVolume.Medium", "", "Memory")}
		if s := p.str(f + "EmptyDirVolume.SizeLimit"); s != "" {
			q, err := api.ParseQuantity(s)
			if err != nil || q < 0 {
				p.fail(invalid(f+"EmptyDirVolume.SizeLimit", "must be a quantity such as 256Mi"))
			}
			ed.SizeLimit = q
		}
		v.EmptyDir = ed
	case "ConfigFileVolume":
		cf := &api.ConfigFileVolume{}
		mode := p.int(f+"ConfigFileVolume.DefaultMode", 0, 0o777)
		if mode == nil {
			mode = p.int(f+"ConfigFileVolume.DefaultModel", 0, 0o777) // the Go SDK's spelling
		}
		if mode != nil {
			m := int32(*mode)
			cf.DefaultMode = &m
		}
		for _, n := range p.indices(f + "ConfigFileVolume.ConfigFileToPath") {
			e := fmt.Sprintf("%sConfigFileVolume.ConfigFileToPath.%d.", f, n)
			raw := p.str(e + "Content")
			content, err := base64.StdEncoding.DecodeString(raw)
			if err != nil {
				p.fail(invalid(e+"Content", "must be base64-encoded"))
			}
			item := api.ConfigFileItem{Path: p.required(e + "Path"), Content: string(content)}
			if m := p.int(e+"Mode", 0, 0o777); m != nil {
				mm := int32(*m)
				item.Mode = &mm
			}
			cf.Items = append(cf.Items, item)
		}
		v.ConfigFile = cf
	case "HostPathVolume":
		v.HostPath = &api.HostPathVolume{Path: p.required(f + "HostPathVolume.Path"), Type: p.oneOf(f+"HostPathVolume.Type", "Directory", "File", "DirectoryOrCreate", "FileOrCreate")}
	case "NFSVolume":
		v.NFS = &api.NFSVolume{Server: p.required(f + "NFSVolume.Server"), Path: p.required(f + "NFSVolume.Path"), ReadOnly: p.bool(f + "NFSVolume.ReadOnly")}
	case "DiskVolume", "FlexVolume":
		p.fail(unsupported(f+"Type", t+" volumes need storage this skiff does not offer yet; use EmptyDirVolume, ConfigFileVolume, HostPathVolume or NFSVolume"))
		return v, false
	default:
		p.fail(invalid(f+"Type", "must be EmptyDirVolume, ConfigFileVolume, HostPathVolume or NFSVolume"))
		return v, false
	}
	return v, true
}

func decodeDNS(p *params) *api.DNSConfig {
	d := &api.DNSConfig{Nameservers: p.strList("DnsConfig.NameServer"), Searches: p.strList("DnsConfig.Search")}
	for _, n := range p.indices("DnsConfig.Option") {
		f := fmt.Sprintf("DnsConfig.Option.%d.", n)
		o := api.DNSOption{Name: p.required(f + "Name")}
		if p.has(f + "Value") {
			v := p.str(f + "Value")
			o.Value = &v
		}
		d.Options = append(d.Options, o)
	}
	if len(d.Nameservers) == 0 && len(d.Searches) == 0 && len(d.Options) == 0 {
		return nil
	}
	return d
}
