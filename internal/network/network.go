// Package network gives container groups (sandboxes) their pod network on
// one host: an IP from the host's pod range, a routed veth pair (no bridge,
// so a host is not capped at 1024 groups), egress NAT, published host ports,
// and the resolv.conf and hosts files the sandbox writes. See README.md for
// the packet path.
package network

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// Error classes. Errors returned by this package wrap one of them with %w.
var (
	ErrInvalid     = errors.New("invalid")
	ErrNotFound    = errors.New("not found")
	ErrExhausted   = errors.New("address pool exhausted")
	ErrPortInUse   = errors.New("host port in use")
	ErrUnavailable = errors.New("unavailable")
)

// Config configures a Manager.
type Config struct {
	// StateDir holds the manager's durable state (address claims).
	StateDir string
	// CIDR is this host's pod range, e.g. "10.88.0.0/20". Its network
	// address, first host address and broadcast address are never given
	// out.
	CIDR string
	// NAT masquerades traffic from the pod range to destinations outside
	// it, so that groups reach beyond the host.
	NAT bool
	// MTU of the group's eth0 and its host-side veth (0: 1500).
	MTU int
	// Logger (nil: slog.Default()).
	Logger *slog.Logger
}

// Manager attaches sandboxes' network namespaces to the host. All methods
// are safe for concurrent use; calls for the same sandbox are serialized.
type Manager struct {
	cfg    Config
	prefix netip.Prefix
	log    *slog.Logger
	ipt    *iptables
	lock   *os.File // flock on StateDir: one Manager per state dir

	mu    sync.Mutex // guards the fields below
	ipam  *ipam
	ready map[string]bool // attached completely by this process
	locks map[string]*idLock

	portMu sync.Mutex // serializes Publish/Unpublish and the port rules
	ports  map[portKey]string
}

type idLock struct {
	mu sync.Mutex
	n  int
}

// New opens (or creates) the state in cfg.StateDir, reconciles it with the
// host (see reconcile), turns on IPv4 forwarding and installs the NAT,
// forwarding and port chains. It is safe to call at every agent start:
// running groups keep their addresses and rules.
func New(cfg Config) (*Manager, error) {
	if cfg.StateDir == "" {
		return nil, fmt.Errorf("%w: network: StateDir is required", ErrInvalid)
	}
	prefix, err := parseCIDR(cfg.CIDR)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	if cfg.MTU < 576 || cfg.MTU > 65535 {
		return nil, fmt.Errorf("%w: network: MTU %d out of range", ErrInvalid, cfg.MTU)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cfg.StateDir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("%w: network: state dir %s is used by another manager: %v", ErrUnavailable, cfg.StateDir, err)
	}
	m := &Manager{
		cfg:    cfg,
		prefix: prefix,
		log:    cfg.Logger.With("component", "network", "cidr", prefix.String()),
		lock:   lock,
		ready:  map[string]bool{},
		locks:  map[string]*idLock{},
		ports:  map[portKey]string{},
	}
	if err := m.open(); err != nil {
		if m.ipam != nil {
			m.ipam.close()
		}
		lock.Close()
		return nil, err
	}
	return m, nil
}

func (m *Manager) open() error {
	ipt, err := newIPTables(m.prefix, m.cfg.NAT)
	if err != nil {
		return err
	}
	m.ipt = ipt
	p, skipped, err := newIPAM(m.prefix, filepath.Join(m.cfg.StateDir, "ipam"))
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if skipped > 0 {
		m.log.Warn("skipped unreadable address journal lines", "lines", skipped)
	}
	m.ipam = p
	if err := m.reconcile(); err != nil {
		return err
	}
	if err := writeSysctl("net/ipv4/ip_forward", "1"); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	var rules []portRule
	for _, a := range m.ipam.all() {
		kept := a.Ports[:0:0]
		for _, p := range a.Ports {
			if other, ok := m.conflict(p.key(), a.ID); ok {
				// Only possible if the state was edited by hand.
				m.log.Warn("published port claimed twice; dropping it", "port", p.String(), "sandbox", a.ID, "other", other)
				continue
			}
			m.ports[p.key()] = a.ID
			kept = append(kept, p)
			rules = append(rules, portRule{ID: a.ID, IP: a.IP, Port: p})
		}
		if len(kept) != len(a.Ports) {
			a.Ports = kept
			if err := m.ipam.update(a); err != nil {
				return fmt.Errorf("network: %w", err)
			}
		}
	}
	if err := m.ipt.ensure(context.Background(), rules); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	return nil
}

