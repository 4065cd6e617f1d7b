package network

// Privileged tests: they need root, create network namespaces, veths and
// iptables chains, and remove all of them with t.Cleanup. Every address
// they talk to lives on this host or in a namespace they created.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func requirePrivileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("privileged test: needs root")
	}
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		t.Skip("privileged test: needs iptables")
	}
}

func randInt(n int64) int {
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		panic(err)
	}
	return int(v.Int64())
}

func randID(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// testCIDR picks a /24 in 10.244.0.0/16 that no route on the host uses yet,
// so tests running at the same time do not share a range.
func testCIDR(t testing.TB) string {
	t.Helper()
	for range 50 {
		cidr := fmt.Sprintf("10.244.%d.0/24", randInt(256))
		_, ipnet, _ := net.ParseCIDR(cidr)
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		used := false
		for _, r := range routes {
			if r.Dst != nil && ipnet.Contains(r.Dst.IP) {
				used = true
				break
			}
		}
		if !used {
			return cidr
		}
	}
	t.Fatal("no free test range")
	return ""
}

func newTestManager(t testing.TB, cidr, stateDir string, nat bool) *Manager {
	t.Helper()
	m, err := New(Config{StateDir: stateDir, CIDR: cidr, NAT: nat})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		for id := range m.Allocated() {
			if err := m.Detach(ctx, id); err != nil {
				t.Errorf("cleanup detach %s: %v", id, err)
			}
		}
		if err := m.Cleanup(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		m.Close()
	})
	return m
}

// newNetNS makes a network namespace bound to a file in a temporary
// directory, the way the sandbox runtime hands them to us.
func newNetNS(t testing.TB) string {
	t.Helper()
	return newNetNSAt(t, filepath.Join(t.TempDir(), "netns"))
}

func newNetNSAt(t testing.TB, path string) string {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: it exits with the goroutine
		// instead of going back to the pool in the new namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(path, unix.MNT_DETACH) })
	return path
}

// inNS runs fn on a thread inside the namespace at path. Sockets made by
// fn stay in that namespace, whichever goroutine uses them later.
func inNS(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked, as in newNetNS
		ns, err := netns.GetFromPath(path)
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// serve listens on TCP port in the namespace at path and answers each
// connection with "<name> <remote address>\n".
func serve(t testing.TB, path, name string, port int) {
	t.Helper()
	var l net.Listener
	if err := inNS(path, func() (err error) {
		l, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", name, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr())
			c.Close()
		}
	}()
}

// ask dials addr (from the namespace at path, or from the host if path is
// "") and returns the server's name and the client address it saw.
func ask(path, addr string) (name, remote string, err error) {
	var c net.Conn
	dial := func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, 3*time.Second)
		return err
	}
	if path == "" {
		err = dial()
	} else {
		err = inNS(path, dial)
	}
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", "", err
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		return "", "", fmt.Errorf("bad answer %q", line)
	}
	host, _, _ := net.SplitHostPort(f[1])
	return f[0], host, nil
}

func mustAsk(t *testing.T, path, addr, wantName string) string {
	t.Helper()
	name, remote, err := ask(path, addr)
	if err != nil {
		t.Fatalf("dial %s from %q: %v", addr, path, err)
	}
	if name != wantName {
		t.Fatalf("dial %s from %q reached %s, want %s", addr, path, name, wantName)
	}
	return remote
}

// hostAddr returns an IPv4 address of this host that is not loopback: an
// existing one, or one on a dummy interface made for the test.
func hostAddr(t *testing.T) string {
	t.Helper()
	ifs, _ := net.Interfaces()
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || strings.HasPrefix(ifc.Name, "sk") {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() && !strings.HasPrefix(n.IP.String(), "10.244.") {
				return n.IP.String()
			}
		}
	}
	name := "sktd" + hex.EncodeToString([]byte{byte(randInt(256)), byte(randInt(256))})
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	d := &netlink.Dummy{LinkAttrs: attrs}
	if err := netlink.LinkAdd(d); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netlink.LinkDel(d) })
	ip := fmt.Sprintf("10.246.%d.1", randInt(256))
	addr, _ := netlink.ParseAddr(ip + "/32")
	if err := netlink.AddrAdd(d, addr); err != nil {
		t.Fatal(err)
	}
	netlink.LinkSetUp(d)
	return ip
}

