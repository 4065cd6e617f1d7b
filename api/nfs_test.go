package api

import (
	"strings"
	"testing"
)

func TestValidateNFSVolume(t *testing.T) {
	tests := []struct {
		server, path string
		want         string // substring of the error; "" means valid
	}{
		{"nas.example.com", "/share", ""},
		{"10.0.0.9", "/", ""},
		{"fd00::9", "/export/data", ""},
		{"0a1b2c-xyz.cn-hangzhou.nas.aliyuncs.com", "/share/team-a", ""},
		{"", "/share", "nfs.server"},
		{"nas.example.com:2049", "/share", "nfs.server"},
		{"nas example", "/share", "nfs.server"},
		{"-oro", "/share", "nfs.server"},
		{"nas..example", "/share", "nfs.server"},
		{"nas.example.com/x", "/share", "nfs.server"},
		{strings.Repeat("a", 64) + ".com", "/share", "nfs.server"},
		{"nas", "share", "nfs.path"},
		{"nas", "", "nfs.path"},
		{"nas", "/a/../b", "nfs.path"},
		{"nas", "/a/", "nfs.path"},
		{"nas", "/a\x00b", "nfs.path"},
		{"nas", "/" + strings.Repeat("a", MaxNFSPath), "nfs.path"},
	}
	for _, tt := range tests {
		r := CreateGroupRequest{Name: "web", Spec: GroupSpec{
			Containers: []Container{{Name: "web", Image: "busybox", VolumeMounts: []VolumeMount{{Name: "data", MountPath: "/data"}}}},
			Volumes:    []Volume{{Name: "data", NFS: &NFSVolume{Server: tt.server, Path: tt.path}}},
		}}
		err := r.Validate()
		if tt.want == "" {
			if err != nil {
				t.Errorf("%q %q: want valid, got %v", tt.server, tt.path, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q %q: want error containing %q, got %v", tt.server, tt.path, tt.want, err)
		}
	}
	r := CreateGroupRequest{Name: "web", Spec: GroupSpec{
		Containers: []Container{{Name: "web", Image: "busybox"}},
		Volumes:    []Volume{{Name: "data", NFS: &NFSVolume{Server: "nas", Path: "/x"}, EmptyDir: &EmptyDirVolume{}}},
	}}
	if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "exactly one") {
		t.Errorf("nfs and emptyDir: %v", err)
	}
}
