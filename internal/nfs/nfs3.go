package nfs

import (
	"context"
	"fmt"
	"io/fs"
	"syscall"
	"time"
)

// NFS3 procedures (RFC 1813).
const (
	procGetattr     = 1
	procSetattr     = 2
	procLookup      = 3
	procAccess      = 4
	procReadlink    = 5
	procRead        = 6
	procWrite       = 7
	procCreate      = 8
	procMkdir       = 9
	procSymlink     = 10
	procRemove      = 12
	procRmdir       = 13
	procRename      = 14
	procReaddirplus = 17
	procFsstat      = 18
	procFsinfo      = 19
	procCommit      = 21
)

// File types (ftype3).
const (
	TypeReg  = 1
	TypeDir  = 2
	TypeBlk  = 3
	TypeChr  = 4
	TypeLnk  = 5
	TypeSock = 6
	TypeFifo = 7
)

// Error is an NFS status other than NFS3_OK.
type Error struct {
	Proc   string
	Status uint32
}

func (e *Error) Error() string { return fmt.Sprintf("nfs %s: %s", e.Proc, e.Errno()) }

// Errno is the local errno closest to the status.
func (e *Error) Errno() syscall.Errno {
	switch e.Status {
	case 1:
		return syscall.EPERM
	case 2:
		return syscall.ENOENT
	case 6:
		return syscall.ENXIO
	case 13:
		return syscall.EACCES
	case 17:
		return syscall.EEXIST
	case 18:
		return syscall.EXDEV
	case 19:
		return syscall.ENODEV
	case 20:
		return syscall.ENOTDIR
	case 21:
		return syscall.EISDIR
	case 22:
		return syscall.EINVAL
	case 27:
		return syscall.EFBIG
	case 28:
		return syscall.ENOSPC
	case 30:
		return syscall.EROFS
	case 31:
		return syscall.EMLINK
	case 63:
		return syscall.ENAMETOOLONG
	case 66:
		return syscall.ENOTEMPTY
	case 69:
		return syscall.EDQUOT
	case 70, 10001: // STALE, BADHANDLE
		return syscall.ESTALE
	case 10004: // NOTSUPP
		return syscall.ENOTSUP
	case 10008: // JUKEBOX: try again later
		return syscall.EAGAIN
	}
	return syscall.EIO
}

// Is lets errors.Is match the io/fs error classes.
func (e *Error) Is(target error) bool {
	switch target {
	case fs.ErrNotExist:
		return e.Status == 2
	case fs.ErrExist:
		return e.Status == 17
	case fs.ErrPermission:
		return e.Status == 1 || e.Status == 13
	}
	return false
}

// Attr is a file's attributes (fattr3).
type Attr struct {
	Type       uint32
	Mode       uint32 // permission bits, with setuid/setgid/sticky
	Nlink      uint32
	UID, GID   uint32
	Size, Used uint64
	Rdev       [2]uint32
	FSID       uint64
	FileID     uint64
	Atime      time.Time
	Mtime      time.Time
	Ctime      time.Time
}

func (d *dec) time() time.Time {
	s, ns := d.u32(), d.u32()
	return time.Unix(int64(s), int64(ns))
}

func (d *dec) fattr() Attr {
	return Attr{Type: d.u32(), Mode: d.u32(), Nlink: d.u32(), UID: d.u32(), GID: d.u32(), Size: d.u64(), Used: d.u64(),
		Rdev: [2]uint32{d.u32(), d.u32()}, FSID: d.u64(), FileID: d.u64(), Atime: d.time(), Mtime: d.time(), Ctime: d.time()}
}

// postOpAttr reads a post_op_attr; nil when the server sent none.
func (d *dec) postOpAttr() *Attr {
	if !d.bool() {
		return nil
	}
	a := d.fattr()
	if d.err != nil {
		return nil
	}
	return &a
}

// wcc skips wcc_data and returns the post-operation attributes.
func (d *dec) wcc() *Attr {
	if d.bool() { // pre_op_attr: size, mtime, ctime
		d.u64()
		d.time()
		d.time()
	}
	return d.postOpAttr()
}

func (d *dec) postOpFH() []byte {
	if !d.bool() {
		return nil
	}
	return append([]byte(nil), d.opaque(maxFH)...)
}

// SetAttr says which attributes SETATTR (or a create) sets: nil fields
// stay as they are.
type SetAttr struct {
	Mode, UID, GID *uint32
	Size           *uint64
	Atime, Mtime   *time.Time
}

