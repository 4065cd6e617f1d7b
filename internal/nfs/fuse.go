package nfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// MountOptions says how an export is presented through FUSE.
type MountOptions struct {
	// FsName is what the mount table shows as the source.
	FsName   string
	ReadOnly bool
	// IDShift maps ids for a user namespace whose root is host uid/gid
	// IDShift: callers' host ids in [IDShift, IDShift+65536) are sent to
	// the server shifted down by IDShift, and the server's ids below 65536
	// are shown shifted up. 0 maps nothing.
	IDShift uint32
	Log     *slog.Logger
}

// Mount serves the export of c at dir through FUSE until the returned
// server is unmounted (Unmount) or the mount is removed from outside.
func Mount(c *Client, dir string, o MountOptions) (*fuse.Server, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := c.Getattr(ctx, c.Root())
	if err != nil {
		return nil, err
	}
	f := &fsys{c: c, o: o}
	root := &node{fsys: f, fh: c.Root()}
	ttl := time.Second
	opts := &fs.Options{
		EntryTimeout:    &ttl,
		AttrTimeout:     &ttl,
		NegativeTimeout: &ttl,
		RootStableAttr:  &fs.StableAttr{Ino: a.FileID},
		MountOptions: fuse.MountOptions{
			AllowOther:   true,
			FsName:       o.FsName,
			Name:         "nfs",
			DirectMount:  true,
			MaxWrite:     int(min(c.WSize, 1<<20)),
			MaxReadAhead: 1 << 20,
		},
	}
	if o.ReadOnly {
		opts.MountOptions.Options = append(opts.MountOptions.Options, "ro")
	}
	srv, err := fs.Mount(dir, root, opts)
	if err != nil {
		return nil, err
	}
	setReadahead(dir, o.Log)
	return srv, nil
}

// readaheadKB is the mount's readahead window. The kernel starts a FUSE
// mount at 128 KiB, which leaves one or two small READs in flight: a
// sequential read waits on the network for every 128 KiB. Several MiB
// keep a few 1 MiB READs going.
const readaheadKB = 8192

// setReadahead widens the readahead of the mount at dir, through its
// backing device's sysfs knob (root only; best effort).
func setReadahead(dir string, log *slog.Logger) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return
	}
	knob := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(knob, []byte(strconv.Itoa(readaheadKB)), 0); err != nil {
		log.Debug("nfs: cannot set readahead", "knob", knob, "err", err)
	}
}

type fsys struct {
	c *Client
	o MountOptions
}

// cred is the caller's identity as the server should see it.
func (f *fsys) cred(ctx context.Context) context.Context {
	caller, ok := fuse.FromContext(ctx)
	if !ok {
		return ctx
	}
	return WithCred(ctx, Cred{UID: f.toServer(caller.Uid), GID: f.toServer(caller.Gid)})
}

const nobody = 65534

func (f *fsys) toServer(id uint32) uint32 {
	s := f.o.IDShift
	switch {
	case s == 0 || id == 0:
		return id
	case id >= s && id-s < 65536:
		return id - s
	}
	return nobody
}

func (f *fsys) fromServer(id uint32) uint32 {
	if f.o.IDShift != 0 && id < 65536 {
		return id + f.o.IDShift
	}
	return id
}

func typeMode(t uint32) uint32 {
	switch t {
	case TypeDir:
		return syscall.S_IFDIR
	case TypeLnk:
		return syscall.S_IFLNK
	case TypeBlk:
		return syscall.S_IFBLK
	case TypeChr:
		return syscall.S_IFCHR
	case TypeSock:
		return syscall.S_IFSOCK
	case TypeFifo:
		return syscall.S_IFIFO
	}
	return syscall.S_IFREG
}

func (f *fsys) fill(a *Attr, out *fuse.Attr) {
	out.Ino = a.FileID
	out.Size = a.Size
	out.Blocks = (a.Used + 511) / 512
	out.Blksize = 4096
	out.Mode = typeMode(a.Type) | a.Mode&0o7777
	out.Nlink = a.Nlink
	out.Uid = f.fromServer(a.UID)
	out.Gid = f.fromServer(a.GID)
	out.Rdev = uint32(unix.Mkdev(a.Rdev[0], a.Rdev[1]))
	out.SetTimes(&a.Atime, &a.Mtime, &a.Ctime)
}

