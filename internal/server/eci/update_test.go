package eci

import (
	"net/url"
	"testing"
)

func decodeUpdateQuery(t *testing.T, raw string) (*params, error) {
	t.Helper()
	q, err := url.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	m, perr := parseParams(q)
	if perr != nil {
		return nil, perr
	}
	return newParams(m), nil
}

// UpdateContainerGroup's parameters: the documented flattened form, the
// bare items the Go SDK sends for a container's env, ports and mounts, and
// incremental updates that leave the image out.
func TestDecodeUpdate(t *testing.T) {
	p, err := decodeUpdateQuery(t, "ContainerGroupId=g&Container.1.Name=a&Container.1.Image=busybox:2&Container.1.EnvironmentVar.1=A%3D1%3D2"+
		"&Container.1.EnvironmentVar.2.Key=B&Container.1.EnvironmentVar.2.Value=b&Container.1.Port.1=8080%2Fudp"+
		"&Container.1.VolumeMount.1=%7B%22Name%22%3A%22data%22%2C%22MountPath%22%3A%22%2Fdata%22%2C%22ReadOnly%22%3Atrue%7D"+
		"&Cpu=2&Memory=4&Volume.1.Name=data&Volume.1.Type=EmptyDirVolume&Tag.1.Key=k&Tag.1.Value=v&RestartPolicy=Never")
	if err != nil {
		t.Fatal(err)
	}
	req := decodeUpdate(p)
	if p.err != nil {
		t.Fatal(p.err)
	}
	c := req.Containers
	switch {
	case req.Incremental || len(c) != 1 || c[0].Image != "busybox:2" || len(c[0].Env) != 2:
		t.Fatalf("decoded %+v", req)
	case c[0].Env[0].Name != "A" || c[0].Env[0].Value != "1=2" || c[0].Env[1].Name != "B" || c[0].Env[1].Value != "b":
		t.Fatalf("env %+v", c[0].Env)
	case len(c[0].Ports) != 1 || c[0].Ports[0].ContainerPort != 8080 || c[0].Ports[0].Protocol != "UDP":
		t.Fatalf("ports %+v", c[0].Ports)
	case len(c[0].VolumeMounts) != 1 || c[0].VolumeMounts[0].MountPath != "/data" || !c[0].VolumeMounts[0].ReadOnly:
		t.Fatalf("mounts %+v", c[0].VolumeMounts)
	case req.CPU == nil || *req.CPU != 2000 || req.Memory == nil || *req.Memory != 4<<30 || len(req.Volumes) != 1 || req.Tags["k"] != "v" || req.RestartPolicy != "Never":
		t.Fatalf("decoded %+v", req)
	}

	p, _ = decodeUpdateQuery(t, "ContainerGroupId=g&UpdateType=IncrementalUpdate&Container.1.Name=a&Container.1.Arg.1=x")
	req = decodeUpdate(p)
	if p.err != nil || !req.Incremental || req.Containers[0].Image != "" || req.Containers[0].Args[0] != "x" {
		t.Fatalf("incremental: %v %+v", p.err, req)
	}
	for _, bad := range []string{"Container.1.Name=a", "UpdateType=Both", "Container.1.Name=a&Container.1.Image=b&Container.1.EnvironmentVar.1=novalue",
		"Container.1.Name=a&Container.1.Image=b&Container.1.VolumeMount.1=data:/x", "Cpu=-1", "Memory=lots", "Container.1.Name=a&Container.1.Image=b&Container.1.Port.1=http"} {
		p, err := decodeUpdateQuery(t, "ContainerGroupId=g&"+bad)
		if err != nil {
			continue
		}
		decodeUpdate(p)
		if p.err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
