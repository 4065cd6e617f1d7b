package linux

import (
	"encoding/binary"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// runBPF interprets a seccomp program over one seccomp_data (the subset of
// classic BPF the builder emits).
func runBPF(t *testing.T, prog []unix.SockFilter, nr, arch uint32, args ...uint64) uint32 {
	t.Helper()
	data := make([]byte, 64)
	binary.LittleEndian.PutUint32(data[0:], nr)
	binary.LittleEndian.PutUint32(data[4:], arch)
	for i, a := range args {
		binary.LittleEndian.PutUint64(data[16+8*i:], a)
	}
	var acc uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case ldAbs:
			acc = binary.LittleEndian.Uint32(data[in.K:])
		case ja:
			pc += int(in.K)
		case jeqK, jgeK, jsetK:
			var c bool
			switch in.Code {
			case jeqK:
				c = acc == in.K
			case jgeK:
				c = acc >= in.K
			default:
				c = acc&in.K != 0
			}
			if c {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case ret:
			return in.K
		default:
			t.Fatalf("pc %d: unexpected instruction %#x", pc, in.Code)
		}
	}
	t.Fatal("program fell off its end")
	return 0
}

func TestSeccompProgram(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("table for amd64 only")
	}
	prog := seccompFilter()
	if len(prog) == 0 || len(prog) > 4096 {
		t.Fatalf("program of %d instructions", len(prog))
	}
	eperm := unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	enosys := unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	allow := uint32(unix.SECCOMP_RET_ALLOW)
	x86 := uint32(unix.AUDIT_ARCH_X86_64)
	for _, tc := range []struct {
		name string
		nr   uint32
		arch uint32
		args []uint64
		want uint32
	}{
		{"read", unix.SYS_READ, x86, nil, allow},
		{"write", unix.SYS_WRITE, x86, nil, allow},
		{"execve", unix.SYS_EXECVE, x86, nil, allow},
		{"mseal is known, denied", unix.SYS_MSEAL, x86, nil, eperm},
		{"mount", unix.SYS_MOUNT, x86, nil, eperm},
		{"umount2", unix.SYS_UMOUNT2, x86, nil, eperm},
		{"pivot_root", unix.SYS_PIVOT_ROOT, x86, nil, eperm},
		{"setns", unix.SYS_SETNS, x86, nil, eperm},
		{"unshare", unix.SYS_UNSHARE, x86, nil, eperm},
		{"keyctl", unix.SYS_KEYCTL, x86, nil, eperm},
		{"bpf", unix.SYS_BPF, x86, nil, eperm},
		{"kexec_load", unix.SYS_KEXEC_LOAD, x86, nil, eperm},
		{"open_by_handle_at", unix.SYS_OPEN_BY_HANDLE_AT, x86, nil, eperm},
		{"init_module", unix.SYS_INIT_MODULE, x86, nil, eperm},
		{"reboot", unix.SYS_REBOOT, x86, nil, eperm},
		{"clock_settime", unix.SYS_CLOCK_SETTIME, x86, nil, eperm},
		{"open_tree", unix.SYS_OPEN_TREE, x86, nil, eperm},
		{"io_uring_setup", unix.SYS_IO_URING_SETUP, x86, nil, eperm},
		{"clone for fork", unix.SYS_CLONE, x86, []uint64{uint64(unix.SIGCHLD)}, allow},
		{"clone for a thread", unix.SYS_CLONE, x86, []uint64{unix.CLONE_VM | unix.CLONE_THREAD | unix.CLONE_SIGHAND}, allow},
		{"clone NEWUSER", unix.SYS_CLONE, x86, []uint64{unix.CLONE_NEWUSER | uint64(unix.SIGCHLD)}, eperm},
		{"clone NEWNS", unix.SYS_CLONE, x86, []uint64{unix.CLONE_NEWNS}, eperm},
		{"clone3", unix.SYS_CLONE3, x86, nil, enosys},
		{"socket inet", unix.SYS_SOCKET, x86, []uint64{unix.AF_INET}, allow},
		{"socket packet", unix.SYS_SOCKET, x86, []uint64{unix.AF_PACKET}, eperm},
		{"personality query", unix.SYS_PERSONALITY, x86, []uint64{0xffffffff}, allow},
		{"personality linux32", unix.SYS_PERSONALITY, x86, []uint64{8 | 0x0800000}, eperm},
		{"beyond the table", 600, x86, nil, enosys},
		{"x32", unix.SYS_READ | 0x40000000, x86, nil, eperm},
		{"i386", 3, unix.AUDIT_ARCH_I386, nil, unix.SECCOMP_RET_KILL_PROCESS},
	} {
		if got := runBPF(t, prog, tc.nr, tc.arch, tc.args...); got != tc.want {
			t.Errorf("%s: %#x, want %#x", tc.name, got, tc.want)
		}
	}
	// Every syscall of the table is reached and allowed.
	for _, nr := range archProfile().allow {
		if got := runBPF(t, prog, nr, x86); got != allow {
			t.Errorf("syscall %d: %#x, want allow", nr, got)
		}
	}
}
