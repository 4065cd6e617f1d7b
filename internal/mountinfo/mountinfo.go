// Package mountinfo reads the mount table of the calling process
// (/proc/self/mountinfo): the runtime unmounts what lies under a
// sandbox's directory with it, and the leak checks look for what is left.
package mountinfo

import (
	"bufio"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Under returns the mount points at or below dir, deepest first (the
// order to unmount them in). A mount stacked twice is listed twice.
func Under(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return under(f, dir)
}

func under(r io.Reader, dir string) ([]string, error) {
	dir = strings.TrimSuffix(dir, "/")
	prefix := dir + "/"
	var mps []string
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		// Field 5 is the mount point, with octal escapes for spaces etc.
		fields := strings.SplitN(s.Text(), " ", 6)
		if len(fields) < 5 {
			continue
		}
		mp := Unescape(fields[4])
		if mp == dir || strings.HasPrefix(mp, prefix) {
			mps = append(mps, mp)
		}
	}
	sort.SliceStable(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	return mps, s.Err()
}

// Unescape undoes the kernel's octal escapes in a mountinfo field
// (\040 for a space, \011 tab, \012 newline, \134 backslash).
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