// errno turns a client error into what the kernel is told, logging what
// is not an ordinary file system answer.
func (f *fsys) errno(op string, err error) syscall.Errno {
	var ne *Error
	if errors.As(err, &ne) {
		return ne.Errno()
	}
	f.o.Log.Warn("nfs: call failed", "op", op, "err", err)
	if errors.Is(err, context.Canceled) {
		return syscall.EINTR
	}
	return syscall.EIO
}

// node is one file, directory or link of the export.
type node struct {
	fs.Inode
	fsys  *fsys
	fh    []byte
	dirty atomic.Bool // unstable writes not yet committed
}

var (
	_ fs.NodeGetattrer  = (*node)(nil)
	_ fs.NodeSetattrer  = (*node)(nil)
	_ fs.NodeLookuper   = (*node)(nil)
	_ fs.NodeAccesser   = (*node)(nil)
	_ fs.NodeReadlinker = (*node)(nil)
	_ fs.NodeOpener     = (*node)(nil)
	_ fs.NodeReader     = (*node)(nil)
	_ fs.NodeWriter     = (*node)(nil)
	_ fs.NodeFlusher    = (*node)(nil)
	_ fs.NodeFsyncer    = (*node)(nil)
	_ fs.NodeCreater    = (*node)(nil)
	_ fs.NodeMkdirer    = (*node)(nil)
	_ fs.NodeSymlinker  = (*node)(nil)
	_ fs.NodeUnlinker   = (*node)(nil)
	_ fs.NodeRmdirer    = (*node)(nil)
	_ fs.NodeRenamer    = (*node)(nil)
	_ fs.NodeReaddirer  = (*node)(nil)
	_ fs.NodeStatfser   = (*node)(nil)
)

func (n *node) child(ctx context.Context, fh []byte, a *Attr, out *fuse.EntryOut) *fs.Inode {
	n.fsys.fill(a, &out.Attr)
	return n.NewInode(ctx, &node{fsys: n.fsys, fh: fh}, fs.StableAttr{Mode: typeMode(a.Type), Ino: a.FileID})
}

func (n *node) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	a, err := n.fsys.c.Getattr(n.fsys.cred(ctx), n.fh)
	if err != nil {
		return n.fsys.errno("getattr", err)
	}
	n.fsys.fill(&a, &out.Attr)
	return 0
}

func (n *node) Setattr(ctx context.Context, _ fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var s SetAttr
	if m, ok := in.GetMode(); ok {
		m &= 0o7777
		s.Mode = &m
	}
	if u, ok := in.GetUID(); ok {
		u = n.fsys.toServer(u)
		s.UID = &u
	}
	if g, ok := in.GetGID(); ok {
		g = n.fsys.toServer(g)
		s.GID = &g
	}
	if sz, ok := in.GetSize(); ok {
		s.Size = &sz
	}
	if t, ok := in.GetATime(); ok {
		s.Atime = &t
	}
	if t, ok := in.GetMTime(); ok {
		s.Mtime = &t
	}
	ctx = n.fsys.cred(ctx)
	a, err := n.fsys.c.Setattr(ctx, n.fh, s)
	if err != nil {
		return n.fsys.errno("setattr", err)
	}
	if a == nil {
		at, err := n.fsys.c.Getattr(ctx, n.fh)
		if err != nil {
			return n.fsys.errno("getattr", err)
		}
		a = &at
	}
	n.fsys.fill(a, &out.Attr)
	return 0
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ctx = n.fsys.cred(ctx)
	fh, a, err := n.fsys.c.Lookup(ctx, n.fh, name)
	if err != nil {
		return nil, n.fsys.errno("lookup", err)
	}
	if a == nil {
		at, err := n.fsys.c.Getattr(ctx, fh)
		if err != nil {
			return nil, n.fsys.errno("getattr", err)
		}
		a = &at
	}
	return n.child(ctx, fh, a, out), 0
}

