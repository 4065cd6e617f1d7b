package kubelet

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestTranslateNFSVolume(t *testing.T) {
	p := testPod()
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "share", VolumeSource: corev1.VolumeSource{
		NFS: &corev1.NFSVolumeSource{Server: "nas.example.com", Path: "/exports/team", ReadOnly: true}}})
	p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "share", MountPath: "/share"})
	tr := &translator{node: "vn", src: fakeSources{cms: map[string]*corev1.ConfigMap{"ns/cm": {Data: map[string]string{"k": "v"}}}}}
	req, err := tr.group(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := req.Validate(); err != nil {
		t.Fatalf("skiff rejects the translation: %v", err)
	}
	v := req.Spec.Volumes[len(req.Spec.Volumes)-1]
	if v.NFS == nil || v.NFS.Server != "nas.example.com" || v.NFS.Path != "/exports/team" || !v.NFS.ReadOnly {
		t.Fatalf("nfs volume: %+v", v)
	}
}
