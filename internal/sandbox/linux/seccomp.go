package linux

import (
	"encoding/hex"
	"sort"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The default seccomp profile: an allowlist modelled on the syscalls that
// Docker's default profile allows to a container with the default
// capabilities (the table is ours, per architecture, in
// seccomp_<arch>.go). Everything else fails with EPERM, except numbers
// beyond the highest syscall the table knows, which fail with ENOSYS so
// that libc falls back from syscalls newer than the profile (as it does
// for clone3, which is denied with ENOSYS because its flags sit in memory
// where a filter cannot look).
//
// The program is a balanced binary search over the syscall number, so a
// syscall costs about 2·log2(ranges) instructions instead of a walk down
// a list of 350.

// seccomp_data offsets (include/uapi/linux/seccomp.h).
const (
	scNr   = 0
	scArch = 4
	scArgs = 16 // args[i] at 16+8i; the low 32 bits first (little endian)
)

// sysAction is what the profile does with one syscall number.
type sysAction int

const (
	sysDeny   sysAction = iota // EPERM
	sysAllow                   // allowed
	sysENOSYS                  // ENOSYS: libc falls back
	sysCheck                   // allowed or denied by its arguments: see sysProfile.checks
)

// sysProfile is an architecture's profile table.
type sysProfile struct {
	arch uint32
	// x32 numbers carry this bit on amd64; they are denied (0: none).
	x32Bit uint32
	allow  []uint32
	enosys []uint32
	// checks filter on arguments; each program starts with the syscall's
	// seccomp_data loaded and ends in returns.
	checks map[uint32][]unix.SockFilter
	// known is the highest syscall number the table was written for.
	known uint32
}

var (
	seccompOnce sync.Once
	seccompProg []unix.SockFilter
	seccompEnc  string
)

// seccompFilter returns the default profile as a BPF program, or nil
// where this architecture has no table (seccomp is then not applied).
func seccompFilter() []unix.SockFilter {
	seccompOnce.Do(func() {
		if p := archProfile(); p != nil {
			seccompProg = p.build()
			b := unsafe.Slice((*byte)(unsafe.Pointer(&seccompProg[0])), len(seccompProg)*int(unsafe.Sizeof(seccompProg[0])))
			seccompEnc = hex.EncodeToString(b)
		}
	})
	return seccompProg
}

// seccompHex encodes the program's struct sock_filter array for the C
// stage (lockdown.c), which installs it right before execve.
func seccompHex() string {
	seccompFilter()
	return seccompEnc
}

func stmt(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }
func jump(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
}

const (
	ldAbs = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	jeqK  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	jgeK  = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
	jsetK = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
	ja    = unix.BPF_JMP | unix.BPF_JA
	ret   = unix.BPF_RET | unix.BPF_K
)

func retErrno(errno unix.Errno) unix.SockFilter {
	return stmt(ret, unix.SECCOMP_RET_ERRNO|uint32(errno)&unix.SECCOMP_RET_DATA)
}

var (
	retAllow = stmt(ret, unix.SECCOMP_RET_ALLOW)
	retEPERM = retErrno(unix.EPERM)
)

// argNotMasked allows the syscall unless the low 32 bits of argument i
// have any bit of mask set.
func argNotMasked(i int, mask uint32) []unix.SockFilter {
	return []unix.SockFilter{
		stmt(ldAbs, uint32(scArgs+8*i)),
		jump(jsetK, mask, 0, 1),
		retEPERM,
		retAllow,
	}
}

// argNot allows the syscall unless the low 32 bits of argument i equal v.
func argNot(i int, v uint32) []unix.SockFilter {
	return []unix.SockFilter{
		stmt(ldAbs, uint32(scArgs+8*i)),
		jump(jeqK, v, 0, 1),
		retEPERM,
		retAllow,
	}
}

// argIn allows the syscall only when the low 32 bits of argument i are
// one of vs.
func argIn(i int, vs ...uint32) []unix.SockFilter {
	p := []unix.SockFilter{stmt(ldAbs, uint32(scArgs+8*i))}
	for j, v := range vs {
		p = append(p, jump(jeqK, v, uint8(len(vs)-j), 0))
	}
	return append(p, retEPERM, retAllow)
}

// segment is a run of syscall numbers with one action.
type segment struct {
	lo     uint32
	action sysAction
	nr     uint32 // the syscall of a sysCheck segment
}

// insn is an instruction being laid out; check >= 0 marks a jump to the
// argument check of that syscall, resolved once the layout is known.
type insn struct {
	f     unix.SockFilter
	check int
}

func (p *sysProfile) build() []unix.SockFilter {
	act := map[uint32]sysAction{}
	for _, nr := range p.allow {
		act[nr] = sysAllow
	}
	for _, nr := range p.enosys {
		act[nr] = sysENOSYS
	}
	for nr := range p.checks {
		act[nr] = sysCheck
	}
	// Segments over [0, known], then everything above: ENOSYS.
	var segs []segment
	for nr := uint32(0); nr <= p.known; nr++ {
		a := act[nr]
		if a == sysCheck || len(segs) == 0 || segs[len(segs)-1].action != a || segs[len(segs)-1].action == sysCheck {
			segs = append(segs, segment{lo: nr, action: a, nr: nr})
		}
	}
	segs = append(segs, segment{lo: p.known + 1, action: sysENOSYS})

	checkNrs := make([]uint32, 0, len(p.checks))
	for nr := range p.checks {
		checkNrs = append(checkNrs, nr)
	}
	sort.Slice(checkNrs, func(i, j int) bool { return checkNrs[i] < checkNrs[j] })
	checkIdx := map[uint32]int{}
	for i, nr := range checkNrs {
		checkIdx[nr] = i
	}

	var out []insn
	add := func(fs ...unix.SockFilter) {
		for _, f := range fs {
			out = append(out, insn{f: f, check: -1})
		}
	}
	// The architecture: another ABI's numbers mean other syscalls.
	add(stmt(ldAbs, scArch), jump(jeqK, p.arch, 1, 0), stmt(ret, unix.SECCOMP_RET_KILL_PROCESS))
	add(stmt(ldAbs, scNr))
	if p.x32Bit != 0 {
		add(jump(jgeK, p.x32Bit, 0, 1), retEPERM)
	}
	out = append(out, tree(segs, checkIdx)...)
	starts := make([]int, len(checkNrs))
	for i, nr := range checkNrs {
		starts[i] = len(out)
		add(p.checks[nr]...)
	}
	prog := make([]unix.SockFilter, len(out))
	for i, in := range out {
		if in.check >= 0 {
			in.f.K = uint32(starts[in.check] - (i + 1))
		}
		prog[i] = in.f
	}
	return prog
}

// tree lays out a binary search over segs (sorted by lo), with the
// syscall number in A. Each inner node is "A >= k ? right : left", as a
// conditional jump and an unconditional one (whose offset has no 8-bit
// limit).
func tree(segs []segment, checkIdx map[uint32]int) []insn {
	if len(segs) == 1 {
		s := segs[0]
		switch s.action {
		case sysAllow:
			return []insn{{f: retAllow, check: -1}}
		case sysENOSYS:
			return []insn{{f: retErrno(unix.ENOSYS), check: -1}}
		case sysCheck:
			return []insn{{f: stmt(ja, 0), check: checkIdx[s.nr]}}
		default:
			return []insn{{f: retEPERM, check: -1}}
		}
	}
	mid := len(segs) / 2
	left, right := tree(segs[:mid], checkIdx), tree(segs[mid:], checkIdx)
	out := make([]insn, 0, 2+len(left)+len(right))
	out = append(out,
		insn{f: jump(jgeK, segs[mid].lo, 0, 1), check: -1},
		insn{f: stmt(ja, uint32(len(left))), check: -1})
	out = append(out, left...)
	return append(out, right...)
}
