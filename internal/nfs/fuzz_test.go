package nfs

import (
	"bytes"
	"testing"
)

// FuzzParseReply feeds arbitrary records to the RPC reply decoder and the
// NFS result decoders behind it: none may panic, allocate without bound
// or accept a reply that does not hold together. Seeds (real replies of
// ganesha, and broken ones) are in testdata/fuzz/FuzzParseReply.
func FuzzParseReply(f *testing.F) {
	f.Fuzz(func(t *testing.T, rec []byte) {
		if len(rec) > maxRecord {
			return
		}
		_, res, err := parseReply(rec)
		if err != nil {
			if res != nil {
				t.Fatal("results with an error")
			}
			return
		}
		// Every decoder over the same results; each must stop at the end.
		d := &dec{b: res}
		d.u32()
		ents, _, _, _, err := decodeDirPage(d, 0)
		if err == nil {
			for _, e := range ents {
				if len(e.Name) > maxName || len(e.FH) > maxFH {
					t.Fatalf("entry over the limits: %d %d", len(e.Name), len(e.FH))
				}
			}
		}
		d = &dec{b: res}
		d.u32()
		d.fattr()
		d.wcc()
		d.postOpFH()
		d.opaque(1 << 20)
		d.str(maxPath)
	})
}

// FuzzReadRecord checks record marking: fragments are joined, and a
// record over the limit is refused before it is read.
func FuzzReadRecord(f *testing.F) {
	f.Add([]byte{0x80, 0, 0, 4, 1, 2, 3, 4})
	f.Add([]byte{0, 0, 0, 2, 1, 2, 0x80, 0, 0, 1, 3})
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 1 << 12
		rec, err := readRecord(bytes.NewReader(data), max)
		if err == nil && len(rec) > max {
			t.Fatalf("record of %d bytes over a limit of %d", len(rec), max)
		}
	})
}
