package nfs

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// ONC RPC version 2 (RFC 5531) over TCP with record marking.

const (
	rpcCall  = 0
	rpcReply = 1

	authNone = 0
	authSys  = 1

	// maxRecord bounds one reply: a READ of the largest transfer size
	// plus headers. A server that sends more is broken or hostile.
	maxRecord = 4<<20 + 64<<10

	lastFragment = 1 << 31
)

// Cred is the AUTH_SYS identity a call is made with.
type Cred struct {
	UID, GID uint32
	GIDs     []uint32
}

// RPCError is a call the server did not run: denied, or accepted with an
// error other than SUCCESS.
type RPCError struct {
	Denied bool
	// Stat is the accept_stat (not denied) or the reject_stat (denied).
	Stat uint32
	// Auth is the auth_stat of an AUTH_ERROR rejection.
	Auth uint32
	// Low and High are the versions the server supports, on a mismatch.
	Low, High uint32
}

func (e *RPCError) Error() string {
	if e.Denied {
		if e.Stat == 0 {
			return fmt.Sprintf("rpc: version mismatch (server supports %d-%d)", e.Low, e.High)
		}
		return fmt.Sprintf("rpc: authentication error %d", e.Auth)
	}
	switch e.Stat {
	case 1:
		return "rpc: program unavailable"
	case 2:
		return fmt.Sprintf("rpc: program version mismatch (server supports %d-%d)", e.Low, e.High)
	case 3:
		return "rpc: procedure unavailable"
	case 4:
		return "rpc: garbage arguments"
	case 5:
		return "rpc: system error"
	}
	return fmt.Sprintf("rpc: accept status %d", e.Stat)
}

// parseReply decodes an RPC reply record. It returns the xid whenever the
// record is long enough to hold one, so that a caller can fail the right
// call, and the procedure's results on success.
func parseReply(rec []byte) (xid uint32, res []byte, err error) {
	d := dec{b: rec}
	xid = d.u32()
	if mt := d.u32(); d.err == nil && mt != rpcReply {
		return xid, nil, fmt.Errorf("rpc: message type %d, want a reply", mt)
	}
	switch stat := d.u32(); {
	case d.err != nil:
	case stat == 0: // MSG_ACCEPTED
		d.u32()       // verifier flavor
		d.opaque(400) // verifier body
		as := d.u32()
		if d.err != nil {
			break
		}
		switch as {
		case 0:
			return xid, d.b, nil
		case 2:
			e := &RPCError{Stat: as, Low: d.u32(), High: d.u32()}
			if d.err == nil {
				return xid, nil, e
			}
		default:
			return xid, nil, &RPCError{Stat: as}
		}
	case stat == 1: // MSG_DENIED
		rs := d.u32()
		e := &RPCError{Denied: true, Stat: rs}
		switch rs {
		case 0:
			e.Low, e.High = d.u32(), d.u32()
		case 1:
			e.Auth = d.u32()
		default:
			d.fail()
		}
		if d.err == nil {
			return xid, nil, e
		}
	default:
		return xid, nil, fmt.Errorf("rpc: reply status %d", stat)
	}
	return xid, nil, fmt.Errorf("rpc: malformed reply: %w", d.err)
}

// readRecord reads one record: fragments up to the last one, at most max
// bytes in all.
func readRecord(r io.Reader, max int) ([]byte, error) {
	var rec []byte
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, err
		}
		h := binary.BigEndian.Uint32(hdr[:])
		n := int(h &^ lastFragment)
		if len(rec)+n > max {
			return nil, fmt.Errorf("rpc: record of more than %d bytes", max)
		}
		start := len(rec)
		rec = append(rec, make([]byte, n)...)
		if _, err := io.ReadFull(r, rec[start:]); err != nil {
			return nil, err
		}
		if h&lastFragment != 0 {
			return rec, nil
		}
	}
}

type result struct {
	res []byte
	err error
}

var errConnLost = errors.New("rpc: connection lost")

// rpcClient calls one program on one server address. Calls run
// concurrently on one TCP connection, matched to replies by xid; a lost
// connection is redialled by the next call.
type rpcClient struct {
	addr    string
	prog    uint32
	vers    uint32
	timeout time.Duration

	mu      sync.Mutex
	conn    net.Conn
	pending map[uint32]chan result
	xid     uint32
	closed  bool

	wmu sync.Mutex // one record written at a time
}