func (e *enc) time(t time.Time) {
	e.u32(uint32(t.Unix()))
	e.u32(uint32(t.Nanosecond()))
}

func (e *enc) sattr(s SetAttr) {
	for _, p := range []*uint32{s.Mode, s.UID, s.GID} {
		e.bool(p != nil)
		if p != nil {
			e.u32(*p)
		}
	}
	e.bool(s.Size != nil)
	if s.Size != nil {
		e.u64(*s.Size)
	}
	for _, t := range []*time.Time{s.Atime, s.Mtime} {
		if t == nil {
			e.u32(0) // DONT_CHANGE
		} else {
			e.u32(2) // SET_TO_CLIENT_TIME
			e.time(*t)
		}
	}
}

func (e *enc) dirop(dir []byte, name string) {
	e.opaque(dir)
	e.str(name)
}

// do calls proc and returns a decoder positioned after the status, and
// the status. A status other than OK is the caller's to turn into an
// *Error, because the failure results still carry attributes.
func (c *Client) do(ctx context.Context, proc uint32, args []byte, tail ...[]byte) (*dec, uint32, error) {
	res, err := c.nfs.call(ctx, proc, c.credOf(ctx), args, tail...)
	if err != nil {
		return nil, 0, err
	}
	d := &dec{b: res}
	st := d.u32()
	if d.err != nil {
		return nil, 0, d.err
	}
	return d, st, nil
}

func nfsErr(proc string, st uint32) error { return &Error{Proc: proc, Status: st} }

// Getattr returns the attributes of fh.
func (c *Client) Getattr(ctx context.Context, fh []byte) (Attr, error) {
	var e enc
	e.opaque(fh)
	d, st, err := c.do(ctx, procGetattr, e.b)
	if err != nil {
		return Attr{}, err
	}
	if st != 0 {
		return Attr{}, nfsErr("GETATTR", st)
	}
	a := d.fattr()
	return a, d.err
}

// Setattr changes the attributes of fh and returns the new ones.
func (c *Client) Setattr(ctx context.Context, fh []byte, s SetAttr) (*Attr, error) {
	var e enc
	e.opaque(fh)
	e.sattr(s)
	e.bool(false) // no guard
	d, st, err := c.do(ctx, procSetattr, e.b)
	if err != nil {
		return nil, err
	}
	a := d.wcc()
	if st != 0 {
		return nil, nfsErr("SETATTR", st)
	}
	return a, d.err
}

// Lookup finds name in dir.
func (c *Client) Lookup(ctx context.Context, dir []byte, name string) ([]byte, *Attr, error) {
	var e enc
	e.dirop(dir, name)
	d, st, err := c.do(ctx, procLookup, e.b)
	if err != nil {
		return nil, nil, err
	}
	if st != 0 {
		return nil, nil, nfsErr("LOOKUP", st)
	}
	fh := append([]byte(nil), d.opaque(maxFH)...)
	a := d.postOpAttr()
	d.postOpAttr()
	return fh, a, d.err
}

// Access bits (ACCESS3_*).
const (
	AccessRead    = 0x01
	AccessLookup  = 0x02
	AccessModify  = 0x04
	AccessExtend  = 0x08
	AccessDelete  = 0x10
	AccessExecute = 0x20
)

// Access returns which of the access bits asked the caller has on fh.
func (c *Client) Access(ctx context.Context, fh []byte, bits uint32) (uint32, error) {
	var e enc
	e.opaque(fh)
	e.u32(bits)
	d, st, err := c.do(ctx, procAccess, e.b)
	if err != nil {
		return 0, err
	}
	d.postOpAttr()
	if st != 0 {
		return 0, nfsErr("ACCESS", st)
	}
	v := d.u32()
	return v, d.err
}

// Readlink returns a symbolic link's target.
func (c *Client) Readlink(ctx context.Context, fh []byte) (string, error) {
	var e enc
	e.opaque(fh)
	d, st, err := c.do(ctx, procReadlink, e.b)
	if err != nil {
		return "", err
	}
	d.postOpAttr()
	if st != 0 {
		return "", nfsErr("READLINK", st)
	}
	s := d.str(maxPath)
	return s, d.err
}