// accessBits translates an access(2) mask (R_OK 4, W_OK 2, X_OK 1).
func (n *node) accessBits(mask uint32) uint32 {
	dir := n.StableAttr().Mode == syscall.S_IFDIR
	var bits uint32
	if mask&4 != 0 {
		bits |= AccessRead
	}
	if mask&2 != 0 {
		bits |= AccessModify | AccessExtend
		if dir {
			bits |= AccessDelete
		}
	}
	if mask&1 != 0 {
		if dir {
			bits |= AccessLookup
		} else {
			bits |= AccessExecute
		}
	}
	return bits
}

func (n *node) check(ctx context.Context, mask uint32) syscall.Errno {
	want := n.accessBits(mask)
	if want == 0 {
		return 0
	}
	got, err := n.fsys.c.Access(ctx, n.fh, want)
	if err != nil {
		return n.fsys.errno("access", err)
	}
	if got&want != want {
		return syscall.EACCES
	}
	return 0
}

func (n *node) Access(ctx context.Context, mask uint32) syscall.Errno {
	if mask&2 != 0 && n.fsys.o.ReadOnly {
		return syscall.EROFS
	}
	return n.check(n.fsys.cred(ctx), mask)
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	s, err := n.fsys.c.Readlink(n.fsys.cred(ctx), n.fh)
	if err != nil {
		return nil, n.fsys.errno("readlink", err)
	}
	return []byte(s), 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	ctx = n.fsys.cred(ctx)
	var mask uint32
	switch flags & syscall.O_ACCMODE {
	case syscall.O_RDONLY:
		mask = 4
	case syscall.O_WRONLY:
		mask = 2
	default:
		mask = 6
	}
	if mask&2 != 0 && n.fsys.o.ReadOnly {
		return nil, 0, syscall.EROFS
	}
	if e := n.check(ctx, mask); e != 0 {
		return nil, 0, e
	}
	if flags&syscall.O_TRUNC != 0 {
		var zero uint64
		if _, err := n.fsys.c.Setattr(ctx, n.fh, SetAttr{Size: &zero}); err != nil {
			return nil, 0, n.fsys.errno("truncate", err)
		}
	}
	return nil, 0, 0
}

func (n *node) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	ctx = n.fsys.cred(ctx)
	// Each piece reads its range fully unless the file ends in it; what
	// the kernel gets is the prefix up to the first short piece.
	got := make([]int, (len(dest)+ioSplit-1)/ioSplit)
	err := pieces(len(dest), func(start, end int) error {
		p := start
		for p < end {
			k, eof, err := n.fsys.c.Read(ctx, n.fh, dest[p:end], uint64(off)+uint64(p))
			if err != nil {
				return err
			}
			p += k
			if eof || k == 0 {
				break
			}
		}
		got[start/ioSplit] = p - start
		return nil
	})
	if err != nil {
		return nil, n.fsys.errno("read", err)
	}
	total := 0
	for i, k := range got {
		total += k
		if k < min(ioSplit, len(dest)-i*ioSplit) {
			break
		}
	}
	return fuse.ReadResultData(dest[:total]), 0
}

// ioSplit is the piece size above which one kernel read or write becomes
// several concurrent calls: the server works on one while the next is on
// the wire.
const ioSplit = 256 << 10

func (n *node) Write(ctx context.Context, _ fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if n.fsys.o.ReadOnly {
		return 0, syscall.EROFS
	}
	ctx = n.fsys.cred(ctx)
	n.dirty.Store(true)
	err := pieces(len(data), func(start, end int) error {
		for start < end {
			k, _, err := n.fsys.c.Write(ctx, n.fh, data[start:end], uint64(off)+uint64(start), Unstable)
			if err != nil {
				return err
			}
			if k == 0 {
				return errShortWrite
			}
			start += k
		}
		return nil
	})
	if err != nil {
		// The kernel is told nothing was written: it cannot know which
		// pieces made it.
		return 0, n.fsys.errno("write", err)
	}
	return uint32(len(data)), 0
}

