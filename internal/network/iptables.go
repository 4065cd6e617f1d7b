package network

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
)

// iptables owns this pod range's chains. Every change goes through one
// iptables-restore --noflush run, which commits each table atomically and
// leaves other software's rules alone. Chain names carry a hash of the CIDR
// so that managers of different ranges on one host never touch each other's.
//
//	nat    POSTROUTING -> SKIFF-POSTROUTING-<h>: hairpin and egress MASQUERADE
//	nat    PREROUTING  -> SKIFF-PORTS-<h>: DNAT of published ports (local dst)
//	nat    OUTPUT      -> SKIFF-PORTS-<h>: same, for the host's own connections
//	filter FORWARD     -> SKIFF-FORWARD-<h>: accept to and from the range
type iptables struct {
	restorePath, savePath string
	cidr                  string
	nat                   bool
	post, ports, fwd      string

	mu sync.Mutex // one iptables-restore at a time
}

func newIPTables(prefix netip.Prefix, nat bool) (*iptables, error) {
	restore, err := exec.LookPath("iptables-restore")
	if err != nil {
		return nil, fmt.Errorf("%w: network: iptables-restore not found: %v", ErrUnavailable, err)
	}
	save, err := exec.LookPath("iptables-save")
	if err != nil {
		return nil, fmt.Errorf("%w: network: iptables-save not found: %v", ErrUnavailable, err)
	}
	sum := sha256.Sum256([]byte(prefix.String()))
	h := strings.ToUpper(hex.EncodeToString(sum[:4]))
	return &iptables{
		restorePath: restore,
		savePath:    save,
		cidr:        prefix.String(),
		nat:         nat,
		post:        "SKIFF-POSTROUTING-" + h,
		ports:       "SKIFF-PORTS-" + h,
		fwd:         "SKIFF-FORWARD-" + h,
	}, nil
}

// jump is a rule in a built-in chain that sends packets to one of ours.
type jump struct {
	table, chain, spec, target string
}

func (t *iptables) jumps() []jump {
	return []jump{
		{"nat", "PREROUTING", "-m addrtype --dst-type LOCAL -m comment --comment \"skiff ports " + t.cidr + "\"", t.ports},
		// Not for 127.0.0.0/8: a DNATed packet from 127.0.0.1 cannot be
		// routed to a group without route_localnet=1 (see README).
		{"nat", "OUTPUT", "! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -m comment --comment \"skiff ports " + t.cidr + "\"", t.ports},
		{"nat", "POSTROUTING", "-m comment --comment \"skiff nat " + t.cidr + "\"", t.post},
		{"filter", "FORWARD", "-m comment --comment \"skiff forward " + t.cidr + "\"", t.fwd},
	}
}

// ensure installs (or rewrites) every chain and jump, with the given port
// rules as the whole content of the ports chain. Idempotent.
func (t *iptables) ensure(ctx context.Context, rules []portRule) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	saved, err := t.saveTables(ctx)
	if err != nil {
		return err
	}
	var nat, filter strings.Builder
	fmt.Fprintf(&nat, "*nat\n:%s - [0:0]\n:%s - [0:0]\n", t.post, t.ports)
	// Hairpin: a group reaching its own published port through a host
	// address gets its packet back with its own address as source unless
	// the source is rewritten. Any DNATed pod-to-pod packet is masqueraded.
	fmt.Fprintf(&nat, "-A %s -s %s -d %s -m conntrack --ctstate DNAT -m comment --comment \"skiff hairpin\" -j MASQUERADE\n", t.post, t.cidr, t.cidr)
	if t.nat {
		fmt.Fprintf(&nat, "-A %s -s %s ! -d %s -m comment --comment \"skiff egress\" -j MASQUERADE\n", t.post, t.cidr, t.cidr)
	}
	for _, r := range rules {
		nat.WriteString(r.spec("-A", t.ports))
	}
	fmt.Fprintf(&filter, "*filter\n:%s - [0:0]\n", t.fwd)
	fmt.Fprintf(&filter, "-A %s -s %s -j ACCEPT\n-A %s -d %s -j ACCEPT\n", t.fwd, t.cidr, t.fwd, t.cidr)
	for _, j := range t.jumps() {
		if len(findJumps(saved[j.table], j.chain, j.target)) > 0 {
			continue
		}
		line := fmt.Sprintf("-I %s 1 %s -j %s\n", j.chain, j.spec, j.target)
		if j.table == "nat" {
			nat.WriteString(line)
		} else {
			filter.WriteString(line)
		}
	}
	nat.WriteString("COMMIT\n")
	filter.WriteString("COMMIT\n")
	return t.restore(ctx, nat.String()+filter.String())
}

// swapPorts deletes the old rules and appends the new ones in one commit.
// If that fails (a rule to delete is gone: someone flushed the chain), the
// whole ports chain is rewritten from all, the complete wanted set.
func (t *iptables) swapPorts(ctx context.Context, old, new []portRule, all func() []portRule) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var b strings.Builder
	b.WriteString("*nat\n")
	for _, r := range old {
		b.WriteString(r.spec("-D", t.ports))
	}
	for _, r := range new {
		b.WriteString(r.spec("-A", t.ports))
	}
	b.WriteString("COMMIT\n")
	if err := t.restore(ctx, b.String()); err == nil {
		return nil
	}
	b.Reset()
	fmt.Fprintf(&b, "*nat\n:%s - [0:0]\n", t.ports)
	for _, r := range all() {
		b.WriteString(r.spec("-A", t.ports))
	}
	b.WriteString("COMMIT\n")
	return t.restore(ctx, b.String())
}

// remove deletes our jumps and chains. Missing ones are skipped.
func (t *iptables) remove(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	saved, err := t.saveTables(ctx)
	if err != nil {
		return err
	}
	var in strings.Builder
	for _, table := range []string{"nat", "filter"} {
		fmt.Fprintf(&in, "*%s\n", table)
		for _, j := range t.jumps() {
			if j.table != table {
				continue
			}
			for _, line := range findJumps(saved[table], j.chain, j.target) {
				in.WriteString("-D" + strings.TrimPrefix(line, "-A") + "\n")
			}
		}
		for _, c := range []string{t.post, t.ports, t.fwd} {
			if hasChain(saved[table], c) {
				fmt.Fprintf(&in, "-F %s\n-X %s\n", c, c)
			}
		}
		in.WriteString("COMMIT\n")
	}
	return t.restore(ctx, in.String())
}

func (t *iptables) saveTables(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	for _, table := range []string{"nat", "filter"} {
		cmd := exec.CommandContext(ctx, t.savePath, "-t", table)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("iptables-save -t %s: %v: %s", table, err, strings.TrimSpace(stderr.String()))
		}
		out[table] = string(b)
	}
	return out, nil
}

func (t *iptables) restore(ctx context.Context, input string) error {
	cmd := exec.CommandContext(ctx, t.restorePath, "-w", "5", "--noflush")
	cmd.Stdin = strings.NewReader(input)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables-restore: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// findJumps returns the iptables-save lines of chain that jump to target.
func findJumps(saved, chain, target string) []string {
	var out []string
	for _, line := range strings.Split(saved, "\n") {
		if strings.HasPrefix(line, "-A "+chain+" ") && strings.HasSuffix(line, " -j "+target) {
			out = append(out, line)
		}
	}
	return out
}

func hasChain(saved, chain string) bool {
	for _, line := range strings.Split(saved, "\n") {
		if strings.HasPrefix(line, ":"+chain+" ") {
			return true
		}
	}
	return false
}
