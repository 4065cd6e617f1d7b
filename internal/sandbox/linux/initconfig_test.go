package linux

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func sampleConfig() *initConfig {
	return &initConfig{
		HostID: 0x10000000, Rootfs: "/state/c/fs/root", Upper: "/state/c/fs/upper", Work: "/state/c/fs/work",
		Lower: []string{"/snap/1", "/snap/2"},
		Mounts: []initMount{
			{Type: "bind", Source: "/state/etc/hosts", Dest: "/etc/hosts"},
			{Type: "bind", Source: "/vol/data", Dest: "/data", ReadOnly: true},
			{Type: "tmpfs", Dest: "/run", Data: "size=1m,mode=755"},
		},
		ReadOnlyRoot: true, Args: []string{"sh", "-c", "echo 'hi'"}, Env: []string{"PATH=/bin", "A="},
		Cwd: "/work", UID: 1000, GID: 4294967295,
	}
}

func TestInitConfigRoundTrip(t *testing.T) {
	minimal := &initConfig{Rootfs: "/r", Upper: "/u", Work: "/w", Lower: []string{"/l"}, Args: []string{"true"}}
	many := sampleConfig()
	for i := 0; i < initMaxLayers-2; i++ {
		many.Lower = append(many.Lower, "/snap/more")
	}
	many.Env = append(many.Env, strings.Repeat("X", 1<<20))
	for name, cfg := range map[string]*initConfig{"sample": sampleConfig(), "minimal": minimal, "many": many} {
		t.Run(name, func(t *testing.T) {
			msg, err := cfg.encode()
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeInitConfig(msg)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, cfg) {
				t.Errorf("decoded\n%+v\nwant\n%+v", got, cfg)
			}
		})
	}
}

func TestInitConfigEncodeRejects(t *testing.T) {
	nul := sampleConfig()
	nul.Args[1] = "a\x00b"
	layers := sampleConfig()
	layers.Lower = make([]string, initMaxLayers+1)
	big := sampleConfig()
	big.Env = []string{strings.Repeat("x", initConfigMax)}
	for name, cfg := range map[string]*initConfig{"nul": nul, "layers": layers, "big": big} {
		if _, err := cfg.encode(); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
}

// frame prefixes a payload with its length.
func frame(payload string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	return append(b, payload...)
}

// fields makes a payload of NUL-terminated fields.
func fields(f ...string) string { return strings.Join(f, "\x00") + "\x00" }

func TestInitConfigBad(t *testing.T) {
	good := func(edit func(f []string) []string) []byte {
		f := []string{initConfigMagic, "0", "/r", "/u", "/w", "0", "", "0", "0", "1", "/l", "1", "bind", "/s", "/d", "", "0", "1", "true", "0"}
		return frame(fields(edit(f)...))
	}
	set := func(i int, v string) func([]string) []string {
		return func(f []string) []string { f[i] = v; return f }
	}
	if _, err := decodeInitConfig(good(func(f []string) []string { return f })); err != nil {
		t.Fatalf("the base case fails: %v", err)
	}
	bigLen := binary.BigEndian.AppendUint32(nil, initConfigMax+1)
	noFinalNUL := good(func(f []string) []string { return f })
	noFinalNUL = noFinalNUL[:len(noFinalNUL)-1]
	binary.BigEndian.PutUint32(noFinalNUL, uint32(len(noFinalNUL)-4))
	for _, tc := range []struct {
		name string
		msg  []byte
		want string
	}{
		{"empty", nil, "truncated length (0 bytes)"},
		{"short length", []byte{0, 0}, "truncated length (2 bytes)"},
		{"zero length", []byte{0, 0, 0, 0}, "length 0 out of range"},
		{"oversized", append(bigLen, "x"...), "out of range"},
		{"max length", []byte{0xff, 0xff, 0xff, 0xff}, "out of range"},
		{"truncated payload", frame(fields(initConfigMagic, "0"))[:10], "truncated (6 of 15 bytes)"},
		{"garbage", frame("\xde\xad\xbe\xef"), "truncated at version"},
		{"wrong version", frame(fields("skiff-init-0")), `unknown version "skiff-init-0"`},
		{"only version", frame(fields(initConfigMagic)), "truncated at host id"},
		{"no final NUL", noFinalNUL, "truncated at environment count"},
		{"negative id", good(set(1, "-1")), `bad host id "-1"`},
		{"id overflow", good(set(7, "4294967296")), `bad uid "4294967296"`},
		{"long number", good(set(8, "00000000001")), `bad gid`},
		{"hex number", good(set(8, "0x1")), `bad gid "0x1"`},
		{"empty number", good(set(1, "")), `bad host id ""`},
		{"relative rootfs", good(set(2, "r")), `bad rootfs "r"`},
		{"upper with comma", good(set(3, "/u,lowerdir=/")), `bad upper dir`},
		{"relative cwd", good(set(6, "work")), `bad working dir "work"`},
		{"flag 2", good(set(5, "2")), `bad read-only root "2"`},
		{"no layers", good(func(f []string) []string { return append(f[:9], append([]string{"0"}, f[11:]...)...) }), "no rootfs layers"},
		{"layer with colon", good(set(10, "/a:/b")), `bad rootfs layer "/a:/b"`},
		{"too many layers", good(set(9, "501")), `bad layer count "501"`},
		{"layer count past the end", good(set(9, "99")), "layer count 99 longer than the message"},
		{"unknown mount type", good(set(12, "overlay")), `unknown mount type "overlay"`},
		{"relative bind source", good(set(13, "etc/passwd")), `bad mount source "etc/passwd"`},
		{"mount on root", good(set(14, "/")), `mount on "/"`},
		{"huge mount count", good(set(11, "1025")), `bad mount count "1025"`},
		{"no command", good(set(17, "0")), "no command"},
		{"empty command", good(set(18, "")), "no command"},
		{"args past the end", good(set(17, "50")), "argument count 50 longer than the message"},
		{"trailing bytes", append(good(func(f []string) []string { return append(f, "x") }), 0), "after the last field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "trailing bytes" {
				// Fix up the length for the extra byte.
				binary.BigEndian.PutUint32(tc.msg, uint32(len(tc.msg)-4))
			}
			_, err := decodeInitConfig(tc.msg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "init config: ") && !strings.HasPrefix(err.Error(), "read init config") {
				t.Errorf("error %q without a prefix", err)
			}
		})
	}
}

