package network

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// Concurrent removals are reaped in groups: every veth asked for goes,
// its peer with it, a missing one is no error, and a bystander link is
// left alone.
func TestPrivilegedReapVethsBatched(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	const n = 60
	prefix := fmt.Sprintf("skr%d", os.Getpid()%10000)
	name := func(side string, i int) string { return fmt.Sprintf("%s%s%d", prefix, side, i) }
	t.Cleanup(func() {
		for i := 0; i < n; i++ {
			if l, err := netlink.LinkByName(name("a", i)); err == nil {
				_ = netlink.LinkDel(l)
			}
		}
		if l, err := netlink.LinkByName(name("x", 0)); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	add := func(a, b string) {
		t.Helper()
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b}); err != nil {
			t.Fatalf("add veth %s: %v", a, err)
		}
	}
	for i := 0; i < n; i++ {
		add(name("a", i), name("b", i))
	}
	add(name("x", 0), name("y", 0)) // a bystander, never removed
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n+1)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs <- removeVeth(name("a", i))
		}(i)
	}
	wg.Add(1)
	go func() { defer wg.Done(); errs <- removeVeth(prefix + "nope") }()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("removeVeth: %v", err)
		}
	}
	t.Logf("%d veths removed in %v", n, time.Since(start))
	for i := 0; i < n; i++ {
		for _, side := range []string{"a", "b"} {
			if _, err := netlink.LinkByName(name(side, i)); err == nil {
				t.Errorf("%s still exists", name(side, i))
			}
		}
	}
	for _, side := range []string{"x", "y"} {
		if _, err := netlink.LinkByName(name(side, 0)); err != nil {
			t.Errorf("bystander %s was removed: %v", name(side, 0), err)
		}
	}
	reaper.mu.Lock()
	defer reaper.mu.Unlock()
	if reaper.running || len(reaper.pending) != 0 {
		t.Errorf("reaper left running=%v pending=%d", reaper.running, len(reaper.pending))
	}
}
