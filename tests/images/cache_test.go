package images

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/image/registrytest"
)

func busyboxGroup(name, image string) api.CreateGroupRequest {
	grace := int64(1)
	return api.CreateGroupRequest{Name: name, Spec: api.GroupSpec{
		Containers: []api.Container{{Name: "c", Image: image, Command: []string{"sleep", "1000"}}},
		CPU:        api.CPU(100), Memory: api.Quantity(64 << 20),
		TerminationGracePeriodSeconds: &grace,
	}}
}

func hasEvent(evs []api.Event, reason, contains string) bool {
	for _, e := range evs {
		if e.Reason == reason && strings.Contains(e.Message, contains) {
			return true
		}
	}
	return false
}

// TestImageCacheStartsWithoutRegistry is the whole story: pull with the
// CLI, create a cache on one of two hosts, and start a group from it with
// no request reaching the registry; plus pull failures on groups,
// credentials that never come back out of the API, and cache deletion.
func TestImageCacheStartsWithoutRegistry(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	bb := registrytest.Busybox(t)
	reg.Push(t, "app/cached:1", bb)
	reg.Push(t, "app/pulled:1", bb)
	cl := newCluster(t, "--insecure-registry", reg.Host)
	ctx := context.Background()

	// skiff image pull: progress, then one line per host.
	out, err := cl.cli("", "image", "pull", reg.Ref("app/pulled:1"))
	if err != nil || strings.Count(out, "on host") != 2 {
		t.Fatalf("image pull: %v\n%s", err, out)
	}
	out, err = cl.cli("", "image", "pull", "-o", "json", reg.Ref("app/nope:1"))
	if err == nil || !strings.Contains(out, "ImageNotFound") {
		t.Errorf("pull of a missing image: %v\n%s", err, out)
	}

	// A cache on one of the two hosts.
	out, err = cl.cli("", "cache", "create", "warm", reg.Ref("app/cached:1"), "--hosts", "1", "--retention-days", "7", "--wait", "60s", "-o", "json")
	if err != nil {
		t.Fatalf("cache create: %v\n%s", err, out)
	}
	var ic api.ImageCache
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &ic); err != nil {
		t.Fatalf("cache create output: %v\n%s", err, out)
	}
	if ic.Status != api.ImageCacheReady || ic.Size == 0 || len(ic.HostStates) != 1 || ic.ExpiresAt == nil {
		t.Fatalf("cache: %+v", ic)
	}
	cacheHost := ic.HostStates[0].HostID

	// A group of the cached image: matched, placed on the cache's host,
	// started with no registry request at all.
	mark := reg.Mark()
	g, _, err := cl.c.CreateGroup(ctx, busyboxGroup("from-cache", reg.Ref("app/cached:1")))
	if err != nil {
		t.Fatal(err)
	}
	if g.Spec.ImageCacheID != ic.ID {
		t.Errorf("not matched to the cache: %q", g.Spec.ImageCacheID)
	}
	g = cl.waitGroup(g.ID, "Running", 60*time.Second, func(g *api.Group) bool { return g.Status == api.StatusRunning })
	if g.HostID != cacheHost {
		t.Errorf("group on %s, cache on %s", g.HostID, cacheHost)
	}
	if reqs := reg.Since(mark); len(reqs) != 0 {
		t.Errorf("a group matched to a Ready cache made %d registry requests: %+v", len(reqs), reqs)
	}
	evs, _ := cl.c.Events(ctx, g.ID)
	if !hasEvent(evs, "ImageCacheMatched", ic.ID) || !hasEvent(evs, "Pulled", "already present") {
		t.Errorf("events: %+v", evs)
	}

	// A missing image: Pending with ErrImagePull / ImagePullBackOff, and
	// registry credentials that the API never shows.
	bad := busyboxGroup("missing", reg.Ref("app/missing:1"))
	bad.Spec.ImageRegistryCredentials = []api.ImageRegistryCredential{{Server: reg.Host, UserName: "ci", Password: "very-secret-pw"}}
	bg, _, err := cl.c.CreateGroup(ctx, bad)
	if err != nil {
		t.Fatal(err)
	}
	bg = cl.waitGroup(bg.ID, "ErrImagePull", 30*time.Second, func(g *api.Group) bool {
		return g.Reason == "ErrImagePull" || g.Reason == "ImagePullBackOff"
	})
	if bg.Status != api.StatusPending || !strings.Contains(bg.Message, "ImageNotFound") {
		t.Errorf("missing image: %s %s %s", bg.Status, bg.Reason, bg.Message)
	}
	raw, _ := cl.cli("", "inspect", bg.ID)
	list, _ := cl.cli("", "ps", "-a", "-o", "json")
	if strings.Contains(raw+list, "very-secret-pw") || !strings.Contains(raw, api.RedactedPassword) {
		t.Errorf("credentials leak through the API:\n%s", raw)
	}
	evs, _ = cl.c.Events(ctx, bg.ID)
	if !hasEvent(evs, "Failed", "not found") {
		t.Errorf("events: %+v", evs)
	}

	// Bad input is refused with a clear error.
	if _, err := cl.cli("", "cache", "create", "bad", "not a ref"); err == nil {
		t.Error("a cache of a bad reference was created")
	}
	pinned := busyboxGroup("pinned", reg.Ref("app/cached:1"))
	pinned.Spec.ImageCacheID = "imc-nosuchcache"
	if _, _, err := cl.c.CreateGroup(ctx, pinned); err == nil {
		t.Error("a group pinned to a missing cache was created")
	}

	// Delete: the cache goes, and its host lets go of the pin.
	if out, err := cl.cli("", "cache", "rm", "--wait", "30s", "warm"); err != nil {
		t.Fatalf("cache rm: %v\n%s", err, out)
	}
	if _, err := cl.c.GetImageCache(ctx, ic.ID); err == nil {
		t.Error("the cache is still there")
	}
	if out, _ := cl.cli("", "cache", "ls"); strings.Contains(out, "warm") {
		t.Errorf("cache ls after rm:\n%s", out)
	}
}
