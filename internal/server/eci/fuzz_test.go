package eci

import (
	"net/url"
	"testing"
)

// FuzzDecodeParams feeds arbitrary query strings through the flattened
// parameter decoder and the CreateContainerGroup translation (and the
// request validation after it): no input may panic, and an input either
// decodes or yields an ECI error.
func FuzzDecodeParams(f *testing.F) {
	f.Add("ContainerGroupName=a&Container.1.Name=a&Container.1.Image=busybox")
	f.Add("Container.1.EnvironmentVar.2.Key=K&Container.1.EnvironmentVar.2.FieldRef.FieldPath=status.podIP")
	f.Add("Container.001.Name=x&Container.99999999.Image=y&Volume.1.Type=ConfigFileVolume&Volume.1.ConfigFileVolume.ConfigFileToPath.1.Content=%%%")
	f.Add("UpdateType=IncrementalUpdate&Container.1.Name=a&Container.1.EnvironmentVar.1=K%3DV&Container.1.Port.1=80%2FTCP&Container.1.VolumeMount.1=%7B%22Name%22%3A%22v%22%7D")
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		m, perr := parseParams(q)
		if perr != nil {
			if perr.Code == "" || perr.Status != 400 {
				t.Fatalf("bad error %+v", perr)
			}
			return
		}
		p := newParams(m)
		req := decodeCreate(p)
		if p.err != nil {
			if p.err.Code == "" || p.err.Status < 400 {
				t.Fatalf("bad error %+v", p.err)
			}
			return
		}
		_ = req.Validate()
		_ = listFilter(newParams(m))
		_ = decodeCacheRequest(newParams(m), false)
		up := newParams(m)
		if ur := decodeUpdate(up); up.err == nil {
			_ = ur
		} else if up.err.Code == "" || up.err.Status < 400 {
			t.Fatalf("bad update error %+v", up.err)
		}
	})
}

func TestDecodeFlattened(t *testing.T) {
	q, _ := url.ParseQuery("ContainerGroupName=web&Container.2.Name=b&Container.2.Image=busybox&Container.1.Name=a&Container.1.Image=busybox" +
		"&Container.1.Command.2=-c&Container.1.Command.1=sh&Container.1.EnvironmentVar.1.Key=A&Container.1.EnvironmentVar.1.Value=1" +
		"&Container.1.Cpu=0.5&Container.1.Memory=1.5&Tag.1.Key=k&Tag.1.Value=v&Volume.1.Name=v&Volume.1.Type=EmptyDirVolume" +
		"&Container.1.ReadinessProbe.Exec.Command.1=true&Container.1.LifecyclePreStopHandlerExec.1=sleep&Container.1.LifecyclePreStopHandlerExec.2=1")
	m, perr := parseParams(q)
	if perr != nil {
		t.Fatal(perr)
	}
	p := newParams(m)
	req := decodeCreate(p)
	if p.err != nil {
		t.Fatal(p.err)
	}
	c := req.Spec.Containers
	if len(c) != 2 || c[0].Name != "a" || c[1].Name != "b" || len(c[0].Command) != 2 || c[0].Command[0] != "sh" ||
		c[0].Resources.Limits.CPU != 500 || c[0].Resources.Limits.Memory != 1536<<20 || c[0].Env[0].Value != "1" ||
		c[0].ReadinessProbe.Exec.Command[0] != "true" || len(c[0].Lifecycle.PreStop.Exec.Command) != 2 || req.Spec.Tags["k"] != "v" {
		t.Fatalf("decoded %+v", req)
	}
	for _, bad := range []string{"Container.1.Cpu=abc", "Container.1.Cpu=NaN", "Container.1.Port.1.Port=70000", "Container.1.Tty=maybe",
		"RestartPolicy=Sometimes", "Container.1.Image=x&Container.1.Name=a&Container.1.Name=b", "ActiveDeadlineSeconds=-1"} {
		q, _ := url.ParseQuery("ContainerGroupName=x&Container.1.Name=a&Container.1.Image=busybox&" + bad)
		m, perr := parseParams(q)
		if perr != nil {
			continue
		}
		p := newParams(m)
		decodeCreate(p)
		if p.err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
