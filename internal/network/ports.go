package network

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Port is a published port: connections to HostPort on the host's
// addresses (or on HostIP only) go to ContainerPort on the group's IP.
type Port struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"` // "tcp" (default) or "udp"
	HostIP        string `json:"hostIP,omitempty"`   // "" or "0.0.0.0": every host address
}

func (p Port) String() string {
	h := p.HostIP
	if h == "" {
		h = "*"
	}
	return fmt.Sprintf("%s:%d->%d/%s", h, p.HostPort, p.ContainerPort, p.Protocol)
}

// portKey is what two published ports must not share.
type portKey struct {
	proto  string
	port   int
	hostIP string // "" for all addresses
}

func (p Port) key() portKey { return portKey{p.Protocol, p.HostPort, p.HostIP} }

// overlaps reports whether two keys claim the same host socket address.
func (k portKey) overlaps(o portKey) bool {
	return k.proto == o.proto && k.port == o.port && (k.hostIP == "" || o.hostIP == "" || k.hostIP == o.hostIP)
}

// normalizePorts checks ports and returns them in canonical form
// (lower-case protocol, default tcp, HostIP "" for any address).
func normalizePorts(ports []Port) ([]Port, error) {
	out := make([]Port, 0, len(ports))
	for _, p := range ports {
		p.Protocol = strings.ToLower(strings.TrimSpace(p.Protocol))
		if p.Protocol == "" {
			p.Protocol = "tcp"
		}
		if p.Protocol != "tcp" && p.Protocol != "udp" {
			return nil, fmt.Errorf("%w: port %d: protocol %q (want tcp or udp)", ErrInvalid, p.HostPort, p.Protocol)
		}
		if p.HostPort < 1 || p.HostPort > 65535 {
			return nil, fmt.Errorf("%w: host port %d out of range", ErrInvalid, p.HostPort)
		}
		if p.ContainerPort < 1 || p.ContainerPort > 65535 {
			return nil, fmt.Errorf("%w: container port %d out of range", ErrInvalid, p.ContainerPort)
		}
		if p.HostIP != "" {
			ip, err := netip.ParseAddr(p.HostIP)
			if err != nil || !ip.Is4() {
				return nil, fmt.Errorf("%w: host IP %q: want an IPv4 address", ErrInvalid, p.HostIP)
			}
			if ip.IsUnspecified() {
				p.HostIP = ""
			} else {
				p.HostIP = ip.String()
			}
		}
		for _, q := range out {
			if q.key().overlaps(p.key()) {
				return nil, fmt.Errorf("%w: %s and %s claim the same host port", ErrPortInUse, q, p)
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// portRule is one DNAT rule of the ports chain.
type portRule struct {
	ID   string
	IP   netip.Addr
	Port Port
}

// spec renders the rule as an iptables-restore line with op "-A" or "-D".
func (r portRule) spec(op, chain string) string {
	var b strings.Builder
	b.WriteString(op + " " + chain)
	if r.Port.HostIP != "" {
		b.WriteString(" -d " + r.Port.HostIP + "/32")
	}
	p := r.Port.Protocol
	b.WriteString(" -p " + p + " -m " + p + " --dport " + strconv.Itoa(r.Port.HostPort))
	// checkID keeps IDs free of quotes and spaces.
	b.WriteString(" -m comment --comment \"skiff:" + r.ID + "\"")
	b.WriteString(" -j DNAT --to-destination " + r.IP.String() + ":" + strconv.Itoa(r.Port.ContainerPort) + "\n")
	return b.String()
}

// Publish sets the sandbox's published ports to exactly ports (an empty
// list unpublishes all). A host port already published by another group
// fails with ErrPortInUse and changes nothing. The sandbox must be
// attached. Whether some host process listens on the port is not checked:
// the DNAT takes precedence over it for traffic from outside.
func (m *Manager) Publish(ctx context.Context, sandboxID string, ports []Port) error {
	if err := checkID(sandboxID); err != nil {
		return err
	}
	ports, err := normalizePorts(ports)
	if err != nil {
		return fmt.Errorf("network: publish %s: %w", sandboxID, err)
	}
	unlock := m.lockID(sandboxID)
	defer unlock()
	m.mu.Lock()
	a := m.ipam.get(sandboxID)
	m.mu.Unlock()
	if a == nil {
		return fmt.Errorf("%w: network: publish: sandbox %s is not attached", ErrNotFound, sandboxID)
	}
	if err := m.setPorts(ctx, a, ports); err != nil {
		return fmt.Errorf("network: publish %s: %w", sandboxID, err)
	}
	return nil
}

// setPorts replaces a's published ports. The caller holds a's ID lock.
// The claim file is written first: if the agent dies before the rules are
// in, the next New installs them from the file.
func (m *Manager) setPorts(ctx context.Context, a *allocation, ports []Port) error {
	m.portMu.Lock()
	defer m.portMu.Unlock()
	for _, p := range ports {
		if other, ok := m.conflict(p.key(), a.ID); ok {
			return fmt.Errorf("%w: %s is published by sandbox %s", ErrPortInUse, p, other)
		}
	}
	old := a.Ports
	m.mu.Lock()
	a.Ports = ports
	err := m.ipam.update(a)
	if err != nil {
		a.Ports = old
	}
	m.mu.Unlock()
	if err != nil {
		return err
	}
	toRules := func(ps []Port) []portRule {
		rs := make([]portRule, len(ps))
		for i, p := range ps {
			rs[i] = portRule{ID: a.ID, IP: a.IP, Port: p}
		}
		return rs
	}
	if err := m.ipt.swapPorts(ctx, toRules(old), toRules(ports), m.allPortRules); err != nil {
		m.mu.Lock()
		a.Ports = old
		if uerr := m.ipam.update(a); uerr != nil {
			m.log.Warn("restore port record", "sandbox", a.ID, "err", uerr)
		}
		m.mu.Unlock()
		return err
	}
	for _, p := range old {
		delete(m.ports, p.key())
	}
	for _, p := range ports {
		m.ports[p.key()] = a.ID
	}
	return nil
}

// conflict returns the other sandbox holding a port overlapping k.
// The caller holds portMu (or is New, before any concurrency).
func (m *Manager) conflict(k portKey, id string) (string, bool) {
	for ok, owner := range m.ports {
		if owner != id && ok.overlaps(k) {
			return owner, true
		}
	}
	return "", false
}

// allPortRules is the wanted content of the ports chain, from the claims.
func (m *Manager) allPortRules() []portRule {
	m.mu.Lock()
	defer m.mu.Unlock()
	var rs []portRule
	for _, a := range m.ipam.byID {
		for _, p := range a.Ports {
			rs = append(rs, portRule{ID: a.ID, IP: a.IP, Port: p})
		}
	}
	return rs
}
