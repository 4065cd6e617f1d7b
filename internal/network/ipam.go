package network

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// allocation is one sandbox's claim on an address, as persisted on disk.
type allocation struct {
	ID    string     `json:"id"`
	IP    netip.Addr `json:"ip"`
	NetNS string     `json:"netns,omitempty"`
	Ports []Port     `json:"ports,omitempty"`
}

// record is one line of the journal: a claim made or changed ("set") or
// dropped ("del").
type record struct {
	Op string `json:"op"`
	allocation
}

// ipam hands out the addresses of one IPv4 prefix, at most one per sandbox.
//
// Claims are kept in an append-only journal in dir, one line per change:
// "<crc32> <json>\n". A claim costs one small write(2) and no fsync (file
// creation is slow on some disks: ~1 ms on ext4 here, against ~3 µs for an
// append). Loading replays the journal, skipping lines whose checksum does
// not match (a write torn by a crash), and rewrites it compacted through a
// temporary file and rename; it is compacted the same way whenever it holds
// many more lines than claims. A power loss may lose the last claims made
// before it; New's reconcile removes the veths such lost claims leave
// behind, so no address is handed out twice.
//
// Free addresses are found in a bitmap, searching from a cursor that moves
// round-robin through the range: an allocation looks at one or a few 64-bit
// words, and a released address is reused as late as possible, which keeps
// stale ARP and conntrack entries from meeting a new owner.
//
// ipam is not safe for concurrent use; Manager serializes calls.
type ipam struct {
	prefix netip.Prefix
	base   uint32 // the prefix's first address
	size   uint32 // addresses in the prefix
	used   []uint64
	next   uint32 // offset where the next search starts
	nfree  int
	byID   map[string]*allocation

	dir     string
	journal *os.File
	lines   int // lines in the journal
	buf     []byte
}

// parseCIDR parses and checks a pod range: IPv4, canonical (no host bits),
// between /8 and /30, and not in a special-purpose block whose addresses
// cannot be pod addresses.
func parseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: CIDR %q: %v", ErrInvalid, s, err)
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%w: CIDR %q: only IPv4 pod ranges are supported", ErrInvalid, s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%w: CIDR %q has host bits set (did you mean %s?)", ErrInvalid, s, p.Masked())
	}
	if p.Bits() < 8 || p.Bits() > 30 {
		return netip.Prefix{}, fmt.Errorf("%w: CIDR %q: prefix length must be between /8 and /30", ErrInvalid, s)
	}
	for _, special := range []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("169.254.0.0/16"), // holds the pods' gateway address
		netip.MustParsePrefix("224.0.0.0/3"),    // multicast, reserved, broadcast
	} {
		if special.Overlaps(p) {
			return netip.Prefix{}, fmt.Errorf("%w: CIDR %q overlaps reserved block %s", ErrInvalid, s, special)
		}
	}
	return p, nil
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addrOf(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

const journalName = "journal"

// newIPAM loads the claims in dir (creating it if needed) and returns how
// many journal lines it had to skip.
func newIPAM(prefix netip.Prefix, dir string) (*ipam, int, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, 0, fmt.Errorf("ipam: %w", err)
	}
	size := uint32(1) << (32 - prefix.Bits())
	p := &ipam{
		prefix: prefix,
		base:   u32(prefix.Addr()),
		size:   size,
		used:   make([]uint64, (size+63)/64),
		byID:   map[string]*allocation{},
		dir:    dir,
		next:   2,
	}
	// Padding past the end of the range counts as used, so the search
	// never has to check bounds.
	for off := size; off < uint32(len(p.used))*64; off++ {
		p.set(off)
	}
	// Network address, the first host address (kept for a gateway should
	// the range ever be bridged or routed by a real router) and broadcast.
	p.set(0)
	p.set(1)
	p.set(size - 1)
	p.nfree = int(size) - 3

	data, err := os.ReadFile(filepath.Join(dir, journalName))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, 0, fmt.Errorf("ipam: %w", err)
	}
	skipped := 0
	for len(data) > 0 {
		line, rest, complete := bytes.Cut(data, []byte{'\n'})
		data = rest
		if !complete || !p.replay(line) {
			skipped++
		}
	}
	if err := p.compact(); err != nil {
		return nil, 0, err
	}
	return p, skipped, nil
}

// replay applies one journal line and reports whether it was valid.
func (p *ipam) replay(line []byte) bool {
	sum, body, ok := bytes.Cut(line, []byte{' '})
	if !ok || len(sum) != 8 {
		return false
	}
	want, err := strconv.ParseUint(string(sum), 16, 32)
	if err != nil || uint32(want) != crc32.ChecksumIEEE(body) {
		return false
	}
	var r record
	if err := json.Unmarshal(body, &r); err != nil || r.ID == "" {
		return false
	}
	switch r.Op {
	case "del":
		p.drop(r.ID)
	case "set":
		if !p.prefix.Contains(r.IP) {
			return false
		}
		off := u32(r.IP) - p.base
		if old := p.byID[r.ID]; old != nil {
			if old.IP == r.IP {
				*old = r.allocation
				return true
			}
			p.drop(r.ID)
		}
		if p.isSet(off) {
			// Reserved, or claimed by another sandbox: the journal was
			// not written by us. Keep the first claim.
			return false
		}
		a := r.allocation
		p.set(off)
		p.nfree--
		p.byID[a.ID] = &a
	default:
		return false
	}
	return true
}

