//go:build linux

package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Layer tar entries are written for use as an overlayfs lowerdir:
//
//   - names are cleaned; a leading "/" is dropped; a ".." component rejects
//     the layer;
//   - every path is resolved inside the snapshot root with openat2
//     RESOLVE_IN_ROOT, so a symlink (absolute or with ../) in the layer is
//     followed as a container would follow it, never out of the root;
//   - files are created with O_EXCL|O_NOFOLLOW after removing whatever
//     occupied the name, so nothing is ever written through a link;
//   - hard links must point at an entry of the same layer, inside the root;
//   - ".wh.NAME" becomes a 0/0 character device NAME (an overlayfs
//     whiteout) and ".wh..wh..opq" sets trusted.overlay.opaque=y on its
//     directory; other ".wh..wh." names (aufs bookkeeping) are dropped;
//   - character and block devices are skipped (a sandbox gets its own /dev);
//     a 0/0 character device is kept, as it is already a whiteout;
//   - modes (setuid included), owners and times are kept; xattrs only in
//     user.* and security.capability: trusted.* could forge overlay markers.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

type extractor struct {
	root    int    // snapshot root, O_RDONLY|O_DIRECTORY
	dirName string // cached parent directory: tars list siblings together
	dirFd   int
	stale   bool       // the cache may resolve differently now: drop before next use
	dirs    []dirEntry // metadata applied at the end, once children exist
	size    int64
	chown   bool
	buf     []byte
}

type dirEntry struct {
	name string
	hdr  *tar.Header
}

// extractTar unpacks the layer tar r into the existing directory root and
// returns the total size of its regular files.
func extractTar(ctx context.Context, root string, r io.Reader) (int64, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	e := &extractor{root: fd, dirFd: -1, chown: os.Geteuid() == 0, buf: make([]byte, 1<<20)}
	defer e.close()
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, fmt.Errorf("%w: layer is not a readable tar: %v", ErrCorrupt, err)
		}
		if err := e.entry(hdr, tr); err != nil {
			if errors.Is(err, ErrInvalid) || ctx.Err() != nil || hostFault(err) {
				return 0, fmt.Errorf("layer entry %q: %w", hdr.Name, err)
			}
			return 0, fmt.Errorf("%w: layer entry %q: %v", ErrInvalid, hdr.Name, err)
		}
	}
	for _, d := range e.dirs {
		if err := e.dirMeta(d); err != nil {
			return 0, fmt.Errorf("layer directory %q: %w", d.name, err)
		}
	}
	return e.size, nil
}

func (e *extractor) close() {
	e.dropCache()
	unix.Close(e.root)
}

func (e *extractor) dropCache() {
	if e.dirFd >= 0 {
		unix.Close(e.dirFd)
	}
	e.dirFd, e.dirName, e.stale = -1, "", false
}

// cleanName makes a tar name relative and clean; ".." anywhere rejects it.
func cleanName(name string) (string, error) {
	n := strings.TrimLeft(name, "/")
	for _, c := range strings.Split(n, "/") {
		if c == ".." {
			return "", fmt.Errorf("%w: path %q climbs out of the layer with ..", ErrInvalid, name)
		}
	}
	if strings.IndexByte(n, 0) >= 0 || len(n) >= unix.PathMax {
		return "", fmt.Errorf("%w: path has a NUL byte or is too long", ErrInvalid)
	}
	if n == "" {
		return ".", nil
	}
	return path.Clean(n), nil
}

func splitName(name string) (dir, base string) {
	dir, base = path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	return dir, base
}

