package eci

import (
	"sort"
	"time"

	"github.com/skiffhq/skiff/api"
)

// ECI writes times as "2019-12-11T04:50:41Z" (UTC, seconds).
func eciTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05Z")
}

func cores(c api.CPU) float64     { return float64(c) / 1000 }
func gibs(q api.Quantity) float64 { return float64(q) / gib }

// describeGroup renders a group the way DescribeContainerGroups returns it.
func describeGroup(region string, g *api.Group, events []api.Event) map[string]any {
	r := g.Spec.Requests()
	out := map[string]any{
		"ContainerGroupId":   g.ID,
		"ContainerGroupName": g.Name,
		"RegionId":           region,
		"ZoneId":             g.Spec.Zone,
		"Cpu":                float64(r.MilliCPU) / 1000,
		"Memory":             float64(r.Memory) / gib,
		"InstanceType":       g.Spec.InstanceType,
		"RestartPolicy":      string(g.Spec.RestartPolicy),
		"IntranetIp":         g.IP,
		"Status":             string(g.Status),
		"CreationTime":       eciTime(&g.CreatedAt),
		"SpotStrategy":       orDefault(g.Spec.SpotStrategy, api.SpotNone),
		"SpotPriceLimit":     g.Spec.SpotPriceLimit,
		"Tags":               tagList(g.Spec.Tags),
		"Containers":         containers(g.Spec.Containers, g.Containers),
		"InitContainers":     containers(g.Spec.InitContainers, g.InitContainers),
		"Volumes":            volumes(g.Spec.Volumes),
		"HostAliases":        hostAliases(g.Spec.HostAliases),
		"DnsConfig":          dnsConfig(g.Spec.DNSConfig),
		"EciSecurityContext": map[string]any{"Sysctls": sysctlList(g.Spec.SecurityContext)},
		"Events":             eventList(events),
		// Cloud networking and billing fields a skiff group has no value
		// for; present, as ECI returns them, so typed clients see them.
		"VSwitchId": "", "SecurityGroupId": "", "VpcId": "", "EniInstanceId": "", "InternetIp": "", "Ipv6Address": "",
		"RamRoleName": "", "ResourceGroupId": "", "Discount": 0,
		"SucceededTime": "", "FailedTime": "", "ExpiredTime": "",
	}
	if g.Spec.TerminationGracePeriodSeconds != nil {
		out["TerminationGracePeriodSeconds"] = *g.Spec.TerminationGracePeriodSeconds
	}
	if g.Spec.ActiveDeadlineSeconds != nil {
		out["ActiveDeadlineSeconds"] = *g.Spec.ActiveDeadlineSeconds
	}
	switch g.Status {
	case api.StatusSucceeded:
		out["SucceededTime"] = eciTime(g.FinishedAt)
	case api.StatusFailed:
		out["FailedTime"] = eciTime(g.FinishedAt)
	case api.StatusExpired:
		out["ExpiredTime"] = eciTime(g.FinishedAt)
	}
	return out
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func tagList(m map[string]string) []map[string]string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]map[string]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, map[string]string{"Key": k, "Value": m[k]})
	}
	return out
}

func state(cs *api.ContainerStatus) map[string]any {
	if cs == nil {
		return map[string]any{"State": "", "DetailStatus": "", "Reason": "", "Message": "", "StartTime": "", "FinishTime": "", "Signal": 0, "ExitCode": 0}
	}
	m := map[string]any{"State": string(cs.State), "DetailStatus": cs.Reason, "Reason": cs.Reason, "Message": cs.Message,
		"StartTime": eciTime(cs.StartedAt), "FinishTime": eciTime(cs.FinishedAt), "Signal": cs.Signal, "ExitCode": 0}
	if cs.ExitCode != nil {
		m["ExitCode"] = *cs.ExitCode
	}
	return m
}

func containers(specs []api.Container, sts []api.ContainerStatus) []map[string]any {
	byName := map[string]*api.ContainerStatus{}
	for i := range sts {
		byName[sts[i].Name] = &sts[i]
	}
	out := make([]map[string]any, 0, len(specs))
	for _, c := range specs {
		st := byName[c.Name]
		m := map[string]any{
			"Name": c.Name, "Image": c.Image, "Cpu": cores(c.Resources.Limits.CPU), "Memory": gibs(c.Resources.Limits.Memory),
			"Gpu": c.Resources.Limits.GPU, "WorkingDir": c.WorkingDir, "ImagePullPolicy": c.ImagePullPolicy,
			"Commands": nonNil(c.Command), "Args": nonNil(c.Args), "Stdin": c.Stdin, "StdinOnce": c.StdinOnce, "Tty": c.TTY,
		}
		var env []map[string]any
		for _, e := range c.Env {
			path := ""
			if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
				path = e.ValueFrom.FieldRef.FieldPath
			}
			em := map[string]any{"Key": e.Name, "Value": e.Value, "ValueFrom": map[string]any{"FieldRef": map[string]any{"FieldPath": path}}}
			env = append(env, em)
		}
		m["EnvironmentVars"] = nonNilMaps(env)
		var ports []map[string]any
		for _, p := range c.Ports {
			ports = append(ports, map[string]any{"Port": p.ContainerPort, "Protocol": orDefault(p.Protocol, "TCP")})
		}
		m["Ports"] = nonNilMaps(ports)
		var mounts []map[string]any
		for _, v := range c.VolumeMounts {
			mounts = append(mounts, map[string]any{"Name": v.Name, "MountPath": v.MountPath, "SubPath": v.SubPath, "ReadOnly": v.ReadOnly})
		}
		m["VolumeMounts"] = nonNilMaps(mounts)
		m["ReadinessProbe"] = probe(c.ReadinessProbe)
		m["LivenessProbe"] = probe(c.LivenessProbe)
		sc := map[string]any{"ReadOnlyRootFilesystem": false, "RunAsUser": 0, "Capability": map[string]any{"Adds": []string{}}}
		if c.SecurityContext != nil {
			sc["ReadOnlyRootFilesystem"] = c.SecurityContext.ReadOnlyRootFilesystem
			if c.SecurityContext.RunAsUser != nil {
				sc["RunAsUser"] = *c.SecurityContext.RunAsUser
			}
		}
		m["SecurityContext"] = sc
		if st != nil {
			m["Ready"] = st.Ready
			m["RestartCount"] = st.RestartCount
			m["CurrentState"] = state(st)
			m["PreviousState"] = state(st.LastState)
		} else {
			m["CurrentState"] = map[string]any{"State": "Waiting"}
		}
		out = append(out, m)
	}
	return out
}

