// Package nfs is a userspace NFS version 3 client (RFC 1813) and a FUSE
// file system over it, for hosts whose kernel has no NFS client.
//
// It speaks ONC RPC over TCP (RFC 5531) with AUTH_SYS credentials: the
// PORTMAP service finds the MOUNT and NFS ports (well-known ones when it
// cannot be reached), MOUNT3 gives the export's root handle, and NFS3
// procedures do the rest. See README.md for how it is used by the sandbox.
package nfs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// ErrUnreachable wraps failures to reach the server at all (dial errors,
// timeouts), as opposed to errors the server returned.
var ErrUnreachable = errors.New("nfs server unreachable")

const (
	progPortmap = 100000
	progNFS     = 100003
	progMount   = 100005

	// The ports used when the portmapper cannot be asked.
	defaultNFSPort   = 2049
	defaultMountPort = 20048
	portmapPort      = 111

	maxFH   = 64
	maxName = 255
	maxPath = 4096
)

// Config says what to mount.
type Config struct {
	// Server is a host name or IP address.
	Server string
	// Path is the exported directory.
	Path string
	// NFSPort and MountPort skip the portmapper when set.
	NFSPort, MountPort int
	// Cred is the identity of calls made without one in their context
	// (see WithCred); root when nil.
	Cred *Cred
	// Timeout bounds each call, dials included; 30s when zero.
	Timeout time.Duration
}

// Client is a mounted NFS export.
type Client struct {
	cfg   Config
	nfs   *rpcClient
	mnt   *rpcClient
	root  []byte
	cred  Cred
	RSize uint32 // largest READ, from FSINFO
	WSize uint32 // largest WRITE, from FSINFO
}

type credKey struct{}

// WithCred returns a context whose calls use cred.
func WithCred(ctx context.Context, cred Cred) context.Context {
	return context.WithValue(ctx, credKey{}, &cred)
}

func (c *Client) credOf(ctx context.Context) *Cred {
	if cr, ok := ctx.Value(credKey{}).(*Cred); ok {
		return cr
	}
	return &c.cred
}

// Dial mounts cfg.Path from cfg.Server.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	c := &Client{cfg: cfg}
	if cfg.Cred != nil {
		c.cred = *cfg.Cred
	}
	nfsPort, mntPort := cfg.NFSPort, cfg.MountPort
	if nfsPort == 0 || mntPort == 0 {
		pm := newRPC(net.JoinHostPort(cfg.Server, strconv.Itoa(portmapPort)), progPortmap, 2, min(cfg.Timeout, 5*time.Second))
		var err error
		if nfsPort == 0 {
			nfsPort, err = getPort(ctx, pm, progNFS, 3, defaultNFSPort)
		}
		if mntPort == 0 {
			if errors.Is(err, ErrUnreachable) {
				mntPort = defaultMountPort // do not wait for it twice
			} else {
				mntPort, _ = getPort(ctx, pm, progMount, 3, defaultMountPort)
			}
		}
		pm.close()
	}
	c.mnt = newRPC(net.JoinHostPort(cfg.Server, strconv.Itoa(mntPort)), progMount, 3, cfg.Timeout)
	c.nfs = newRPC(net.JoinHostPort(cfg.Server, strconv.Itoa(nfsPort)), progNFS, 3, cfg.Timeout)
	root, err := c.mount(ctx)
	if err != nil {
		c.nfs.close()
		c.mnt.close()
		return nil, err
	}
	c.root = root
	c.RSize, c.WSize = 64<<10, 64<<10
	if fi, err := c.fsinfo(ctx, root); err == nil {
		c.RSize = clampSize(fi.rtmax, fi.rtpref)
		c.WSize = clampSize(fi.wtmax, fi.wtpref)
	}
	return c, nil
}

func clampSize(most, pref uint32) uint32 {
	v := most
	if v == 0 {
		v = pref
	}
	return min(max(v, 4096), 1<<20)
}

// getPort asks the portmapper for prog's TCP port; def (and why) when it
// cannot say.
func getPort(ctx context.Context, pm *rpcClient, prog, vers uint32, def int) (int, error) {
	var e enc
	e.u32(prog)
	e.u32(vers)
	e.u32(6) // IPPROTO_TCP
	e.u32(0)
	res, err := pm.call(ctx, 3, nil, e.b) // PMAPPROC_GETPORT
	if err != nil {
		return def, err
	}
	d := dec{b: res}
	p := d.u32()
	if d.err != nil || p == 0 || p > 65535 {
		return def, errors.New("portmap: program not registered")
	}
	return int(p), nil
}

func (c *Client) mount(ctx context.Context) ([]byte, error) {
	var e enc
	e.str(c.cfg.Path)
	res, err := c.mnt.call(ctx, 1, &c.cred, e.b) // MOUNTPROC3_MNT
	if err != nil {
		return nil, fmt.Errorf("mount %s:%s: %w", c.cfg.Server, c.cfg.Path, err)
	}
	d := dec{b: res}
	st := d.u32()
	if d.err == nil && st != 0 {
		return nil, fmt.Errorf("mount %s:%s: %w", c.cfg.Server, c.cfg.Path, &Error{Proc: "MNT", Status: st})
	}
	fh := d.opaque(maxFH)
	if d.err != nil {
		return nil, fmt.Errorf("mount %s:%s: %w", c.cfg.Server, c.cfg.Path, d.err)
	}
	return append([]byte(nil), fh...), nil
}

// Root returns the export's root file handle.
func (c *Client) Root() []byte { return c.root }

// Close unmounts the export (MOUNTPROC3_UMNT, best effort) and closes the
// connections.
func (c *Client) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var e enc
	e.str(c.cfg.Path)
	_, err := c.mnt.call(ctx, 3, &c.cred, e.b)
	c.mnt.close()
	c.nfs.close()
	return err
}
