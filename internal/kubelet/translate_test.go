package kubelet

import (
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiffhq/skiff/api"
)

type fakeSources struct {
	cms  map[string]*corev1.ConfigMap
	secs map[string]*corev1.Secret
}

var errMissing = errors.New("not found")

func (f fakeSources) configMap(ns, name string) (*corev1.ConfigMap, error) {
	if cm, ok := f.cms[ns+"/"+name]; ok {
		return cm, nil
	}
	return nil, errMissing
}

func (f fakeSources) secret(ns, name string) (*corev1.Secret, error) {
	if s, ok := f.secs[ns+"/"+name]; ok {
		return s, nil
	}
	return nil, errMissing
}

func (f fakeSources) token(pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection) (string, error) {
	return "tok-" + pod.Name + "-" + src.Audience, nil
}

func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "ns", UID: "1234-abcd", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyAlways,
			Containers: []corev1.Container{{
				Name: "c", Image: "busybox", Command: []string{"sleep", "1"},
				Ports:     []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("64Mi")}},
				Env: []corev1.EnvVar{
					{Name: "A", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}, Key: "k"}}},
					{Name: "B", Value: "$(A)-$(NOPE)-$$"},
					{Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					{Name: "MEM", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
					{Name: "CPU", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu", Divisor: resource.MustParse("1m")}}},
				},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstrName("http")}}},
			}},
			Volumes: []corev1.Volume{{Name: "tok", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", Audience: "aud"}},
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}},
			}}}}},
		},
	}
}

func TestTranslate(t *testing.T) {
	tr := &translator{node: "vn", src: fakeSources{cms: map[string]*corev1.ConfigMap{"ns/cm": {Data: map[string]string{"k": "v"}}}}}
	req, err := tr.group(testPod())
	if err != nil {
		t.Fatal(err)
	}
	if req.Name != "k8s-1234-abcd" || req.ClientToken != "1234-abcd" || req.Labels[LabelUID] != "1234-abcd" || req.Labels[LabelNode] != "vn" {
		t.Errorf("identity: %s %s %v", req.Name, req.ClientToken, req.Labels)
	}
	if err := req.Validate(); err != nil {
		t.Errorf("skiff rejects the translation: %v", err)
	}
	env := map[string]api.EnvVar{}
	for _, e := range req.Spec.Containers[0].Env {
		env[e.Name] = e
	}
	for k, want := range map[string]string{"A": "v", "B": "v-$(NOPE)-$", "MEM": "64", "CPU": "500"} {
		if env[k].Value != want {
			t.Errorf("env %s = %q, want %q", k, env[k].Value, want)
		}
	}
	if ip := env["IP"]; ip.ValueFrom == nil || ip.ValueFrom.FieldRef.FieldPath != "status.podIP" {
		t.Errorf("IP env: %+v", ip)
	}
	if p := req.Spec.Containers[0].ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Port != 8080 {
		t.Errorf("probe port not resolved: %+v", p)
	}
	v := req.Spec.Volumes[0].ConfigFile
	if v == nil || len(v.Items) != 2 || v.Items[0].Path != "k" || v.Items[1].Content != "tok-web-1-aud" {
		t.Errorf("projected volume: %+v", v)
	}
}

func intstrName(s string) intstr.IntOrString { return intstr.FromString(s) }

func TestUnsupported(t *testing.T) {
	for name, mut := range map[string]func(*corev1.Pod){
		"hostNetwork": func(p *corev1.Pod) { p.Spec.HostNetwork = true },
		"pvc": func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "x"}}})
		},
		"grpc probe": func(p *corev1.Pod) {
			p.Spec.Containers[0].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 1}}}
		},
	} {
		p := testPod()
		mut(p)
		tr := &translator{node: "vn", src: fakeSources{cms: map[string]*corev1.ConfigMap{"ns/cm": {Data: map[string]string{"k": "v"}}}}}
		_, err := tr.group(p)
		if !errors.Is(err, errUnsupported) {
			t.Errorf("%s: err %v, want unsupported", name, err)
		}
	}
	// A missing ConfigMap is not "unsupported": it is retried.
	tr := &translator{node: "vn", src: fakeSources{}}
	if _, err := tr.group(testPod()); err == nil || errors.Is(err, errUnsupported) {
		t.Errorf("missing configMap: %v", err)
	}
}

func TestPodStatus(t *testing.T) {
	pod := testPod()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	zero, three := 0, 3
	started := now.Add(-time.Minute)
	for _, tc := range []struct {
		g     api.Group
		phase corev1.PodPhase
		ready bool
	}{
		{api.Group{Status: api.StatusScheduling}, corev1.PodPending, false},
		{api.Group{Status: api.StatusRunning, IP: "10.0.0.5", Containers: []api.ContainerStatus{{Name: "c", State: api.ContainerRunning, Ready: true, StartedAt: &started}}}, corev1.PodRunning, true},
		{api.Group{Status: api.StatusSucceeded, Containers: []api.ContainerStatus{{Name: "c", State: api.ContainerTerminated, ExitCode: &zero}}}, corev1.PodSucceeded, false},
		{api.Group{Status: api.StatusFailed, Containers: []api.ContainerStatus{{Name: "c", State: api.ContainerTerminated, ExitCode: &three, RestartCount: 2}}}, corev1.PodFailed, false},
	} {
		st := podStatus(pod, &tc.g, "192.0.2.9", now)
		if st.Phase != tc.phase {
			t.Errorf("%s: phase %s, want %s", tc.g.Status, st.Phase, tc.phase)
		}
		ready := false
		for _, c := range st.Conditions {
			if c.Type == corev1.PodReady {
				ready = c.Status == corev1.ConditionTrue
			}
		}
		if ready != tc.ready {
			t.Errorf("%s: ready %v", tc.g.Status, ready)
		}
		if tc.g.Status == api.StatusFailed {
			cs := st.ContainerStatuses[0]
			if cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 3 || cs.State.Terminated.Reason != "Error" || cs.RestartCount != 2 {
				t.Errorf("failed container: %+v", cs)
			}
		}
		// The same group again is no change: no needless status write.
		pod2 := pod.DeepCopy()
		pod2.Status = st
		if again := podStatus(pod2, &tc.g, "192.0.2.9", now.Add(time.Minute)); !statusEqual(&again, &pod2.Status) {
			t.Errorf("%s: status not stable", tc.g.Status)
		}
	}
}