var errShortWrite = errors.New("nfs WRITE: server wrote nothing")

// pieces runs fn over [0, n) in pieces of ioSplit bytes, concurrently,
// and returns the first error.
func pieces(n int, fn func(start, end int) error) error {
	if n <= ioSplit {
		return fn(0, n)
	}
	errs := make(chan error, (n+ioSplit-1)/ioSplit)
	k := 0
	for start := 0; start < n; start += ioSplit {
		k++
		go func(start int) { errs <- fn(start, min(start+ioSplit, n)) }(start)
	}
	var first error
	for range k {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// commit makes the unstable writes durable: on close and fsync, as the
// kernel's NFS client does (close-to-open consistency).
func (n *node) commit(ctx context.Context) syscall.Errno {
	if !n.dirty.Swap(false) {
		return 0
	}
	if _, err := n.fsys.c.Commit(n.fsys.cred(ctx), n.fh); err != nil {
		n.dirty.Store(true)
		return n.fsys.errno("commit", err)
	}
	return 0
}

func (n *node) Flush(ctx context.Context, _ fs.FileHandle) syscall.Errno { return n.commit(ctx) }

func (n *node) Fsync(ctx context.Context, _ fs.FileHandle, _ uint32) syscall.Errno {
	return n.commit(ctx)
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if n.fsys.o.ReadOnly {
		return nil, nil, 0, syscall.EROFS
	}
	ctx = n.fsys.cred(ctx)
	m := mode & 0o7777
	fh, a, err := n.fsys.c.Create(ctx, n.fh, name, flags&syscall.O_EXCL != 0, SetAttr{Mode: &m})
	if err != nil {
		return nil, nil, 0, n.fsys.errno("create", err)
	}
	return n.child(ctx, fh, a, out), nil, 0, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ctx = n.fsys.cred(ctx)
	m := mode & 0o7777
	fh, a, err := n.fsys.c.Mkdir(ctx, n.fh, name, SetAttr{Mode: &m})
	if err != nil {
		return nil, n.fsys.errno("mkdir", err)
	}
	return n.child(ctx, fh, a, out), 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ctx = n.fsys.cred(ctx)
	fh, a, err := n.fsys.c.Symlink(ctx, n.fh, name, target, SetAttr{})
	if err != nil {
		return nil, n.fsys.errno("symlink", err)
	}
	return n.child(ctx, fh, a, out), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if err := n.fsys.c.Remove(n.fsys.cred(ctx), n.fh, name); err != nil {
		return n.fsys.errno("remove", err)
	}
	return 0
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if err := n.fsys.c.Rmdir(n.fsys.cred(ctx), n.fh, name); err != nil {
		return n.fsys.errno("rmdir", err)
	}
	return 0
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if flags != 0 { // RENAME_NOREPLACE, RENAME_EXCHANGE: NFSv3 has neither
		return syscall.EINVAL
	}
	to, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if err := n.fsys.c.Rename(n.fsys.cred(ctx), n.fh, name, to.fh, newName); err != nil {
		return n.fsys.errno("rename", err)
	}
	return 0
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ents, err := n.fsys.c.ReadDir(n.fsys.cred(ctx), n.fh)
	if err != nil {
		return nil, n.fsys.errno("readdir", err)
	}
	list := make([]fuse.DirEntry, 0, len(ents))
	for _, e := range ents {
		de := fuse.DirEntry{Name: e.Name, Ino: e.FileID}
		if e.Attr != nil {
			de.Mode = typeMode(e.Attr.Type)
		}
		list = append(list, de)
	}
	return fs.NewListDirStream(list), 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	s, err := n.fsys.c.Fsstat(n.fsys.cred(ctx), n.fh)
	if err != nil {
		return n.fsys.errno("fsstat", err)
	}
	const bs = 4096
	out.Bsize, out.Frsize, out.NameLen = bs, bs, maxName
	out.Blocks, out.Bfree, out.Bavail = s.TotalBytes/bs, s.FreeBytes/bs, s.AvailBytes/bs
	out.Files, out.Ffree = s.TotalFiles, s.FreeFiles
	return 0
}