// Attach gives the sandbox an address and plumbs its network namespace
// (netnsPath, a bind-mounted netns file owned by the caller): a veth pair
// with eth0 inside holding ip/32, a default route via the link-local
// gateway 169.254.1.1, and a host route to ip. Attaching an attached
// sandbox returns the same address and repairs whatever part of the
// plumbing is missing.
func (m *Manager) Attach(ctx context.Context, sandboxID, netnsPath string) (string, error) {
	if err := checkID(sandboxID); err != nil {
		return "", err
	}
	if netnsPath == "" {
		return "", fmt.Errorf("%w: network: empty netns path", ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	unlock := m.lockID(sandboxID)
	defer unlock()

	m.mu.Lock()
	a := m.ipam.get(sandboxID)
	fresh := a == nil
	if fresh {
		var err error
		if a, err = m.ipam.allocate(sandboxID, netnsPath); err != nil {
			m.mu.Unlock()
			return "", fmt.Errorf("network: attach %s: %w", sandboxID, err)
		}
	}
	ready := m.ready[sandboxID] && a.NetNS == netnsPath
	moved := a.NetNS != netnsPath
	ip := a.IP
	m.mu.Unlock()

	if ready && linkExists(vethName(sandboxID)) {
		return ip.String(), nil
	}
	if moved {
		// Same sandbox, new namespace file: the old veth (if any) is
		// replaced by plumb; remember the new path for reconcile.
		m.mu.Lock()
		a.NetNS = netnsPath
		err := m.ipam.update(a)
		m.mu.Unlock()
		if err != nil {
			return "", fmt.Errorf("network: attach %s: %w", sandboxID, err)
		}
	}
	if err := plumb(vethName(sandboxID), ip, netnsPath, m.cfg.MTU); err != nil {
		if fresh {
			removeVeth(vethName(sandboxID))
			m.mu.Lock()
			if rerr := m.ipam.release(sandboxID); rerr != nil {
				m.log.Warn("release after failed attach", "sandbox", sandboxID, "err", rerr)
			}
			m.mu.Unlock()
		}
		return "", fmt.Errorf("network: attach %s: %w", sandboxID, err)
	}
	m.mu.Lock()
	m.ready[sandboxID] = true
	m.mu.Unlock()
	m.log.Debug("attached", "sandbox", sandboxID, "ip", ip, "veth", vethName(sandboxID))
	return ip.String(), nil
}

// Detach undoes Attach and Publish: port rules, veth pair (with it the
// host route and the group's eth0), and the address claim. Detaching a
// sandbox that is not attached is not an error.
func (m *Manager) Detach(ctx context.Context, sandboxID string) error {
	if err := checkID(sandboxID); err != nil {
		return err
	}
	unlock := m.lockID(sandboxID)
	defer unlock()

	m.mu.Lock()
	a := m.ipam.get(sandboxID)
	m.mu.Unlock()
	if a != nil && len(a.Ports) > 0 {
		// Rules go first so that no DNAT points at an address that may
		// be handed to another group.
		if err := m.setPorts(ctx, a, nil); err != nil {
			return fmt.Errorf("network: detach %s: %w", sandboxID, err)
		}
	}
	// The veth is removed even without a claim: it may be left over from
	// an Attach that crashed between creating it and recording success.
	if err := removeVeth(vethName(sandboxID)); err != nil {
		return fmt.Errorf("network: detach %s: %w", sandboxID, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.ready, sandboxID)
	if err := m.ipam.release(sandboxID); err != nil {
		return fmt.Errorf("network: detach %s: %w", sandboxID, err)
	}
	if a != nil {
		m.log.Debug("detached", "sandbox", sandboxID, "ip", a.IP)
	}
	return nil
}

// Allocated returns every claimed address: sandbox ID -> IP.
func (m *Manager) Allocated() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]string, len(m.ipam.byID))
	for id, a := range m.ipam.byID {
		out[id] = a.IP.String()
	}
	return out
}

