package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

var (
	// gatewayIP is every group's default gateway. It is link-local, so it
	// costs no address of the pod range and never leaves the veth.
	gatewayIP = net.IPv4(169, 254, 1, 1).To4()
	// hostMAC is the address of every host-side veth. Each veth is its own
	// two-ended segment, so one well-known address serves them all, and the
	// group can get a permanent neighbour entry for its gateway up front.
	hostMAC = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
)

const (
	podIfName       = "eth0"
	addrGenModeNone = 1 // IN6_ADDR_GEN_MODE_NONE
)

// plumb makes (or repairs) the veth pair hostName <-> eth0-in-netns and the
// addresses, routes and neighbour entry on both ends. Every step is a
// create-or-replace, so running it on a half-done or complete setup is safe.
// It uses one netlink socket per namespace and runs no programs.
func plumb(hostName string, ip netip.Addr, nsPath string, mtu int) error {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: netns %s: %v", ErrNotFound, nsPath, err)
		}
		return fmt.Errorf("%w: netns %s: %v", ErrInvalid, nsPath, err)
	}
	defer ns.Close()
	host, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer host.Close()
	pod, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer pod.Close()

	hostLink, podLink, err := ensureVeth(host, pod, ns, hostName, mtu)
	if err != nil {
		return err
	}
	podIdx := podLink.Attrs().Index

	// Inside the group.
	ipnet := &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}
	if err := pod.AddrReplace(podLink, &netlink.Addr{IPNet: ipnet}); err != nil {
		return fmt.Errorf("address %s on %s: %w", ip, podIfName, err)
	}
	if err := pod.LinkSetUp(podLink); err != nil {
		return fmt.Errorf("%s up: %w", podIfName, err)
	}
	// A new namespace's loopback is always interface 1.
	if err := pod.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 1, Name: "lo"}}); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	if err := pod.NeighSet(&netlink.Neigh{
		LinkIndex:    podIdx,
		Family:       netlink.FAMILY_V4,
		State:        netlink.NUD_PERMANENT,
		IP:           gatewayIP,
		HardwareAddr: hostMAC,
	}); err != nil {
		return fmt.Errorf("gateway neighbour: %w", err)
	}
	if err := pod.RouteReplace(&netlink.Route{
		LinkIndex: podIdx,
		Gw:        gatewayIP,
		Flags:     int(netlink.FLAG_ONLINK),
	}); err != nil {
		return fmt.Errorf("default route: %w", err)
	}

	// On the host. proxy_arp makes the host answer for the gateway should
	// the group's permanent neighbour entry be removed.
	if err := writeSysctl("net/ipv4/conf/"+hostName+"/proxy_arp", "1"); err != nil {
		return err
	}
	if err := host.RouteReplace(&netlink.Route{
		LinkIndex: hostLink.Attrs().Index,
		Dst:       ipnet,
		Scope:     netlink.SCOPE_LINK,
	}); err != nil {
		return fmt.Errorf("host route to %s: %w", ip, err)
	}
	return nil
}

// ensureVeth returns the pair hostName <-> eth0 in ns, creating it with the
// peer born inside ns (one RTM_NEWLINK, no move or rename). An existing
// hostName whose peer is not ns's eth0 is replaced.
func ensureVeth(host, pod *netlink.Handle, ns netns.NsHandle, hostName string, mtu int) (netlink.Link, netlink.Link, error) {
	if l, err := host.LinkByName(hostName); err == nil {
		if p, err := pod.LinkByName(podIfName); err == nil &&
			l.Type() == "veth" && p.Attrs().ParentIndex == l.Attrs().Index && l.Attrs().ParentIndex == p.Attrs().Index {
			if l.Attrs().Flags&net.FlagUp == 0 {
				if err := host.LinkSetUp(l); err != nil {
					return nil, nil, fmt.Errorf("%s up: %w", hostName, err)
				}
			}
			return l, p, nil
		}
		if err := host.LinkDel(l); err != nil && !isNotFound(err) {
			return nil, nil, fmt.Errorf("replace stale %s: %w", hostName, err)
		}
	} else if !isNotFound(err) {
		return nil, nil, fmt.Errorf("look up %s: %w", hostName, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = hostName
	attrs.MTU = mtu
	attrs.HardwareAddr = hostMAC
	attrs.Flags = net.FlagUp
	veth := &netlink.Veth{
		LinkAttrs:     attrs,
		PeerName:      podIfName,
		PeerNamespace: netlink.NsFd(ns),
	}
	if err := host.LinkAdd(veth); err != nil {
		return nil, nil, fmt.Errorf("create veth %s: %w", hostName, err)
	}
	p, err := pod.LinkByName(podIfName)
	if err != nil {
		return nil, nil, fmt.Errorf("find %s in netns: %w", podIfName, err)
	}
	// No IPv6 link-local addresses on either end (the pod network is
	// IPv4): without them the kernel runs no DAD, router solicitation or
	// MLD for the pair, work that takes the rtnl lock and, over 3000
	// groups, measurably slows every Attach. Both ends are still without
	// carrier here (eth0 is down), so no address has been made yet.
	if err := host.LinkSetIP6AddrGenMode(veth, addrGenModeNone); err != nil {
		return nil, nil, fmt.Errorf("%s addrgenmode: %w", hostName, err)
	}
	if err := pod.LinkSetIP6AddrGenMode(p, addrGenModeNone); err != nil {
		return nil, nil, fmt.Errorf("%s addrgenmode: %w", podIfName, err)
	}
	return veth, p, nil
}

func linkExists(name string) bool {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return false
	}
	defer h.Close()
	_, err = h.LinkByName(name)
	return err == nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// hostState is what reconcile needs to know of the host's links and routes.
type hostState struct {
	links  map[string]bool       // every link name
	routes map[netip.Addr]string // /32 routes into the pod range: dst -> link name
}

func hostSnapshot(prefix netip.Prefix) (*hostState, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	// A dump that raced with another change to the table is marked
	// interrupted; its result may be inconsistent, so take it again.
	links, err := retryDump(h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	hs := &hostState{links: map[string]bool{}, routes: map[netip.Addr]string{}}
	byIndex := map[int]string{}
	for _, l := range links {
		hs.links[l.Attrs().Name] = true
		byIndex[l.Attrs().Index] = l.Attrs().Name
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if ones, _ := r.Dst.Mask.Size(); ones != 32 {
			continue
		}
		ip, ok := netip.AddrFromSlice(r.Dst.IP.To4())
		if !ok || !prefix.Contains(ip) {
			continue
		}
		hs.routes[ip] = byIndex[r.LinkIndex]
	}
	return hs, nil
}

func writeSysctl(name, value string) error {
	if err := os.WriteFile("/proc/sys/"+name, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s: %w", name, err)
	}
	return nil
}

// retryDump repeats a netlink dump that was interrupted by a concurrent
// change (other agents and the kernel add and remove links all the time).
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var out []T
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		out, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return out, err
}