// FuzzInitConfig: any payload is parsed or refused with a message; what is
// parsed encodes back to a message that parses to the same config.
func FuzzInitConfig(f *testing.F) {
	msg, _ := sampleConfig().encode()
	f.Add(msg[4:])
	f.Add([]byte(fields(initConfigMagic, "0", "/r", "/u", "/w", "0", "", "0", "0", "1", "/l", "0", "1", "x", "0")))
	f.Add([]byte("\x00\x00"))
	f.Fuzz(func(t *testing.T, payload []byte) {
		if len(payload) > initConfigMax {
			return
		}
		cfg, err := decodeInitConfig(frame(string(payload)))
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		again, err := cfg.encode()
		if err != nil {
			t.Fatalf("re-encode %+v: %v", cfg, err)
		}
		cfg2, err := decodeInitConfig(again)
		if err != nil || !reflect.DeepEqual(cfg, cfg2) {
			t.Fatalf("round trip: %+v, %v; want %+v", cfg2, err, cfg)
		}
	})
}

// TestConfigParserSanitized builds the C parser (rootfs.c) with
// testdata/configfuzz.c under AddressSanitizer and UBSan, and runs it on
// mutated messages: a read past the end of a message, undefined behaviour
// or a leak fails it, where from Go only a crash would show.
func TestConfigParserSanitized(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a C program")
	}
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	bin := filepath.Join(t.TempDir(), "configfuzz")
	build := exec.Command(cc, "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
		"-I.", "-o", bin, "testdata/configfuzz.c", "rootfs.c")
	if out, err := build.CombinedOutput(); err != nil {
		t.Skipf("cannot build with sanitizers (%v): %s", err, out)
	}
	if out, err := exec.Command(bin, "200000", "1").CombinedOutput(); err != nil {
		t.Fatalf("configfuzz: %v\n%s", err, out)
	}
}

// TestInitStageBadConfig drives the real init stage (the C constructor,
// in this test binary) with bad messages: it must report an error on the
// socket and exit 1, not crash or hang. It runs in a mount namespace of
// its own, so that nothing it might mount reaches the host.
func TestInitStageBadConfig(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("privileged: needs root")
	}
	bigLen := binary.BigEndian.AppendUint32(nil, 1<<30)
	for _, tc := range []struct {
		name string
		msg  []byte
		want string
	}{
		{"eof", nil, "read init config: truncated length (0 bytes)"},
		{"oversized", bigLen, "read init config: length 1073741824 out of range"},
		{"truncated", frame(fields(initConfigMagic, "0", "/r"))[:12], "read init config: truncated (8 of 18 bytes)"},
		{"garbage", frame("\x01\x02\x03 not a config"), "init config: truncated at version"},
		{"bad field", frame(fields(initConfigMagic, "zero")), `init config: bad host id "zero"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			ours, theirs := os.NewFile(uintptr(fds[0]), "init"), os.NewFile(uintptr(fds[1]), "init-child")
			defer ours.Close()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = []string{initEnv + "=1"}
			cmd.ExtraFiles = []*os.File{theirs}
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			theirs.Close()
			if _, err := ours.Write(tc.msg); err != nil {
				t.Fatal(err)
			}
			_ = unix.Shutdown(fds[0], unix.SHUT_WR)
			_ = ours.SetReadDeadline(time.Now().Add(10 * time.Second))
			var m initMsg
			derr := json.NewDecoder(ours).Decode(&m)
			werr := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(werr, &ee) || ee.ExitCode() != 1 {
				t.Errorf("init stage ended with %v, want exit status 1 (stderr %q)", werr, stderr.String())
			}
			if derr != nil || m.Error != tc.want {
				t.Errorf("reported %+v (%v), want Error %q", m, derr, tc.want)
			}
		})
	}
}