// CIDR returns the pod range.
func (m *Manager) CIDR() netip.Prefix { return m.prefix }

// Close releases the manager's lock on its state dir. Groups, veths and
// rules stay as they are: a new Manager over the same StateDir adopts them.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lock == nil {
		return nil
	}
	err := m.ipam.close()
	if lerr := m.lock.Close(); err == nil {
		err = lerr
	}
	m.lock = nil
	return err
}

// Cleanup removes the iptables chains (NAT, forwarding, ports) this
// manager's CIDR installed. It is for tests and uninstall, not for agent
// stop: running groups lose egress and published ports. Veths and claims
// are left alone (Detach removes those).
func (m *Manager) Cleanup(ctx context.Context) error {
	m.portMu.Lock()
	defer m.portMu.Unlock()
	if err := m.ipt.remove(ctx); err != nil {
		return fmt.Errorf("network: cleanup: %w", err)
	}
	return nil
}

// reconcile brings the loaded claims in line with the host, once, at New.
// The rule for releasing a claim: its host veth is gone AND its netns file
// is gone (missing, or no longer a mounted network namespace). Either one
// still present means the group may still exist and its owner may Attach
// (which repairs) or Detach it; the claim is kept.
//
// A /32 route into the pod range through an "sk" veth whose address has no
// claim (the claim was lost: power loss before the journal reached the
// disk, or a wiped StateDir) has its veth removed: otherwise the address
// would be handed out twice.
func (m *Manager) reconcile() error {
	hs, err := hostSnapshot(m.prefix)
	if err != nil {
		return fmt.Errorf("network: reconcile: %w", err)
	}
	for _, a := range m.ipam.all() {
		if hs.links[vethName(a.ID)] || netnsAlive(a.NetNS) {
			continue
		}
		m.log.Info("releasing address of vanished group", "sandbox", a.ID, "ip", a.IP)
		if err := m.ipam.release(a.ID); err != nil {
			return fmt.Errorf("network: reconcile: %w", err)
		}
	}
	claimed := map[netip.Addr]bool{}
	for _, a := range m.ipam.all() {
		claimed[a.IP] = true
	}
	for ip, link := range hs.routes {
		if claimed[ip] || !isVethName(link) {
			continue
		}
		m.log.Warn("removing veth of unclaimed address", "ip", ip, "veth", link)
		if err := removeVeth(link); err != nil {
			return fmt.Errorf("network: reconcile: %w", err)
		}
	}
	return nil
}

func (m *Manager) lockID(id string) func() {
	m.mu.Lock()
	l := m.locks[id]
	if l == nil {
		l = &idLock{}
		m.locks[id] = l
	}
	l.n++
	m.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		m.mu.Lock()
		if l.n--; l.n == 0 {
			delete(m.locks, id)
		}
		m.mu.Unlock()
	}
}

// checkID accepts the sandbox IDs we can safely put in file contents,
// interface-name hashes and iptables comments.
func checkID(id string) error {
	if id == "" || len(id) > 200 {
		return fmt.Errorf("%w: network: sandbox id must be 1 to 200 characters", ErrInvalid)
	}
	for _, c := range []byte(id) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == ':':
		default:
			return fmt.Errorf("%w: network: sandbox id %q: only letters, digits and -_.: are allowed", ErrInvalid, id)
		}
	}
	return nil
}

// vethName is the host-side interface name of a sandbox: "sk" and 13 hex
// digits (52 bits) of its ID's SHA-256, 15 characters, the kernel's limit.
func vethName(id string) string {
	h := sha256.Sum256([]byte(id))
	return "sk" + hex.EncodeToString(h[:7])[:13]
}

func isVethName(name string) bool {
	if len(name) != 15 || name[:2] != "sk" {
		return false
	}
	_, err := hex.DecodeString(name[2:] + "0")
	return err == nil
}

// netnsAlive reports whether path is a mounted network namespace file.
func netnsAlive(path string) bool {
	if path == "" {
		return false
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}