// Read reads at most len(p) bytes (and at most RSize) at off. It returns
// the count and whether the file ends there.
func (c *Client) Read(ctx context.Context, fh []byte, p []byte, off uint64) (int, bool, error) {
	n := min(uint32(len(p)), c.RSize)
	var e enc
	e.opaque(fh)
	e.u64(off)
	e.u32(n)
	d, st, err := c.do(ctx, procRead, e.b)
	if err != nil {
		return 0, false, err
	}
	d.postOpAttr()
	if st != 0 {
		return 0, false, nfsErr("READ", st)
	}
	d.u32() // count, the same as len(data)
	eof := d.bool()
	data := d.opaque(int(n))
	if d.err != nil {
		return 0, false, d.err
	}
	return copy(p, data), eof, nil
}

var zeros [4]byte

// Stability of a WRITE (stable_how).
const (
	Unstable = 0
	DataSync = 1
	FileSync = 2
)

// Write writes p (at most WSize bytes of it) at off and returns the count
// written and the server's write verifier.
func (c *Client) Write(ctx context.Context, fh []byte, p []byte, off uint64, stable uint32) (int, uint64, error) {
	if len(p) > int(c.WSize) {
		p = p[:c.WSize]
	}
	var e enc
	e.opaque(fh)
	e.u64(off)
	e.u32(uint32(len(p)))
	e.u32(stable)
	e.u32(uint32(len(p))) // the data's length; the data follows, padded
	pad := zeros[:(4-len(p)%4)%4]
	d, st, err := c.do(ctx, procWrite, e.b, p, pad)
	if err != nil {
		return 0, 0, err
	}
	d.wcc()
	if st != 0 {
		return 0, 0, nfsErr("WRITE", st)
	}
	n := d.u32()
	d.u32() // committed
	verf := d.u64()
	if d.err != nil {
		return 0, 0, d.err
	}
	if n > uint32(len(p)) {
		return 0, 0, fmt.Errorf("nfs WRITE: server wrote %d of %d bytes", n, len(p))
	}
	return int(n), verf, nil
}

// Commit makes unstable writes of fh durable and returns the verifier.
func (c *Client) Commit(ctx context.Context, fh []byte) (uint64, error) {
	var e enc
	e.opaque(fh)
	e.u64(0)
	e.u32(0) // to the end of the file
	d, st, err := c.do(ctx, procCommit, e.b)
	if err != nil {
		return 0, err
	}
	d.wcc()
	if st != 0 {
		return 0, nfsErr("COMMIT", st)
	}
	v := d.u64()
	return v, d.err
}

// created decodes the results of CREATE, MKDIR and SYMLINK, looking the
// new object up when the server did not return its handle.
func (c *Client) created(ctx context.Context, proc string, d *dec, st uint32, dir []byte, name string) ([]byte, *Attr, error) {
	if st != 0 {
		return nil, nil, nfsErr(proc, st)
	}
	fh := d.postOpFH()
	a := d.postOpAttr()
	d.wcc()
	if d.err != nil {
		return nil, nil, d.err
	}
	if fh == nil || a == nil {
		return c.Lookup(ctx, dir, name)
	}
	return fh, a, nil
}

// Create makes a regular file; exclusive fails if name exists.
func (c *Client) Create(ctx context.Context, dir []byte, name string, exclusive bool, s SetAttr) ([]byte, *Attr, error) {
	var e enc
	e.dirop(dir, name)
	if exclusive {
		e.u32(1) // GUARDED: the attributes still apply
	} else {
		e.u32(0)
	}
	e.sattr(s)
	d, st, err := c.do(ctx, procCreate, e.b)
	if err != nil {
		return nil, nil, err
	}
	return c.created(ctx, "CREATE", d, st, dir, name)
}

// Mkdir makes a directory.
func (c *Client) Mkdir(ctx context.Context, dir []byte, name string, s SetAttr) ([]byte, *Attr, error) {
	var e enc
	e.dirop(dir, name)
	e.sattr(s)
	d, st, err := c.do(ctx, procMkdir, e.b)
	if err != nil {
		return nil, nil, err
	}
	return c.created(ctx, "MKDIR", d, st, dir, name)
}

// Symlink makes a symbolic link name in dir pointing at target.
func (c *Client) Symlink(ctx context.Context, dir []byte, name, target string, s SetAttr) ([]byte, *Attr, error) {
	var e enc
	e.dirop(dir, name)
	e.sattr(s)
	e.str(target)
	d, st, err := c.do(ctx, procSymlink, e.b)
	if err != nil {
		return nil, nil, err
	}
	return c.created(ctx, "SYMLINK", d, st, dir, name)
}

func (c *Client) remove(ctx context.Context, proc uint32, pname string, dir []byte, name string) error {
	var e enc
	e.dirop(dir, name)
	d, st, err := c.do(ctx, proc, e.b)
	if err != nil {
		return err
	}
	d.wcc()
	if st != 0 {
		return nfsErr(pname, st)
	}
	return nil
}