func (e *extractor) entry(hdr *tar.Header, body io.Reader) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || hdr.Uid >= math.MaxUint32 || hdr.Gid >= math.MaxUint32 {
		return fmt.Errorf("%w: bad owner %d:%d", ErrInvalid, hdr.Uid, hdr.Gid)
	}
	if name == "." {
		if hdr.Typeflag == tar.TypeDir {
			e.dirs = append(e.dirs, dirEntry{".", hdr})
		}
		return nil
	}
	dir, base := splitName(name)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return e.whiteout(dir, base)
	}
	pfd, err := e.parent(dir)
	if err != nil {
		return err
	}
	mode := uint32(hdr.Mode & 0o7777)
	if isSparse(hdr) {
		// Its holes would be written out as zeros: a tiny layer could fill
		// the disk. Image builders never emit sparse entries.
		return fmt.Errorf("%w: sparse files are not supported in layers", ErrInvalid)
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		var st unix.Stat_t
		if unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				e.dirs = append(e.dirs, dirEntry{name, hdr})
				return nil // merge into the existing directory
			}
			if err := e.remove(pfd, base); err != nil {
				return err
			}
		}
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
			return err
		}
		e.dirs = append(e.dirs, dirEntry{name, hdr})
		return nil

	case tar.TypeReg:
		fd, err := e.create(pfd, base, func() (int, error) {
			return unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		})
		if err != nil {
			return err
		}
		err = e.writeFile(fd, hdr, body, mode)
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		e.size += hdr.Size
		return e.times(pfd, base, hdr)

	case tar.TypeSymlink:
		if hdr.Linkname == "" || strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return fmt.Errorf("%w: bad symlink target", ErrInvalid)
		}
		// The target is stored as is: we never follow it, and a container
		// resolves it inside its own root.
		if _, err := e.create(pfd, base, func() (int, error) { return -1, unix.Symlinkat(hdr.Linkname, pfd, base) }); err != nil {
			return err
		}
		e.stale = true // the new link may change how later paths resolve
		if err := e.lchown(pfd, base, hdr); err != nil {
			return err
		}
		return e.times(pfd, base, hdr)

	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil || target == "." {
			return fmt.Errorf("%w: hard link to %q, outside the layer", ErrInvalid, hdr.Linkname)
		}
		tdir, tbase := splitName(target)
		tfd, err := e.openDir(tdir)
		if err != nil {
			return fmt.Errorf("%w: hard link to %q, which is not in this layer", ErrInvalid, hdr.Linkname)
		}
		defer unix.Close(tfd)
		var st unix.Stat_t
		if err := unix.Fstatat(tfd, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return fmt.Errorf("%w: hard link to %q, which is not a file in this layer", ErrInvalid, hdr.Linkname)
		}
		if target == name {
			return nil // a link to itself: nothing to do
		}
		_, err = e.create(pfd, base, func() (int, error) { return -1, unix.Linkat(tfd, tbase, pfd, base, 0) })
		return err

	case tar.TypeFifo:
		if _, err := e.create(pfd, base, func() (int, error) { return -1, unix.Mknodat(pfd, base, unix.S_IFIFO|0o600, 0) }); err != nil {
			return err
		}
		return e.meta(pfd, base, hdr, mode)

	case tar.TypeChar, tar.TypeBlock:
		if hdr.Typeflag == tar.TypeChar && hdr.Devmajor == 0 && hdr.Devminor == 0 {
			return e.mkWhiteout(pfd, base)
		}
		return nil // devices are skipped: the sandbox builds /dev itself
	}
	return nil // pax globals, GNU volume headers and the like carry no file
}

// parent returns an fd for directory dir (relative to the root), creating
// missing directories. The fd is cached and must not be closed.
func (e *extractor) parent(dir string) (int, error) {
	if dir == "." {
		return e.root, nil
	}
	if e.stale {
		e.dropCache()
	}
	if e.dirFd >= 0 && e.dirName == dir {
		return e.dirFd, nil
	}
	e.dropCache()
	fd, err := e.openDir(dir)
	if errors.Is(err, unix.ENOENT) {
		if err = e.mkdirAll(dir); err == nil {
			fd, err = e.openDir(dir)
		}
	}
	if err != nil {
		return -1, fmt.Errorf("%w: directory %q: %v", ErrInvalid, dir, err)
	}
	e.dirFd, e.dirName = fd, dir
	return fd, nil
}

// openDir opens dir inside the root: symlinks resolve as in a chroot.
func (e *extractor) openDir(dir string) (int, error) {
	if dir == "." {
		return unix.Dup(e.root)
	}
	how := &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	for {
		fd, err := unix.Openat2(e.root, dir, how)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		return fd, err
	}
}

// mkdirAll creates the missing directories of dir, mode 0755, in the root.
func (e *extractor) mkdirAll(dir string) error {
	parts := strings.Split(dir, "/")
	for i := range parts {
		pfd, err := e.openDir(path.Join(append([]string{"."}, parts[:i]...)...))
		if err != nil {
			return err
		}
		err = unix.Mkdirat(pfd, parts[i], 0o755)
		unix.Close(pfd)
		if err != nil && err != unix.EEXIST {
			return err
		}
	}
	return nil
}

// create runs mk; if the name is taken it removes what is there (a file, a
// link, a whole directory: later entries win, as with tar) and runs it again.
func (e *extractor) create(pfd int, base string, mk func() (int, error)) (int, error) {
	fd, err := mk()
	if err != unix.EEXIST {
		return fd, err
	}
	if err := e.remove(pfd, base); err != nil {
		return -1, err
	}
	return mk()
}

func (e *extractor) remove(pfd int, base string) error {
	e.stale = true // pfd stays open until the next entry
	err := unix.Unlinkat(pfd, base, 0)
	if err == unix.EISDIR {
		err = removeAllAt(pfd, base)
	}
	return err
}