func iptablesSave(t testing.TB, table string) string {
	t.Helper()
	out, err := exec.Command("iptables-save", "-t", table).Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestPrivilegedAttach(t *testing.T) {
	requirePrivileged(t)
	ctx := context.Background()
	cidr := testCIDR(t)
	m := newTestManager(t, cidr, t.TempDir(), true)
	ns1, ns2 := newNetNS(t), newNetNS(t)
	id1, id2 := randID("a"), randID("b")

	ip1, err := m.Attach(ctx, id1, ns1)
	if err != nil {
		t.Fatal(err)
	}
	ip2, err := m.Attach(ctx, id2, ns2)
	if err != nil {
		t.Fatal(err)
	}
	pfx := netip.MustParsePrefix(cidr)
	if ip1 == ip2 || !pfx.Contains(netip.MustParseAddr(ip1)) || !pfx.Contains(netip.MustParseAddr(ip2)) {
		t.Fatalf("addresses %s, %s in %s", ip1, ip2, cidr)
	}
	if again, err := m.Attach(ctx, id1, ns1); err != nil || again != ip1 {
		t.Fatalf("second attach: %s %v, want %s", again, err, ip1)
	}
	if got := m.Allocated(); got[id1] != ip1 || got[id2] != ip2 || len(got) != 2 {
		t.Fatalf("Allocated() = %v", got)
	}

	// Host side: veth up with proxy_arp, /32 route.
	veth := vethName(id1)
	link, err := netlink.LinkByName(veth)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile("/proc/sys/net/ipv4/conf/" + veth + "/proxy_arp"); strings.TrimSpace(string(b)) != "1" {
		t.Fatalf("proxy_arp = %q", b)
	}
	if v6, _ := netlink.AddrList(link, netlink.FAMILY_V6); len(v6) != 0 {
		t.Fatalf("host veth has IPv6 addresses %v", v6)
	}
	routes, _ := netlink.RouteGet(net.ParseIP(ip1))
	if len(routes) != 1 || routes[0].LinkIndex != link.Attrs().Index {
		t.Fatalf("route to %s: %+v", ip1, routes)
	}
	// Group side: eth0 with ip/32, lo up, default via the gateway.
	if err := inNS(ns1, func() error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addrs, _ := netlink.AddrList(eth0, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IPNet.String() != ip1+"/32" {
			return fmt.Errorf("eth0 addresses %v", addrs)
		}
		if v6, _ := netlink.AddrList(eth0, netlink.FAMILY_V6); len(v6) != 0 {
			return fmt.Errorf("eth0 has IPv6 addresses %v", v6)
		}
		lo, _ := netlink.LinkByName("lo")
		if lo.Attrs().Flags&net.FlagUp == 0 {
			return errors.New("lo down")
		}
		r, err := netlink.RouteGet(net.ParseIP("192.0.2.200"))
		if err != nil || len(r) != 1 || !r[0].Gw.Equal(gatewayIP) {
			return fmt.Errorf("default route: %+v %v", r, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Traffic: host -> group, group <-> group (no NAT between groups).
	serve(t, ns1, "g1", 8080)
	serve(t, ns2, "g2", 8080)
	mustAsk(t, "", ip1+":8080", "g1")
	if from := mustAsk(t, ns2, ip1+":8080", "g1"); from != ip2 {
		t.Fatalf("g1 saw g2 as %s, want %s", from, ip2)
	}
	if from := mustAsk(t, ns1, ip2+":8080", "g2"); from != ip1 {
		t.Fatalf("g2 saw g1 as %s, want %s", from, ip1)
	}

	// NAT: the rule is there, and works toward a network outside the range
	// (a namespace of ours behind its own veth).
	nat := iptablesSave(t, "nat")
	if !strings.Contains(nat, "-A "+m.ipt.post+" -s "+cidr+" ! -d "+cidr) || len(findJumps(nat, "POSTROUTING", m.ipt.post)) != 1 {
		t.Fatalf("NAT rules missing:\n%s", nat)
	}
	extNS := newNetNS(t)
	extHost, extPeer := extNetwork(t, extNS)
	serve(t, extNS, "ext", 9000)
	if from := mustAsk(t, ns1, extPeer+":9000", "ext"); from != extHost {
		t.Fatalf("outside saw group as %s, want the masqueraded %s", from, extHost)
	}

	// Detach removes veth (so the group's eth0) and route; twice is fine.
	if err := m.Detach(ctx, id1); err != nil {
		t.Fatal(err)
	}
	if err := m.Detach(ctx, id1); err != nil {
		t.Fatalf("second detach: %v", err)
	}
	if _, err := netlink.LinkByName(veth); err == nil {
		t.Fatal("veth still there")
	}
	if r, err := netlink.RouteGet(net.ParseIP(ip1)); err == nil && len(r) == 1 && r[0].LinkIndex == link.Attrs().Index {
		t.Fatal("route still there")
	}
	if err := inNS(ns1, func() error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			return errors.New("eth0 still in the group")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Allocated()[id1]; ok {
		t.Fatal("address still claimed")
	}
}

// extNetwork wires the namespace at path to the host as a plain routed
// /30 outside every pod range: host end 10.245.x.1, namespace end .2.
func extNetwork(t *testing.T, path string) (hostIP, nsIP string) {
	t.Helper()
	x := randInt(256)
	hostIP, nsIP = fmt.Sprintf("10.245.%d.1", x), fmt.Sprintf("10.245.%d.2", x)
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = fmt.Sprintf("skte%d", x)
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netlink.LinkDel(veth) })
	a, _ := netlink.ParseAddr(hostIP + "/30")
	if err := netlink.AddrAdd(veth, a); err != nil {
		t.Fatal(err)
	}
	netlink.LinkSetUp(veth)
	if err := inNS(path, func() error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr(nsIP + "/30")
		if err := netlink.AddrAdd(eth0, a); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(eth0); err != nil {
			return err
		}
		lo, _ := netlink.LinkByName("lo")
		return netlink.LinkSetUp(lo)
	}); err != nil {
		t.Fatal(err)
	}
	return hostIP, nsIP
}

func TestPrivilegedPublish(t *testing.T) {
	requirePrivileged(t)
	ctx := context.Background()
	m := newTestManager(t, testCIDR(t), t.TempDir(), false)
	ns1, ns2 := newNetNS(t), newNetNS(t)
	id1, id2 := randID("p"), randID("q")
	if _, err := m.Attach(ctx, id1, ns1); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Attach(ctx, id2, ns2); err != nil {
		t.Fatal(err)
	}
	serve(t, ns1, "g1", 8080)
	serve(t, ns2, "g2", 8080)
	hostIP := hostAddr(t)
	port := 20000 + randInt(20000)
	published := fmt.Sprintf("%s:%d", hostIP, port)

	if err := m.Publish(ctx, id1, []Port{{HostPort: port, ContainerPort: 8080}}); err != nil {
		t.Fatal(err)
	}
	mustAsk(t, "", published, "g1")  // from the host itself (nat OUTPUT)
	mustAsk(t, ns2, published, "g1") // from another group (nat PREROUTING)
	mustAsk(t, ns1, published, "g1") // hairpin: the group to itself

	// Conflicts, whatever the host address, change nothing.
	for _, p := range [][]Port{
		{{HostPort: port, ContainerPort: 8080, Protocol: "TCP"}},
		{{HostPort: port, ContainerPort: 8080, HostIP: hostIP}},
		{{HostPort: port + 1, ContainerPort: 8080}, {HostPort: port, ContainerPort: 80}},
	} {
		if err := m.Publish(ctx, id2, p); !errors.Is(err, ErrPortInUse) {
			t.Fatalf("publish %v on a taken port: %v, want ErrPortInUse", p, err)
		}
	}
	if strings.Contains(iptablesSave(t, "nat"), "skiff:"+id2) {
		t.Fatal("a failed publish left rules")
	}
	// UDP on the same number is another port; a specific host IP works.
	if err := m.Publish(ctx, id2, []Port{
		{HostPort: port, ContainerPort: 53, Protocol: "udp"},
		{HostPort: port + 1, ContainerPort: 8080, HostIP: hostIP},
	}); err != nil {
		t.Fatal(err)
	}
	mustAsk(t, "", fmt.Sprintf("%s:%d", hostIP, port+1), "g2")
	// Publish replaces: the udp rule goes, the tcp one stays.
	if err := m.Publish(ctx, id2, []Port{{HostPort: port + 1, ContainerPort: 8080, HostIP: hostIP}}); err != nil {
		t.Fatal(err)
	}
	if nat := iptablesSave(t, "nat"); strings.Count(nat, "skiff:"+id2) != 1 {
		t.Fatalf("want one rule for %s:\n%s", id2, nat)
	}

	// Bad input.
	for _, p := range []Port{
		{HostPort: 0, ContainerPort: 80},
		{HostPort: 80, ContainerPort: 70000},
		{HostPort: 80, ContainerPort: 80, Protocol: "sctp"},
		{HostPort: 80, ContainerPort: 80, HostIP: "fd00::1"},
	} {
		if err := m.Publish(ctx, id2, []Port{p}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("publish %v: %v, want ErrInvalid", p, err)
		}
	}
	if err := m.Publish(ctx, "nobody", []Port{{HostPort: port + 2, ContainerPort: 80}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("publish for unknown sandbox: %v", err)
	}

	// Someone flushes our chain: the next change rebuilds it whole.
	exec.Command("iptables", "-t", "nat", "-F", m.ipt.ports).Run()
	if err := m.Publish(ctx, id1, []Port{{HostPort: port, ContainerPort: 8080}, {HostPort: port + 3, ContainerPort: 8080}}); err != nil {
		t.Fatal(err)
	}
	mustAsk(t, "", published, "g1")
	mustAsk(t, "", fmt.Sprintf("%s:%d", hostIP, port+1), "g2")

	// Detach takes the rules away and frees the port.
	if err := m.Detach(ctx, id1); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(iptablesSave(t, "nat"), "skiff:"+id1) {
		t.Fatal("rules left after detach")
	}
	if err := m.Publish(ctx, id2, []Port{{HostPort: port, ContainerPort: 8080}}); err != nil {
		t.Fatalf("port not freed by detach: %v", err)
	}
	mustAsk(t, "", published, "g2")

	// Cleanup removes every chain and jump of the range.
	if err := m.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"nat", "filter"} {
		if s := iptablesSave(t, table); strings.Contains(s, m.ipt.ports) || strings.Contains(s, m.ipt.post) || strings.Contains(s, m.ipt.fwd) {
			t.Fatalf("%s table after Cleanup:\n%s", table, s)
		}
	}
}

func TestPrivilegedRestart(t *testing.T) {
	requirePrivileged(t)
	ctx := context.Background()
	cidr := testCIDR(t)
	state := t.TempDir()
	m1, err := New(Config{StateDir: state, CIDR: cidr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m1.Cleanup(ctx); m1.Close() })
	ns1, ns2, ns3 := newNetNS(t), newNetNS(t), newNetNS(t)
	id1, id2, id3 := randID("r1"), randID("r2"), randID("r3")
	t.Cleanup(func() {
		for _, id := range []string{id1, id2, id3} {
			removeVeth(vethName(id))
		}
	})
	ip1, _ := m1.Attach(ctx, id1, ns1)
	ip2, _ := m1.Attach(ctx, id2, ns2)
	if _, err := m1.Attach(ctx, id3, ns3); err != nil {
		t.Fatal(err)
	}
	port := 20000 + randInt(20000)
	if err := m1.Publish(ctx, id1, []Port{{HostPort: port, ContainerPort: 8080}}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{StateDir: state, CIDR: cidr}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("second manager on one state dir: %v", err)
	}
	m1.Close() // agent stops; groups keep running

	// While the agent is down: group 3 goes away entirely; group 2 loses
	// its veth but keeps its namespace; a veth routed to an address nobody
	// claims appears.
	if err := removeVeth(vethName(id3)); err != nil {
		t.Fatal(err)
	}
	unix.Unmount(ns3, unix.MNT_DETACH)
	if err := removeVeth(vethName(id2)); err != nil {
		t.Fatal(err)
	}
	orphanNS := newNetNS(t)
	orphan := vethName(randID("orphan"))
	orphanIP := netip.MustParsePrefix(cidr).Addr().Next().Next().Next().Next().Next() // .5: unclaimed
	if err := plumb(orphan, orphanIP, orphanNS, 1500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeVeth(orphan) })

	m2 := newTestManager(t, cidr, state, false)
	got := m2.Allocated()
	if got[id1] != ip1 || got[id2] != ip2 || len(got) != 2 {
		t.Fatalf("after restart Allocated() = %v, want %s=%s %s=%s", got, id1, ip1, id2, ip2)
	}
	if _, err := netlink.LinkByName(orphan); err == nil {
		t.Fatal("veth of an unclaimed address kept")
	}
	serve(t, ns1, "g1", 8080)
	serve(t, ns2, "g2", 8080)
	// Group 1 kept working through the restart; its port too.
	mustAsk(t, "", ip1+":8080", "g1")
	mustAsk(t, "", fmt.Sprintf("%s:%d", hostAddr(t), port), "g1")
	if ip, err := m2.Attach(ctx, id1, ns1); err != nil || ip != ip1 {
		t.Fatalf("re-attach 1: %s %v", ip, err)
	}
	// Group 2 is repaired by attaching again, with its address.
	if ip, err := m2.Attach(ctx, id2, ns2); err != nil || ip != ip2 {
		t.Fatalf("re-attach 2: %s %v", ip, err)
	}
	mustAsk(t, "", ip2+":8080", "g2")
	mustAsk(t, ns1, ip2+":8080", "g2")
}

func TestPrivilegedAttachErrors(t *testing.T) {
	requirePrivileged(t)
	ctx := context.Background()
	m := newTestManager(t, testCIDR(t), t.TempDir(), false)
	for _, id := range []string{"", "a b", "x\"y", strings.Repeat("x", 201)} {
		if _, err := m.Attach(ctx, id, "/nonexistent"); !errors.Is(err, ErrInvalid) {
			t.Fatalf("attach %q: %v, want ErrInvalid", id, err)
		}
	}
	if _, err := m.Attach(ctx, "ok", ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("attach with no netns: %v", err)
	}
	if _, err := m.Attach(ctx, randID("x"), "/nonexistent/netns"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("attach to a missing netns: %v", err)
	}
	notNS := filepath.Join(t.TempDir(), "plain")
	os.WriteFile(notNS, nil, 0o600)
	if _, err := m.Attach(ctx, randID("x"), notNS); err == nil {
		t.Fatal("attach to a plain file worked")
	}
	if n := len(m.Allocated()); n != 0 {
		t.Fatalf("failed attaches leaked %d addresses", n)
	}
	for _, bad := range []string{"", "10.0.0.0", "10.88.0.1/24", "fd00::/64"} {
		if _, err := New(Config{StateDir: t.TempDir(), CIDR: bad}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("New with CIDR %q: %v", bad, err)
		}
	}
}

func TestPrivilegedConcurrentAttach(t *testing.T) {
	requirePrivileged(t)
	ctx := context.Background()
	m := newTestManager(t, testCIDR(t), t.TempDir(), true)
	const n = 24
	paths := make([]string, n)
	for i := range paths {
		paths[i] = newNetNS(t)
	}
	ips := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			ip, err := m.Attach(ctx, fmt.Sprintf("c-%d", i), paths[i])
			ips[i] = ip
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for _, ip := range ips {
		if seen[ip] {
			t.Fatalf("%s handed out twice", ip)
		}
		seen[ip] = true
	}
	for i := range n {
		wg.Go(func() {
			if err := m.Detach(ctx, fmt.Sprintf("c-%d", i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := m.Allocated(); len(got) != 0 {
		t.Fatalf("left after detach: %v", got)
	}
}

// BenchmarkAttachDetach measures one Attach plus one Detach of a sandbox
// into an existing namespace. cpu-µs/op is the process's user+system CPU
// time per op (getrusage), which is what the host pays; ns/op also holds
// the time the kernel waits (RCU grace periods) when deleting a veth.
func BenchmarkAttachDetach(b *testing.B) {
	requirePrivileged(b)
	ctx := context.Background()
	m := newTestManager(b, testCIDR(b), b.TempDir(), true)
	ns := newNetNS(b)
	var attach, total time.Duration
	cpu0 := cpuTime()
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("bench-%d", i)
		i++
		t0 := time.Now()
		if _, err := m.Attach(ctx, id, ns); err != nil {
			b.Fatal(err)
		}
		attach += time.Since(t0)
		if err := m.Detach(ctx, id); err != nil {
			b.Fatal(err)
		}
		total += time.Since(t0)
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(i), "cpu-µs/op")
	b.ReportMetric(float64(attach.Microseconds())/float64(i), "attach-µs/op")
}

// BenchmarkAttach measures Attach alone, into fresh namespaces, with the
// CPU time of the Attach calls only.
func BenchmarkAttach(b *testing.B) {
	requirePrivileged(b)
	ctx := context.Background()
	m := newTestManager(b, testCIDR(b), b.TempDir(), true)
	const pool = 64
	paths := make([]string, pool)
	for i := range paths {
		paths[i] = newNetNS(b)
	}
	var cpu, wall time.Duration
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("bench-%d", i)
		c0, t0 := cpuTime(), time.Now()
		if _, err := m.Attach(ctx, id, paths[i%pool]); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - c0
		wall += time.Since(t0)
		b.StopTimer()
		if err := m.Detach(ctx, id); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		i++
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(i), "cpu-µs/attach")
	b.ReportMetric(float64(wall.Microseconds())/float64(i), "wall-µs/attach")
}

// systemCPU is the busy time of all CPUs, kernel threads included.
func systemCPU() time.Duration {
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var ticks int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		var n int64
		fmt.Sscan(v, &n)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ = 100
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAttach3000 fills a host with 3000 groups (run it with
// -benchtime 1x) and reports the cost of an Attach when the host is empty
// and when it already holds 2500 veths, to show that Attach does not slow
// down with the number of groups.
func BenchmarkAttach3000(b *testing.B) {
	requirePrivileged(b)
	ctx := context.Background()
	const n = 3000
	m := newTestManager(b, fmt.Sprintf("10.%d.0.0/20", 100+randInt(100)), b.TempDir(), true)
	dir := b.TempDir()
	paths := make([]string, n)
	for i := range paths {
		paths[i] = newNetNSAt(b, filepath.Join(dir, fmt.Sprint(i)))
	}
	for b.Loop() {
		var first, last, firstCPU, lastCPU time.Duration
		start, sys0 := time.Now(), systemCPU()
		for i := range n {
			c0, t0 := cpuTime(), time.Now()
			if _, err := m.Attach(ctx, fmt.Sprintf("s-%d", i), paths[i]); err != nil {
				b.Fatalf("attach %d: %v", i, err)
			}
			d, c := time.Since(t0), cpuTime()-c0
			if i < 500 {
				first, firstCPU = first+d, firstCPU+c
			} else if i >= n-500 {
				last, lastCPU = last+d, lastCPU+c
			}
		}
		b.ReportMetric(time.Since(start).Seconds(), "s/3000-attaches")
		b.ReportMetric(float64((systemCPU()-sys0).Microseconds())/n, "host-cpu-µs/attach")
		b.ReportMetric(float64(first.Microseconds())/500, "µs/attach-first500")
		b.ReportMetric(float64(last.Microseconds())/500, "µs/attach-last500")
		b.ReportMetric(float64(firstCPU.Microseconds())/500, "cpu-µs/attach-first500")
		b.ReportMetric(float64(lastCPU.Microseconds())/500, "cpu-µs/attach-last500")
		b.StopTimer()
		// Tear down the fast way: the namespaces go first, and the kernel
		// deletes their veths in one batch; Detach then only frees.
		for _, p := range paths {
			unix.Unmount(p, unix.MNT_DETACH)
		}
		t0 := time.Now()
		for i := range n {
			if err := m.Detach(ctx, fmt.Sprintf("s-%d", i)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(time.Since(t0).Seconds(), "s/3000-detaches")
		b.StartTimer()
	}
}

// BenchmarkPublish measures publishing one port and taking it back (two
// iptables-restore runs) next to 200 groups that each have one published.
func BenchmarkPublish(b *testing.B) {
	requirePrivileged(b)
	ctx := context.Background()
	m := newTestManager(b, testCIDR(b), b.TempDir(), false)
	ns := newNetNS(b)
	base := 20000 + randInt(20000)
	// Claims without veths are enough for the rules: Publish only needs
	// the address.
	for i := range 200 {
		m.mu.Lock()
		_, err := m.ipam.allocate(fmt.Sprintf("other-%d", i), "")
		m.mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Publish(ctx, fmt.Sprintf("other-%d", i), []Port{{HostPort: base + 1 + i, ContainerPort: 80}}); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := m.Attach(ctx, "pub", ns); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := m.Publish(ctx, "pub", []Port{{HostPort: base, ContainerPort: 80}}); err != nil {
			b.Fatal(err)
		}
		if err := m.Publish(ctx, "pub", nil); err != nil {
			b.Fatal(err)
		}
	}
}