func newRPC(addr string, prog, vers uint32, timeout time.Duration) *rpcClient {
	return &rpcClient{addr: addr, prog: prog, vers: vers, timeout: timeout, pending: map[uint32]chan result{},
		xid: uint32(time.Now().UnixNano())}
}

func (c *rpcClient) getConn(ctx context.Context) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, net.ErrClosed
	}
	if c.conn != nil {
		return c.conn, nil
	}
	d := net.Dialer{Timeout: c.timeout, KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, err
	}
	c.conn = conn
	go c.readLoop(conn)
	return conn, nil
}

func (c *rpcClient) readLoop(conn net.Conn) {
	br := bufio.NewReaderSize(conn, 256<<10)
	var err error
	for {
		var rec []byte
		rec, err = readRecord(br, maxRecord)
		if err != nil {
			break
		}
		xid, res, perr := parseReply(rec)
		c.mu.Lock()
		ch := c.pending[xid]
		delete(c.pending, xid)
		c.mu.Unlock()
		if ch != nil {
			ch <- result{res, perr}
		}
	}
	conn.Close()
	c.mu.Lock()
	if c.conn == conn {
		c.conn = nil
		// Calls on this connection get errConnLost and retry on a new one.
		for xid, ch := range c.pending {
			ch <- result{nil, fmt.Errorf("%w: %v", errConnLost, err)}
			delete(c.pending, xid)
		}
	}
	c.mu.Unlock()
}

// call runs proc with args (already XDR-encoded, followed by tail: bulk
// data sent as is, without a copy) and returns its results. A call whose
// connection is lost is sent once more, with the same xid, so that a
// server's duplicate request cache can recognise it.
func (c *rpcClient) call(ctx context.Context, proc uint32, cred *Cred, args []byte, tail ...[]byte) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	c.mu.Lock()
	c.xid++
	xid := c.xid
	c.mu.Unlock()
	n := 0
	for _, t := range tail {
		n += len(t)
	}
	msg := encodeCall(xid, c.prog, c.vers, proc, cred, args, n)
	var err error
	for try := 0; try < 2; try++ {
		var res []byte
		res, err = c.roundTrip(ctx, xid, append(net.Buffers{msg}, tail...))
		if !errors.Is(err, errConnLost) {
			return res, err
		}
	}
	return nil, err
}

func (c *rpcClient) roundTrip(ctx context.Context, xid uint32, msg net.Buffers) ([]byte, error) {
	conn, err := c.getConn(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	ch := make(chan result, 1)
	c.mu.Lock()
	c.pending[xid] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, xid)
		c.mu.Unlock()
	}()
	c.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetWriteDeadline(dl)
	}
	_, err = msg.WriteTo(conn)
	c.wmu.Unlock()
	if err != nil {
		conn.Close() // the reader fails the pending calls
		return nil, fmt.Errorf("%w: %v", errConnLost, err)
	}
	select {
	case r := <-ch:
		return r.res, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %s: %v", ErrUnreachable, c.addr, ctx.Err())
	}
}

func (c *rpcClient) close() {
	c.mu.Lock()
	c.closed = true
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

// encodeCall builds a call message with its record mark (one fragment
// that tailLen more bytes complete).
func encodeCall(xid, prog, vers, proc uint32, cred *Cred, args []byte, tailLen int) []byte {
	e := enc{b: make([]byte, 4, 128+len(args))}
	e.u32(xid)
	e.u32(rpcCall)
	e.u32(2) // RPC version
	e.u32(prog)
	e.u32(vers)
	e.u32(proc)
	if cred == nil {
		e.u32(authNone)
		e.u32(0)
	} else {
		var a enc
		a.u32(0)       // stamp
		a.str("skiff") // machine name
		a.u32(cred.UID)
		a.u32(cred.GID)
		gids := cred.GIDs
		if len(gids) > 16 {
			gids = gids[:16]
		}
		a.u32(uint32(len(gids)))
		for _, g := range gids {
			a.u32(g)
		}
		e.u32(authSys)
		e.opaque(a.b)
	}
	e.u32(authNone) // verifier
	e.u32(0)
	e.b = append(e.b, args...)
	binary.BigEndian.PutUint32(e.b, lastFragment|uint32(len(e.b)-4+tailLen))
	return e.b
}