// removeAllAt removes directory base under pfd without following links.
func removeAllAt(pfd int, base string) error {
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), base)
	names, err := f.Readdirnames(-1)
	if err == nil {
		for _, n := range names {
			if err = unix.Unlinkat(fd, n, 0); err == unix.EISDIR {
				err = removeAllAt(fd, n)
			}
			if err != nil {
				break
			}
		}
	}
	f.Close()
	if err != nil {
		return err
	}
	return unix.Unlinkat(pfd, base, unix.AT_REMOVEDIR)
}

func (e *extractor) writeFile(fd int, hdr *tar.Header, body io.Reader, mode uint32) error {
	for {
		n, err := body.Read(e.buf)
		for w := 0; w < n; {
			m, werr := unix.Write(fd, e.buf[w:n])
			if werr == unix.EINTR {
				continue
			}
			if werr != nil {
				return werr
			}
			w += m
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
	}
	if e.chown {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	// After chown, which clears setuid/setgid.
	if err := unix.Fchmod(fd, mode); err != nil {
		return err
	}
	for k, v := range xattrs(hdr) {
		if err := unix.Fsetxattr(fd, k, []byte(v), 0); err != nil && err != unix.ENOTSUP {
			return fmt.Errorf("xattr %s: %w", k, err)
		}
	}
	return nil
}

// meta sets owner, mode and times of a non-directory, non-symlink entry.
func (e *extractor) meta(pfd int, base string, hdr *tar.Header, mode uint32) error {
	if err := e.lchown(pfd, base, hdr); err != nil {
		return err
	}
	if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
		return err
	}
	return e.times(pfd, base, hdr)
}

func (e *extractor) lchown(pfd int, base string, hdr *tar.Header) error {
	if !e.chown {
		return nil
	}
	return unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW)
}

func (e *extractor) times(pfd int, base string, hdr *tar.Header) error {
	at := hdr.AccessTime
	if at.IsZero() {
		at = hdr.ModTime
	}
	ts := []unix.Timespec{unix.NsecToTimespec(at.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	return unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func (e *extractor) dirMeta(d dirEntry) error {
	fd := e.root
	if d.name != "." {
		how := &unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV,
		}
		var err error
		if fd, err = unix.Openat2(e.root, d.name, how); err != nil {
			return nil // replaced by a later entry, or reached through a symlink
		}
		defer unix.Close(fd)
	}
	hdr := d.hdr
	if e.chown {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	if err := unix.Fchmod(fd, uint32(hdr.Mode&0o7777)); err != nil {
		return err
	}
	for k, v := range xattrs(hdr) {
		if err := unix.Fsetxattr(fd, k, []byte(v), 0); err != nil && err != unix.ENOTSUP {
			return fmt.Errorf("xattr %s: %w", k, err)
		}
	}
	at := hdr.AccessTime
	if at.IsZero() {
		at = hdr.ModTime
	}
	return unix.Futimes(fd, []unix.Timeval{unix.NsecToTimeval(at.UnixNano()), unix.NsecToTimeval(hdr.ModTime.UnixNano())})
}

func (e *extractor) whiteout(dir, base string) error {
	pfd, err := e.parent(dir)
	if err != nil {
		return err
	}
	if base == whiteoutOpaque {
		return unix.Fsetxattr(pfd, "trusted.overlay.opaque", []byte("y"), 0)
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return nil // aufs bookkeeping (.wh..wh.plnk and such)
	}
	target := base[len(whiteoutPrefix):]
	if target == "" || target == "." || target == ".." {
		return fmt.Errorf("%w: bad whiteout %q", ErrInvalid, base)
	}
	return e.mkWhiteout(pfd, target)
}

func (e *extractor) mkWhiteout(pfd int, name string) error {
	_, err := e.create(pfd, name, func() (int, error) {
		return -1, unix.Mknodat(pfd, name, unix.S_IFCHR, int(unix.Mkdev(0, 0)))
	})
	return err
}

func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// xattrs returns the safe extended attributes of an entry.
func xattrs(hdr *tar.Header) map[string]string {
	var out map[string]string
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || !(strings.HasPrefix(name, "user.") || name == "security.capability") {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = v
	}
	return out
}

// syncFS flushes the filesystem holding dir to stable storage.
func syncFS(dir string) {
	if fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
		unix.Syncfs(fd)
		unix.Close(fd)
	}
}

// hostFault says an error is the host's (a full disk, a quota, an I/O
// error), not the layer's.
func hostFault(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) || errors.Is(err, unix.EIO) || errors.Is(err, unix.EROFS)
}