func (p *ipam) set(off uint32)        { p.used[off/64] |= 1 << (off % 64) }
func (p *ipam) clear(off uint32)      { p.used[off/64] &^= 1 << (off % 64) }
func (p *ipam) isSet(off uint32) bool { return p.used[off/64]&(1<<(off%64)) != 0 }

// get returns the sandbox's claim, or nil.
func (p *ipam) get(id string) *allocation { return p.byID[id] }

// allocate claims an address for id, or returns id's existing claim.
func (p *ipam) allocate(id, netnsPath string) (*allocation, error) {
	if a := p.byID[id]; a != nil {
		return a, nil
	}
	off, ok := p.findFree()
	if !ok {
		return nil, fmt.Errorf("%w: no free address in %s", ErrExhausted, p.prefix)
	}
	a := &allocation{ID: id, IP: addrOf(p.base + off), NetNS: netnsPath}
	if err := p.log("set", a); err != nil {
		return nil, err
	}
	p.set(off)
	p.nfree--
	p.next = off + 1
	if p.next >= p.size {
		p.next = 0
	}
	p.byID[id] = a
	return a, nil
}

// findFree finds the first free offset at or after the cursor, wrapping.
func (p *ipam) findFree() (uint32, bool) {
	if p.nfree <= 0 {
		return 0, false
	}
	n := uint32(len(p.used))
	start := p.next / 64
	for i := uint32(0); i <= n; i++ {
		w := (start + i) % n
		word := p.used[w]
		if i == 0 {
			// Skip bits below the cursor on the first pass; they are
			// visited again when the search wraps around (i == n).
			word |= 1<<(p.next%64) - 1
		}
		if word != ^uint64(0) {
			return w*64 + uint32(bits.TrailingZeros64(^word)), true
		}
	}
	return 0, false
}

// update persists a changed claim (its netns path or ports).
func (p *ipam) update(a *allocation) error { return p.log("set", a) }

// release drops id's claim. Releasing an unknown id is a no-op.
func (p *ipam) release(id string) error {
	a := p.byID[id]
	if a == nil {
		return nil
	}
	if err := p.log("del", &allocation{ID: id, IP: a.IP}); err != nil {
		return err
	}
	p.drop(id)
	return nil
}

// drop forgets id's claim in memory.
func (p *ipam) drop(id string) {
	a := p.byID[id]
	if a == nil {
		return
	}
	p.clear(u32(a.IP) - p.base)
	p.nfree++
	delete(p.byID, id)
}

// all returns every claim.
func (p *ipam) all() []*allocation {
	out := make([]*allocation, 0, len(p.byID))
	for _, a := range p.byID {
		out = append(out, a)
	}
	return out
}

// close closes the journal.
func (p *ipam) close() error {
	if p.journal == nil {
		return nil
	}
	err := p.journal.Close()
	p.journal = nil
	return err
}

func appendRecord(buf []byte, op string, a *allocation) ([]byte, error) {
	body, err := json.Marshal(record{Op: op, allocation: *a})
	if err != nil {
		return buf, err
	}
	buf = fmt.Appendf(buf, "%08x ", crc32.ChecksumIEEE(body))
	buf = append(buf, body...)
	return append(buf, '\n'), nil
}

// log appends one record to the journal in a single write, compacting
// first when the journal has grown well past the live claims.
func (p *ipam) log(op string, a *allocation) error {
	if p.journal == nil {
		return fmt.Errorf("ipam: closed")
	}
	if p.lines > 2*len(p.byID)+1024 {
		if err := p.compact(); err != nil {
			return err
		}
	}
	var err error
	if p.buf, err = appendRecord(p.buf[:0], op, a); err != nil {
		return fmt.Errorf("ipam: %w", err)
	}
	if _, err := p.journal.Write(p.buf); err != nil {
		// A partial line is skipped at load (no newline, or bad sum);
		// a newline keeps it from swallowing the next record.
		p.journal.Write([]byte{'\n'})
		p.lines++
		return fmt.Errorf("ipam: journal: %w", err)
	}
	p.lines++
	return nil
}

// compact writes the live claims to a new journal and renames it into
// place, so a crash leaves the old journal or the new one, never a mix.
func (p *ipam) compact() error {
	var buf []byte
	var err error
	for _, a := range p.byID {
		if buf, err = appendRecord(buf, "set", a); err != nil {
			return fmt.Errorf("ipam: %w", err)
		}
	}
	final := filepath.Join(p.dir, journalName)
	tmp := final + ".tmp"
	if err := os.WriteFile(tmp, buf, 0o600); err != nil {
		return fmt.Errorf("ipam: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("ipam: %w", err)
	}
	f, err := os.OpenFile(final, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("ipam: %w", err)
	}
	p.close()
	p.journal = f
	p.lines = len(p.byID)
	return nil
}