// Remove removes a file (not a directory).
func (c *Client) Remove(ctx context.Context, dir []byte, name string) error {
	return c.remove(ctx, procRemove, "REMOVE", dir, name)
}

// Rmdir removes an empty directory.
func (c *Client) Rmdir(ctx context.Context, dir []byte, name string) error {
	return c.remove(ctx, procRmdir, "RMDIR", dir, name)
}

// Rename moves fromDir/from to toDir/to.
func (c *Client) Rename(ctx context.Context, fromDir []byte, from string, toDir []byte, to string) error {
	var e enc
	e.dirop(fromDir, from)
	e.dirop(toDir, to)
	d, st, err := c.do(ctx, procRename, e.b)
	if err != nil {
		return err
	}
	d.wcc()
	d.wcc()
	if st != 0 {
		return nfsErr("RENAME", st)
	}
	return nil
}

// DirEntry is one entry of a directory, with its handle and attributes
// when the server sent them.
type DirEntry struct {
	Name   string
	FileID uint64
	FH     []byte
	Attr   *Attr
}

// ReadDir lists dir (without "." and ".."), with READDIRPLUS.
func (c *Client) ReadDir(ctx context.Context, dir []byte) ([]DirEntry, error) {
	var out []DirEntry
	var cookie, verf uint64
	for {
		var e enc
		e.opaque(dir)
		e.u64(cookie)
		e.u64(verf)
		e.u32(32 << 10)  // dircount
		e.u32(128 << 10) // maxcount
		d, st, err := c.do(ctx, procReaddirplus, e.b)
		if err != nil {
			return nil, err
		}
		if st != 0 {
			return nil, nfsErr("READDIRPLUS", st)
		}
		page, eof, next, nverf, err := decodeDirPage(d, cookie)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if eof {
			return out, nil
		}
		if next == cookie {
			return nil, fmt.Errorf("nfs READDIRPLUS: no entries and no end of directory")
		}
		cookie, verf = next, nverf
	}
}

// decodeDirPage decodes the results of a successful READDIRPLUS after
// the status: entries (without "." and ".."), whether the directory ends
// there, the last cookie (from when there are no entries) and the cookie
// verifier.
func decodeDirPage(d *dec, from uint64) (ents []DirEntry, eof bool, cookie, verf uint64, err error) {
	cookie = from
	d.postOpAttr()
	verf = d.u64()
	for d.bool() {
		ent := DirEntry{FileID: d.u64(), Name: d.str(maxName)}
		cookie = d.u64()
		ent.Attr = d.postOpAttr()
		ent.FH = d.postOpFH()
		if d.err != nil {
			break
		}
		if ent.Name != "." && ent.Name != ".." {
			ents = append(ents, ent)
		}
	}
	eof = d.bool()
	if d.err != nil {
		return nil, false, 0, 0, fmt.Errorf("nfs READDIRPLUS: %w", d.err)
	}
	return ents, eof, cookie, verf, nil
}

// FSStat is a file system's space and file counts.
type FSStat struct {
	TotalBytes, FreeBytes, AvailBytes uint64
	TotalFiles, FreeFiles, AvailFiles uint64
}

// Fsstat returns the space and file counts of the file system of fh.
func (c *Client) Fsstat(ctx context.Context, fh []byte) (FSStat, error) {
	var e enc
	e.opaque(fh)
	d, st, err := c.do(ctx, procFsstat, e.b)
	if err != nil {
		return FSStat{}, err
	}
	d.postOpAttr()
	if st != 0 {
		return FSStat{}, nfsErr("FSSTAT", st)
	}
	s := FSStat{d.u64(), d.u64(), d.u64(), d.u64(), d.u64(), d.u64()}
	return s, d.err
}

type fsinfo struct {
	rtmax, rtpref, wtmax, wtpref uint32
}

func (c *Client) fsinfo(ctx context.Context, fh []byte) (fsinfo, error) {
	var e enc
	e.opaque(fh)
	d, st, err := c.do(ctx, procFsinfo, e.b)
	if err != nil {
		return fsinfo{}, err
	}
	d.postOpAttr()
	if st != 0 {
		return fsinfo{}, nfsErr("FSINFO", st)
	}
	fi := fsinfo{rtmax: d.u32(), rtpref: d.u32()}
	d.u32() // rtmult
	fi.wtmax, fi.wtpref = d.u32(), d.u32()
	return fi, d.err
}
