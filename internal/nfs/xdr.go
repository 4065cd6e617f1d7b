package nfs

import (
	"encoding/binary"
	"errors"
)

// XDR (RFC 4506): everything is big-endian and padded to four bytes.

var errShort = errors.New("nfs: short or malformed XDR data")

// enc appends XDR values to a buffer.
type enc struct{ b []byte }

func (e *enc) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }

func (e *enc) bool(v bool) {
	if v {
		e.u32(1)
	} else {
		e.u32(0)
	}
}

// opaque appends variable-length opaque data: length, bytes, padding.
func (e *enc) opaque(p []byte) {
	e.u32(uint32(len(p)))
	e.fixed(p)
}

// fixed appends fixed-length opaque data with its padding.
func (e *enc) fixed(p []byte) {
	e.b = append(e.b, p...)
	if n := len(p) % 4; n != 0 {
		e.b = append(e.b, make([]byte, 4-n)...)
	}
}

func (e *enc) str(s string) {
	e.u32(uint32(len(s)))
	e.b = append(e.b, s...)
	if n := len(s) % 4; n != 0 {
		e.b = append(e.b, make([]byte, 4-n)...)
	}
}

// dec reads XDR values. The first error sticks: later reads return zero
// values, and the caller checks err once at the end.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail() {
	if d.err == nil {
		d.err = errShort
	}
	d.b = nil
}

func (d *dec) u32() uint32 {
	if len(d.b) < 4 {
		d.fail()
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *dec) u64() uint64 {
	if len(d.b) < 8 {
		d.fail()
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *dec) bool() bool {
	switch d.u32() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail()
	return false
}

// fixed reads n bytes and their padding. The result aliases the input.
func (d *dec) fixed(n int) []byte {
	pad := (4 - n%4) % 4
	if n < 0 || len(d.b) < n+pad {
		d.fail()
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n+pad:]
	return p
}

// opaque reads variable-length opaque data of at most max bytes.
func (d *dec) opaque(max int) []byte {
	n := d.u32()
	if d.err != nil {
		return nil
	}
	if n > uint32(max) {
		d.fail()
		return nil
	}
	return d.fixed(int(n))
}

func (d *dec) str(max int) string { return string(d.opaque(max)) }
