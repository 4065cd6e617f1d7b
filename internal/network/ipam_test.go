package network

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

func mustIPAM(t testing.TB, cidr, dir string) *ipam {
	t.Helper()
	p, skipped, err := newIPAM(netip.MustParsePrefix(cidr), dir)
	if err != nil {
		t.Fatal(err)
	}
	if skipped > 0 {
		t.Fatalf("%d journal lines skipped", skipped)
	}
	t.Cleanup(func() { p.close() })
	return p
}

func TestParseCIDR(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"10.88.0.0/20", true},
		{"10.244.3.0/24", true},
		{" 10.88.0.0/16 ", true},
		{"10.0.0.0/8", true},
		{"192.168.0.0/30", true},
		{"", false},
		{"10.88.0.0", false},
		{"10.88.0.1/20", false}, // host bits
		{"10.88.0.0/31", false}, // no room
		{"10.88.0.0/32", false}, // no room
		{"8.0.0.0/7", false},    // too big
		{"fd00::/64", false},    // IPv6
		{"::ffff:10.0.0.0/104", false},
		{"127.0.0.0/8", false},
		{"169.254.0.0/24", false}, // gateway block
		{"169.0.0.0/8", false},    // overlaps the gateway block
		{"224.0.0.0/8", false},
		{"0.0.0.0/8", false},
		{"10.88.0.0/-1", false},
		{"10.88.0.0/33", false},
		{"10.88.0.0/2a", false},
	} {
		_, err := parseCIDR(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("parseCIDR(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("parseCIDR(%q) error %v is not ErrInvalid", tc.in, err)
		}
	}
}

