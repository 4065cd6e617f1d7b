package linux

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// Logs.
//
// A container's stdout and stderr are one file, current.log, opened
// O_APPEND by the runtime and handed to the workload: logging never goes
// through the agent, and survives its restarts. On restart of a container
// name, current.* becomes previous.*.
//
// Lines carry no timestamps in the file. Instead, one runtime-wide ticker
// (Config.LogIndexInterval) stats the log of every running container and,
// when it grew, appends (time, size) to current.idx: 16 bytes per busy
// container per tick. A line's time is that of the first index entry whose
// size covers it, so Timestamps and Since are precise to one tick.
//
// The disk space of a log is capped (Config.LogMaxBytes): when it is
// exceeded, the ticker punches a hole over the oldest half
// (FALLOC_FL_PUNCH_HOLE). Offsets stay valid, readers start at the first
// data (SEEK_DATA), and the writer needs no cooperation.

const followPoll = 250 * time.Millisecond

type indexEntry struct {
	t   int64 // unix nanoseconds
	off int64 // log size at t
}

type logIndex []indexEntry

func appendIndex(path string, t time.Time, off int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("log index: %w", err)
	}
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], uint64(t.UnixNano()))
	binary.LittleEndian.PutUint64(b[8:], uint64(off))
	_, err = f.Write(b[:])
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func readIndex(path string) logIndex {
	b, _ := os.ReadFile(path)
	ix := make(logIndex, 0, len(b)/16)
	for ; len(b) >= 16; b = b[16:] {
		ix = append(ix, indexEntry{int64(binary.LittleEndian.Uint64(b[:8])), int64(binary.LittleEndian.Uint64(b[8:16]))})
	}
	return ix
}

// timeAt is when the byte at off was first seen; after the index: last.
func (ix logIndex) timeAt(off int64, last time.Time) time.Time {
	i := sort.Search(len(ix), func(i int) bool { return ix[i].off > off })
	if i < len(ix) {
		return time.Unix(0, ix[i].t)
	}
	return last
}

// offsetSince is where the bytes first seen at or after t begin.
func (ix logIndex) offsetSince(t time.Time) int64 {
	tn := t.UnixNano()
	i := sort.Search(len(ix), func(i int) bool { return ix[i].t >= tn })
	if i == 0 {
		return 0
	}
	return ix[i-1].off
}

func rotateLogs(dir string) error {
	for _, ext := range []string{".log", ".idx"} {
		cur := filepath.Join(dir, "current"+ext)
		if _, err := os.Stat(cur); err != nil {
			continue
		}
		if err := os.Rename(cur, filepath.Join(dir, "previous"+ext)); err != nil {
			return fmt.Errorf("rotate log: %w", err)
		}
	}
	return nil
}

func (r *Runtime) logTicker() {
	defer close(r.tickDone)
	t := time.NewTicker(r.cfg.LogIndexInterval)
	defer t.Stop()
	for {
		select {
		case <-r.tickStop:
			return
		case now := <-t.C:
			for _, c := range r.runningContainers() {
				r.indexLog(c, now)
			}
		}
	}
}

func (r *Runtime) runningContainers() []*ctr {
	r.mu.Lock()
	sbs := make([]*sbox, 0, len(r.sandboxes))
	for _, sb := range r.sandboxes {
		sbs = append(sbs, sb)
	}
	r.mu.Unlock()
	var cs []*ctr
	for _, sb := range sbs {
		// A sandbox busy starting a container is indexed next tick.
		if !sb.mu.TryLock() {
			continue
		}
		for _, c := range sb.containers {
			if c.running() {
				cs = append(cs, c)
			}
		}
		sb.mu.Unlock()
	}
	return cs
}

// indexLog records the log's growth since the last call and enforces the
// size cap.
func (r *Runtime) indexLog(c *ctr, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	logPath := filepath.Join(c.dir, "current.log")
	st, err := os.Stat(logPath)
	if err != nil || st.Size() == c.logSize {
		return
	}
	size := st.Size()
	c.logSize = size
	if err := appendIndex(filepath.Join(c.dir, "current.idx"), now, size); err != nil {
		r.log.Warn("sandbox: log index", "sandbox", c.sb.id, "container", c.st.Name, "err", err)
	}
	max := r.cfg.LogMaxBytes
	if max <= 0 || size-c.logStart <= max {
		return
	}
	start := (size - max/2) &^ 4095
	f, err := os.OpenFile(logPath, os.O_WRONLY, 0)
	if err != nil {
		return
	}
	err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, start)
	f.Close()
	if err != nil {
		r.log.Warn("sandbox: log cap", "sandbox", c.sb.id, "container", c.st.Name, "err", err)
		c.logStart = size // do not retry every tick
		return
	}
	c.logStart = start
	// Drop index entries for the punched part.
	ix := readIndex(filepath.Join(c.dir, "current.idx"))
	i := sort.Search(len(ix), func(i int) bool { return ix[i].off > start })
	if i > 1 {
		var b bytes.Buffer
		for _, e := range ix[i-1:] {
			_ = binary.Write(&b, binary.LittleEndian, [2]int64{e.t, e.off})
		}
		tmp := filepath.Join(c.dir, "current.idx.tmp")
		if os.WriteFile(tmp, b.Bytes(), 0o640) == nil {
			_ = os.Rename(tmp, filepath.Join(c.dir, "current.idx"))
		}
	}
}