// probe renders a probe with every field ECI has (zero values for a
// container without one, and for the kinds of check it does not use).
func probe(p *api.Probe) map[string]any {
	if p == nil {
		p = &api.Probe{}
	}
	m := map[string]any{"InitialDelaySeconds": p.InitialDelaySeconds, "PeriodSeconds": p.PeriodSeconds, "TimeoutSeconds": p.TimeoutSeconds,
		"SuccessThreshold": p.SuccessThreshold, "FailureThreshold": p.FailureThreshold, "Execs": []string{},
		"HttpGet": map[string]any{"Path": "", "Port": 0, "Scheme": ""}, "TcpSocket": map[string]any{"Host": "", "Port": 0}}
	if p.Exec != nil {
		m["Execs"] = nonNil(p.Exec.Command)
	}
	if p.HTTPGet != nil {
		m["HttpGet"] = map[string]any{"Path": p.HTTPGet.Path, "Port": p.HTTPGet.Port, "Scheme": p.HTTPGet.Scheme}
	}
	if p.TCPSocket != nil {
		m["TcpSocket"] = map[string]any{"Host": "", "Port": p.TCPSocket.Port}
	}
	return m
}

func volumes(vs []api.Volume) []map[string]any {
	out := make([]map[string]any, 0, len(vs))
	for _, v := range vs {
		// Every field of ECI's volume record, zero unless the type sets it.
		m := map[string]any{"Name": v.Name, "Type": "", "EmptyDirVolumeMedium": "", "ConfigFileVolumeConfigFileToPaths": []map[string]any{},
			"NFSVolumeServer": "", "NFSVolumePath": "", "NFSVolumeReadOnly": false, "DiskVolumeDiskId": "", "DiskVolumeFsType": "",
			"FlexVolumeDriver": "", "FlexVolumeFsType": "", "FlexVolumeOptions": ""}
		switch {
		case v.EmptyDir != nil:
			m["Type"] = "EmptyDirVolume"
			m["EmptyDirVolumeMedium"] = v.EmptyDir.Medium
		case v.ConfigFile != nil:
			m["Type"] = "ConfigFileVolume"
			var items []map[string]any
			for _, it := range v.ConfigFile.Items {
				items = append(items, map[string]any{"Path": it.Path, "Content": it.Content})
			}
			m["ConfigFileVolumeConfigFileToPaths"] = nonNilMaps(items)
		case v.HostPath != nil:
			m["Type"] = "HostPathVolume"
			m["HostPathVolumePath"] = v.HostPath.Path
		case v.NFS != nil:
			m["Type"] = "NFSVolume"
			m["NFSVolumeServer"] = v.NFS.Server
			m["NFSVolumePath"] = v.NFS.Path
			m["NFSVolumeReadOnly"] = v.NFS.ReadOnly
		}
		out = append(out, m)
	}
	return out
}

func hostAliases(hs []api.HostAlias) []map[string]any {
	out := make([]map[string]any, 0, len(hs))
	for _, h := range hs {
		out = append(out, map[string]any{"Ip": h.IP, "Hostnames": nonNil(h.Hostnames)})
	}
	return out
}

func dnsConfig(d *api.DNSConfig) map[string]any {
	if d == nil {
		return map[string]any{"NameServers": []string{}, "Searches": []string{}, "Options": []any{}}
	}
	var opts []map[string]any
	for _, o := range d.Options {
		m := map[string]any{"Name": o.Name}
		if o.Value != nil {
			m["Value"] = *o.Value
		}
		opts = append(opts, m)
	}
	return map[string]any{"NameServers": nonNil(d.Nameservers), "Searches": nonNil(d.Searches), "Options": nonNilMaps(opts)}
}

func sysctlList(sc *api.SecurityContext) []map[string]any {
	var out []map[string]any
	if sc != nil {
		for _, s := range sc.Sysctls {
			out = append(out, map[string]any{"Name": s.Name, "Value": s.Value})
		}
	}
	return nonNilMaps(out)
}

func eventList(evs []api.Event) []map[string]any {
	out := make([]map[string]any, 0, len(evs))
	for _, e := range evs {
		t := e.Time
		count := e.Count
		if count == 0 {
			count = 1
		}
		out = append(out, map[string]any{"Count": count, "Type": e.Type, "Name": e.GroupID, "Reason": e.Reason, "Message": e.Message,
			"FirstTimestamp": eciTime(&t), "LastTimestamp": eciTime(&t), "ContainerName": e.Container})
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nonNilMaps(s []map[string]any) []map[string]any {
	if s == nil {
		return []map[string]any{}
	}
	return s
}
