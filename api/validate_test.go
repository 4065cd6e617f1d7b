package api

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestValidateCreate(t *testing.T) {
	ok := func() CreateGroupRequest {
		return CreateGroupRequest{Name: "web", Spec: GroupSpec{Containers: []Container{{Name: "web", Image: "busybox"}}}}
	}
	tests := []struct {
		name   string
		mutate func(r *CreateGroupRequest)
		want   string // substring of the error; "" means valid
	}{
		{"minimal", func(r *CreateGroupRequest) {}, ""},
		{"no containers", func(r *CreateGroupRequest) { r.Spec.Containers = nil }, "at least one container"},
		{"bad name", func(r *CreateGroupRequest) { r.Name = "Web_1" }, "name"},
		{"negative cpu", func(r *CreateGroupRequest) { r.Spec.CPU = -1000 }, "spec.cpu"},
		{"huge memory", func(r *CreateGroupRequest) { r.Spec.Memory = MustQuantity("1Pi") }, "spec.memory"},
		{"tiny memory", func(r *CreateGroupRequest) { r.Spec.Memory = 1024 }, "at least"},
		{"too many containers", func(r *CreateGroupRequest) {
			for i := 0; i < 10000; i++ {
				r.Spec.Containers = append(r.Spec.Containers, Container{Name: "c", Image: "busybox"})
			}
		}, "at most 20"},
		{"duplicate container", func(r *CreateGroupRequest) {
			r.Spec.Containers = append(r.Spec.Containers, Container{Name: "web", Image: "busybox"})
		}, "duplicate container name"},
		{"bad image", func(r *CreateGroupRequest) { r.Spec.Containers[0].Image = "UPPER/../x" }, "not a valid reference"},
		{"image with registry and digest", func(r *CreateGroupRequest) {
			r.Spec.Containers[0].Image = "registry.local:5000/team/app@sha256:" + strings.Repeat("a", 64)
		}, ""},
		{"undeclared volume", func(r *CreateGroupRequest) {
			r.Spec.Containers[0].VolumeMounts = []VolumeMount{{Name: "data", MountPath: "/data"}}
		}, "not declared"},
		{"relative mount", func(r *CreateGroupRequest) {
			r.Spec.Volumes = []Volume{{Name: "data", EmptyDir: &EmptyDirVolume{}}}
			r.Spec.Containers[0].VolumeMounts = []VolumeMount{{Name: "data", MountPath: "data"}}
		}, "must be absolute"},
		{"volume with two sources", func(r *CreateGroupRequest) {
			r.Spec.Volumes = []Volume{{Name: "data", EmptyDir: &EmptyDirVolume{}, HostPath: &HostPathVolume{Path: "/x"}}}
		}, "exactly one"},
		{"host port twice", func(r *CreateGroupRequest) {
			r.Spec.Containers[0].Ports = []ContainerPort{{ContainerPort: 80, HostPort: 8080}, {ContainerPort: 81, HostPort: 8080}}
		}, "published twice"},
		{"probe without action", func(r *CreateGroupRequest) { r.Spec.Containers[0].LivenessProbe = &Probe{} }, "exactly one of exec"},
		{"bad restart policy", func(r *CreateGroupRequest) { r.Spec.RestartPolicy = "Sometimes" }, "restartPolicy"},
		{"container limits over group", func(r *CreateGroupRequest) {
			r.Spec.CPU = 500
			r.Spec.Containers[0].Resources.Limits.CPU = 1000
		}, "exceed the group's cpu"},
		{"bad env name", func(r *CreateGroupRequest) { r.Spec.Containers[0].Env = []EnvVar{{Name: "A=B"}} }, "not a valid variable name"},
		{"config file escape", func(r *CreateGroupRequest) {
			r.Spec.Volumes = []Volume{{Name: "cfg", ConfigFile: &ConfigFileVolume{Items: []ConfigFileItem{{Path: "../etc/passwd"}}}}}
		}, "without '..'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ok()
			tt.mutate(&r)
			err := r.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want error containing %q, got %v", tt.want, err)
			}
		})
	}
}

func TestValidateDefaultsRestartPolicy(t *testing.T) {
	r := CreateGroupRequest{Spec: GroupSpec{Containers: []Container{{Name: "a", Image: "busybox"}}}}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if r.Spec.RestartPolicy != RestartAlways {
		t.Fatalf("restartPolicy defaulted to %q, want Always", r.Spec.RestartPolicy)
	}
}

func TestQuantityJSON(t *testing.T) {
	tests := []struct {
		in   string
		want Quantity
		bad  bool
	}{
		{`"256Mi"`, 256 << 20, false},
		{`"1Gi"`, 1 << 30, false},
		{`"1.5Gi"`, 3 << 29, false},
		{`"2G"`, 2e9, false},
		{`1048576`, 1 << 20, false},
		{`"-1Mi"`, 0, true},
		{`"lots"`, 0, true},
		{`-5`, 0, true},
		{`"1e400"`, 0, true},
	}
	for _, tt := range tests {
		var q Quantity
		err := json.Unmarshal([]byte(tt.in), &q)
		if (err != nil) != tt.bad {
			t.Errorf("%s: err=%v, want bad=%v", tt.in, err, tt.bad)
			continue
		}
		if !tt.bad && q != tt.want {
			t.Errorf("%s: got %d, want %d", tt.in, q, tt.want)
		}
	}
}

func TestCPUJSON(t *testing.T) {
	for in, want := range map[string]CPU{`0.5`: 500, `"250m"`: 250, `"2"`: 2000, `1`: 1000} {
		var c CPU
		if err := json.Unmarshal([]byte(in), &c); err != nil || c != want {
			t.Errorf("%s: got %d err %v, want %d", in, c, err, want)
		}
	}
	for _, in := range []string{`"-1"`, `"x"`, `1e9`} {
		var c CPU
		if err := json.Unmarshal([]byte(in), &c); err == nil {
			t.Errorf("%s: want an error", in)
		}
	}
}

func FuzzParseQuantity(f *testing.F) {
	for _, s := range []string{"1", "256Mi", "1.5Gi", "-1", "1e308", "Ki", "0x10", "9999999999999999999Ei"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := ParseQuantity(s)
		if err == nil && q < 0 {
			t.Fatalf("ParseQuantity(%q) = %d, negative without error", s, q)
		}
		_, _ = ParseCPU(s)
		_ = ValidateImageRef(s)
	})
}