// initLogState sets the ticker's view of an adopted container's log.
func initLogState(c *ctr) {
	ix := readIndex(filepath.Join(c.dir, "current.idx"))
	if len(ix) > 0 {
		c.logSize = ix[len(ix)-1].off
	}
	if f, err := os.Open(filepath.Join(c.dir, "current.log")); err == nil {
		if off, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_DATA); err == nil {
			c.logStart = off
		}
		f.Close()
	}
}

// Logs implements sandbox.Runtime.
func (r *Runtime) Logs(ctx context.Context, sandboxID, name string, opts sandbox.LogOptions) (io.ReadCloser, error) {
	c, err := r.container(sandboxID, name)
	if err != nil {
		return nil, err
	}
	base, done := "current", c.done
	if opts.Previous {
		base = "previous"
		ended := make(chan struct{})
		close(ended)
		done = ended
	}
	f, err := os.Open(filepath.Join(c.dir, base+".log"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: no %s log for container %q", sandbox.ErrNotFound, base, name)
	}
	if err != nil {
		return nil, err
	}
	ix := readIndex(filepath.Join(c.dir, base+".idx"))
	pr, pw := io.Pipe()
	go func() {
		err := streamLog(ctx, f, ix, opts, done, pw)
		f.Close()
		pw.CloseWithError(err)
	}()
	return pr, nil
}

func streamLog(ctx context.Context, f *os.File, ix logIndex, opts sandbox.LogOptions, done <-chan struct{}, out io.Writer) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	start, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_DATA)
	if err != nil {
		start = 0 // ENXIO: empty or all hole
		if size > 0 {
			start = size
		}
	}
	if !opts.Since.IsZero() {
		start = max(start, ix.offsetSince(opts.Since))
	}
	if start, err = alignLine(f, start, size); err != nil {
		return err
	}
	if opts.Tail >= 0 {
		if start, err = tailStart(f, start, size, opts.Tail); err != nil {
			return err
		}
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		return err
	}
	// Bytes past the index were written after the last tick: until the
	// file's mtime for a finished log, "now" while following.
	lastSeen := st.ModTime()
	w := &lineWriter{out: out, ix: ix, off: start, ts: opts.Timestamps}
	rd := bufio.NewReaderSize(f, 32<<10)
	var t *time.Ticker
	for {
		line, err := rd.ReadBytes('\n')
		if len(line) > 0 && (err == nil || !opts.Follow) {
			if opts.Follow {
				lastSeen = time.Now()
			}
			if werr := w.write(line, lastSeen); werr != nil {
				return werr
			}
		} else if len(line) > 0 {
			// A partial line while following: wait for its end.
			if _, serr := f.Seek(-int64(len(line)), io.SeekCurrent); serr != nil {
				return serr
			}
			rd.Reset(f)
		}
		if err == nil {
			continue
		}
		if !errors.Is(err, io.EOF) {
			return err
		}
		if !opts.Follow {
			return nil
		}
		select {
		case <-done:
			// Read what the instance wrote before it ended, then stop.
			opts.Follow = false
			continue
		case <-ctx.Done():
			return nil
		default:
		}
		if t == nil {
			t = time.NewTicker(followPoll)
			defer t.Stop()
		}
		select {
		case <-t.C:
		case <-done:
		case <-ctx.Done():
			return nil
		}
	}
}

type lineWriter struct {
	out io.Writer
	ix  logIndex
	off int64
	ts  bool
	buf []byte
}

func (w *lineWriter) write(line []byte, last time.Time) error {
	if w.ts {
		w.buf = w.ix.timeAt(w.off, last).UTC().AppendFormat(w.buf[:0], time.RFC3339Nano)
		w.buf = append(w.buf, ' ')
		w.buf = append(w.buf, line...)
	} else {
		w.buf = append(w.buf[:0], line...)
	}
	w.off += int64(len(line))
	_, err := w.out.Write(w.buf)
	return err
}

// alignLine moves off to the start of the next whole line.
func alignLine(f *os.File, off, size int64) (int64, error) {
	if off <= 0 || off >= size {
		return max(off, 0), nil
	}
	buf := make([]byte, 4096)
	pos := off - 1
	for pos < size {
		n, err := f.ReadAt(buf, pos)
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			return pos + int64(i) + 1, nil
		}
		pos += int64(n)
		if err != nil {
			break
		}
	}
	return size, nil
}

// tailStart finds where the last n lines in [start, size) begin.
func tailStart(f *os.File, start, size int64, n int) (int64, error) {
	if n == 0 {
		return size, nil
	}
	buf := make([]byte, 8192)
	end := size
	// A final newline ends the last line; it does not start another.
	if end > start {
		var b [1]byte
		if _, err := f.ReadAt(b[:], end-1); err == nil && b[0] == '\n' {
			end--
		}
	}
	count := 0
	for end > start {
		chunk := min(int64(len(buf)), end-start)
		pos := end - chunk
		if _, err := f.ReadAt(buf[:chunk], pos); err != nil {
			return 0, err
		}
		for i := chunk - 1; i >= 0; i-- {
			if buf[i] == '\n' {
				count++
				if count == n {
					return pos + i + 1, nil
				}
			}
		}
		end = pos
	}
	return start, nil
}