func FuzzParseCIDR(f *testing.F) {
	for _, s := range []string{"10.88.0.0/20", "10.88.0.1/20", "fd00::/8", "1.2.3.4", "/", "0/0", "255.255.255.252/30"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parseCIDR(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if !p.Addr().Is4() || p.Masked() != p || p.Bits() < 8 || p.Bits() > 30 {
			t.Fatalf("accepted %q as %v", s, p)
		}
		// Whatever is accepted must make a working allocator.
		ip, _, err := newIPAM(p, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		a, err := ip.allocate("x", "")
		if err != nil || !p.Contains(a.IP) {
			t.Fatalf("allocate in %v: %v %v", p, a, err)
		}
	})
}

// reserved reports whether ip is one of the addresses never handed out.
func reserved(p netip.Prefix, ip netip.Addr) bool {
	off := u32(ip) - u32(p.Addr())
	size := uint32(1) << (32 - p.Bits())
	return off == 0 || off == 1 || off == size-1
}

func TestIPAMExhaustAndRecycle(t *testing.T) {
	const cidr = "10.88.0.0/20" // 4096 addresses, 4093 usable
	pfx := netip.MustParsePrefix(cidr)
	dir := t.TempDir()
	p := mustIPAM(t, cidr, dir)

	seen := map[netip.Addr]string{}
	for i := 0; i < 4093; i++ {
		id := fmt.Sprintf("sb-%d", i)
		a, err := p.allocate(id, "")
		if err != nil {
			t.Fatalf("alloc %d: %v", i, err)
		}
		if !pfx.Contains(a.IP) || reserved(pfx, a.IP) {
			t.Fatalf("alloc %d: bad address %s", i, a.IP)
		}
		if other, dup := seen[a.IP]; dup {
			t.Fatalf("%s given to %s and %s", a.IP, other, id)
		}
		seen[a.IP] = id
	}
	if _, err := p.allocate("one-too-many", ""); !errors.Is(err, ErrExhausted) {
		t.Fatalf("alloc on full range: %v, want ErrExhausted", err)
	}
	// Idempotent: an existing owner gets its address even when full.
	if a, err := p.allocate("sb-7", ""); err != nil || seen[a.IP] != "sb-7" {
		t.Fatalf("re-alloc sb-7: %v %v", a, err)
	}

	// Release 1000 and take 1000 more: exactly the released set comes back.
	freed := map[netip.Addr]bool{}
	for i := 0; i < 4093; i += 4 {
		id := fmt.Sprintf("sb-%d", i)
		freed[p.get(id).IP] = true
		if err := p.release(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.release("never-allocated"); err != nil {
		t.Fatal(err)
	}
	n := len(freed)
	for i := 0; i < n; i++ {
		a, err := p.allocate(fmt.Sprintf("new-%d", i), "")
		if err != nil {
			t.Fatalf("realloc %d: %v", i, err)
		}
		if !freed[a.IP] {
			t.Fatalf("realloc %d got %s, which was not free", i, a.IP)
		}
		delete(freed, a.IP)
	}
	if _, err := p.allocate("one-too-many", ""); !errors.Is(err, ErrExhausted) {
		t.Fatalf("alloc on full range: %v, want ErrExhausted", err)
	}

	// The state on disk says the same.
	q := mustIPAM(t, cidr, dir)
	if len(q.byID) != 4093 || q.nfree != 0 {
		t.Fatalf("reloaded: %d claims, %d free", len(q.byID), q.nfree)
	}
	for id, a := range p.byID {
		if b := q.get(id); b == nil || b.IP != a.IP {
			t.Fatalf("reloaded %s: %v, want %s", id, b, a.IP)
		}
	}
}

func TestIPAMRoundRobin(t *testing.T) {
	p := mustIPAM(t, "10.88.0.0/24", t.TempDir())
	a, _ := p.allocate("a", "")
	if err := p.release("a"); err != nil {
		t.Fatal(err)
	}
	b, _ := p.allocate("b", "")
	if a.IP == b.IP {
		t.Fatalf("released %s handed out again at once", a.IP)
	}
	if a.IP != netip.MustParseAddr("10.88.0.2") || b.IP != netip.MustParseAddr("10.88.0.3") {
		t.Fatalf("got %s then %s, want 10.88.0.2 then 10.88.0.3", a.IP, b.IP)
	}
}

func TestIPAMSmallestRange(t *testing.T) {
	p := mustIPAM(t, "10.88.0.0/30", t.TempDir())
	a, err := p.allocate("a", "")
	if err != nil || a.IP != netip.MustParseAddr("10.88.0.2") {
		t.Fatalf("got %v %v", a, err)
	}
	if _, err := p.allocate("b", ""); !errors.Is(err, ErrExhausted) {
		t.Fatalf("second alloc in /30: %v", err)
	}
}

func TestIPAMPersistAndTornJournal(t *testing.T) {
	dir := t.TempDir()
	p := mustIPAM(t, "10.88.0.0/24", dir)
	a, _ := p.allocate("a", "/run/netns/a")
	a.Ports = []Port{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}}
	if err := p.update(a); err != nil {
		t.Fatal(err)
	}
	b, _ := p.allocate("b", "/run/netns/b")
	if _, err := p.allocate("c", ""); err != nil {
		t.Fatal(err)
	}
	if err := p.release("c"); err != nil {
		t.Fatal(err)
	}
	p.close()

	// What a crash or a bad disk may leave: a line with a bad checksum in
	// the middle, a claim on a reserved address, a torn last line.
	j := filepath.Join(dir, journalName)
	data, _ := os.ReadFile(j)
	f, _ := os.OpenFile(j, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("deadbeef {\"op\":\"set\",\"id\":\"x\",\"ip\":\"10.88.0.50\"}\n")
	good, _ := appendRecord(nil, "set", &allocation{ID: "y", IP: netip.MustParseAddr("10.88.0.60")})
	f.Write(good)
	bcast, _ := appendRecord(nil, "set", &allocation{ID: "z", IP: netip.MustParseAddr("10.88.0.255")})
	f.Write(bcast)
	dupIP, _ := appendRecord(nil, "set", &allocation{ID: "w", IP: b.IP})
	f.Write(dupIP)
	torn, _ := appendRecord(nil, "set", &allocation{ID: "t", IP: netip.MustParseAddr("10.88.0.70")})
	f.Write(torn[:len(torn)/2])
	f.Close()

	q, skipped, err := newIPAM(netip.MustParsePrefix("10.88.0.0/24"), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()
	if skipped != 4 {
		t.Fatalf("skipped %d lines, want 4 (%d bytes of good journal before)", skipped, len(data))
	}
	if got := q.get("a"); got == nil || got.IP != a.IP || got.NetNS != "/run/netns/a" || len(got.Ports) != 1 || got.Ports[0].HostPort != 8080 {
		t.Fatalf("a reloaded as %+v", got)
	}
	if got := q.get("b"); got == nil || got.IP != b.IP {
		t.Fatalf("b reloaded as %+v", got)
	}
	if got := q.get("y"); got == nil || got.IP.String() != "10.88.0.60" {
		t.Fatalf("y (after the bad line) reloaded as %+v", got)
	}
	for _, id := range []string{"c", "x", "z", "w", "t"} {
		if q.get(id) != nil {
			t.Fatalf("%s should not be claimed", id)
		}
	}
	if q.nfree != 256-3-3 {
		t.Fatalf("nfree = %d", q.nfree)
	}
	// Loading compacted the journal: one line per claim, all valid.
	q.close()
	r := mustIPAM(t, "10.88.0.0/24", dir)
	if len(r.byID) != 3 || r.lines != 3 {
		t.Fatalf("after compaction: %d claims, %d lines", len(r.byID), r.lines)
	}
}

func TestIPAMCompaction(t *testing.T) {
	dir := t.TempDir()
	p := mustIPAM(t, "10.88.0.0/24", dir)
	keep, _ := p.allocate("keep", "")
	for i := 0; i < 5000; i++ {
		id := fmt.Sprintf("churn-%d", i)
		if _, err := p.allocate(id, ""); err != nil {
			t.Fatal(err)
		}
		if err := p.release(id); err != nil {
			t.Fatal(err)
		}
	}
	if p.lines > 2*len(p.byID)+1024+1 {
		t.Fatalf("journal not compacted: %d lines", p.lines)
	}
	p.close()
	q := mustIPAM(t, "10.88.0.0/24", dir)
	if len(q.byID) != 1 || q.get("keep").IP != keep.IP {
		t.Fatalf("after churn: %v", q.byID)
	}
}

func BenchmarkIPAMAllocRelease(b *testing.B) {
	p := mustIPAM(b, "10.88.0.0/20", b.TempDir())
	// Keep the range 3/4 full so the search has to skip used words.
	for i := 0; i < 3000; i++ {
		if _, err := p.allocate(fmt.Sprintf("base-%d", i), ""); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("b-%d", i)
		if _, err := p.allocate(id, "/run/netns/x"); err != nil {
			b.Fatal(err)
		}
		if err := p.release(id); err != nil {
			b.Fatal(err)
		}
	}
}
