package api

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestImageCacheRequestValidate(t *testing.T) {
	two := 2
	neg := -1
	for _, tc := range []struct {
		name   string
		req    ImageCacheRequest
		update bool
		bad    string
	}{
		{"ok", ImageCacheRequest{Name: "warm", Images: []string{"reg.local:5000/app:1", "busybox"}, Hosts: &two}, false, ""},
		{"no images", ImageCacheRequest{Name: "warm"}, false, "at least one image"},
		{"bad name", ImageCacheRequest{Name: "Warm!", Images: []string{"busybox"}}, false, "name"},
		{"bad ref", ImageCacheRequest{Name: "w", Images: []string{"not a ref"}}, false, "images[0]"},
		{"twice", ImageCacheRequest{Name: "w", Images: []string{"busybox", "busybox"}}, false, "twice"},
		{"bad hosts", ImageCacheRequest{Name: "w", Images: []string{"busybox"}, Hosts: &neg}, false, "hosts"},
		{"bad server", ImageCacheRequest{Name: "w", Images: []string{"busybox"}, ImageRegistryCredentials: []ImageRegistryCredential{{Server: "https://x/y", UserName: "u"}}}, false, "server"},
		{"no user", ImageCacheRequest{Name: "w", Images: []string{"busybox"}, ImageRegistryCredentials: []ImageRegistryCredential{{Server: "x:5000"}}}, false, "userName"},
		{"bad insecure", ImageCacheRequest{Name: "w", Images: []string{"busybox"}, InsecureRegistries: []string{"a b"}}, false, "insecureRegistries"},
		{"partial update", ImageCacheRequest{Hosts: &two}, true, ""},
	} {
		err := tc.req.Validate(tc.update)
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.bad)
		}
	}
}

func TestRedactedHidesPasswords(t *testing.T) {
	g := &Group{ID: "g", Spec: GroupSpec{ImageRegistryCredentials: []ImageRegistryCredential{{Server: "r:5000", UserName: "u", Password: "pw-123"}}}}
	b, _ := json.Marshal(g.Redacted())
	if strings.Contains(string(b), "pw-123") || !strings.Contains(string(b), RedactedPassword) || !strings.Contains(string(b), `"userName":"u"`) {
		t.Errorf("redacted: %s", b)
	}
	if g.Spec.ImageRegistryCredentials[0].Password != "pw-123" {
		t.Error("Redacted changed the original")
	}
	c := &ImageCache{ImageRegistryCredentials: g.Spec.ImageRegistryCredentials}
	if c.Redacted().ImageRegistryCredentials[0].Password != RedactedPassword {
		t.Error("cache not redacted")
	}
}
