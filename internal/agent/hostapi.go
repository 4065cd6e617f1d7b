package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/image"
	"github.com/skiffhq/skiff/internal/sandbox"
)

// hostAPI is what the server calls on this agent through the session. The
// session is mutually authenticated; the server has already checked that
// the caller owns the group.
func (a *Agent) hostAPI() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, h func(w http.ResponseWriter, r *http.Request) error) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if err := h(w, r); err != nil {
				status, code := errdefs.Class(err)
				if errors.Is(err, sandbox.ErrNotFound) || errors.Is(err, image.ErrNotFound) {
					status, code = http.StatusNotFound, "NotFound"
				} else if errors.Is(err, sandbox.ErrNotRunning) {
					status, code = http.StatusConflict, "IncorrectStatus"
				} else if errors.Is(err, sandbox.ErrInvalid) || errors.Is(err, image.ErrInvalid) || errors.Is(err, image.ErrCorrupt) {
					status, code = http.StatusBadRequest, "InvalidParameter"
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(status)
				_ = json.NewEncoder(w).Encode(api.Error{Code: code, Message: err.Error()})
			}
		})
	}
	handle("GET /host/v1/groups/{id}/logs", a.serveLogs)
	handle("POST /host/v1/groups/{id}/exec", a.serveExec)
	handle("GET /host/v1/groups/{id}/exec/ws", a.serveExecWS)
	handle("GET /host/v1/groups/{id}/attach/ws", a.serveAttachWS)
	handle("GET /host/v1/groups/{id}/metrics", a.serveMetrics)
	handle("PUT /host/v1/groups/{id}/volumes/{name}", a.serveVolumeUpdate) // volumes.go
	handle("GET /host/v1/images", func(w http.ResponseWriter, r *http.Request) error {
		imgs, err := a.images.List(r.Context())
		if err != nil {
			return err
		}
		if imgs == nil {
			imgs = []api.Image{}
		}
		return writeJSONReply(w, imgs)
	})
	handle("POST /host/v1/images/import", func(w http.ResponseWriter, r *http.Request) error {
		imgs, err := a.images.Import(r.Context(), r.Body, nil)
		if err != nil {
			return err
		}
		a.log.Info("imported images", "count", len(imgs))
		return writeJSONReply(w, imgs)
	})
	handle("POST /host/v1/images/pull", a.servePull)
	handle("GET /host/v1/imagecaches", a.serveCacheList)
	handle("PUT /host/v1/imagecaches/{id}", a.serveCachePut)
	handle("DELETE /host/v1/imagecaches/{id}", a.serveCacheDelete)
	handle("PUT /host/v1/pool/targets", a.servePoolTargets) // pool.go
	return mux
}

func writeJSONReply(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}

// containerName picks the container a call means: the one named, or the
// group's only (or first) container.
func (a *Agent) containerName(id, name string) (string, error) {
	a.mu.Lock()
	r := a.runners[id]
	a.mu.Unlock()
	if r == nil {
		return "", errdefs.Userf(errdefs.ErrNotFound, "group "+id+" is not running on this host")
	}
	specs := append(append([]api.Container{}, r.g.Spec.Containers...), r.g.Spec.InitContainers...)
	if name == "" {
		return specs[0].Name, nil
	}
	for _, c := range specs {
		if c.Name == name {
			return name, nil
		}
	}
	return "", errdefs.Userf(errdefs.ErrNotFound, fmt.Sprintf("group has no container %q", name))
}

func (a *Agent) serveLogs(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	id := r.PathValue("id")
	name, err := a.containerName(id, q.Get("container"))
	if err != nil {
		return err
	}
	opts := sandbox.LogOptions{Tail: -1}
	if s := q.Get("tail"); s != "" {
		if opts.Tail, err = strconv.Atoi(s); err != nil || opts.Tail < 0 {
			return errdefs.Invalid("tail must be a number of lines")
		}
	}
	if s := q.Get("since"); s != "" {
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			opts.Since = t
		} else if d, err := time.ParseDuration(s); err == nil && d > 0 {
			opts.Since = time.Now().Add(-d)
		} else {
			return errdefs.Invalid("since must be an RFC 3339 time or a duration such as 10m")
		}
	}
	for _, f := range []struct {
		name string
		dst  *bool
	}{{"follow", &opts.Follow}, {"previous", &opts.Previous}, {"timestamps", &opts.Timestamps}} {
		if s := q.Get(f.name); s != "" {
			if *f.dst, err = strconv.ParseBool(s); err != nil {
				return errdefs.Invalid(f.name + " must be true or false")
			}
		}
	}
	rc, err := a.rt.Logs(r.Context(), id, name, opts)
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	buf := make([]byte, 32<<10)
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return nil
			}
			if fl != nil {
				fl.Flush()
			}
		}
		if err != nil {
			return nil
		}
	}
}

func (a *Agent) serveExec(w http.ResponseWriter, r *http.Request) error {
	var req api.ExecRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return errdefs.Invalid("malformed exec request: " + err.Error())
	}
	if len(req.Command) == 0 {
		return errdefs.Invalid("command is required")
	}
	id := r.PathValue("id")
	name, err := a.containerName(id, req.Container)
	if err != nil {
		return err
	}
	timeout := 60 * time.Second
	if req.TimeoutSeconds > 0 {
		timeout = time.Duration(min(req.TimeoutSeconds, 3600)) * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	var stdout, stderr limitedBuffer
	stdout.max, stderr.max = 4<<20, 4<<20
	code, err := a.rt.Exec(ctx, id, name, sandbox.ExecConfig{Args: req.Command, Stdin: strings.NewReader(req.Stdin), Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		return err
	}
	return writeJSONReply(w, api.ExecResult{Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: code})
}

// limitedBuffer keeps the first max bytes written.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// wsStream is one interactive WebSocket session framed with the channel
// bytes of package api: stdin and resize frames in, output frames out. The
// exec and attach endpoints share it.
type wsStream struct {
	conn   *websocket.Conn
	ctx    context.Context
	cancel context.CancelFunc
	wmu    sync.Mutex
	stdin  *io.PipeReader
	resize chan sandbox.TermSize
}

// acceptStream upgrades the request. A close frame from the client ends
// stdin when closeStdin is set (exec); attach ignores it. The client going
// away cancels the stream's context.
func acceptStream(w http.ResponseWriter, r *http.Request, closeStdin bool) (*wsStream, error) {
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return nil, err // Accept wrote the error
	}
	conn.SetReadLimit(1 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	stdinR, stdinW := io.Pipe()
	s := &wsStream{conn: conn, ctx: ctx, cancel: cancel, stdin: stdinR, resize: make(chan sandbox.TermSize, 4)}
	go func() {
		defer stdinW.Close()
		for {
			typ, msg, err := conn.Read(ctx)
			if err != nil {
				cancel()
				return
			}
			if typ != websocket.MessageBinary || len(msg) == 0 {
				continue
			}
			switch msg[0] {
			case api.ExecChannelStdin:
				if _, err := stdinW.Write(msg[1:]); err != nil {
					return
				}
			case api.ExecChannelResize:
				var ts api.TermSize
				if json.Unmarshal(msg[1:], &ts) == nil {
					select {
					case s.resize <- sandbox.TermSize{Rows: ts.Rows, Cols: ts.Cols}:
					default:
					}
				}
			case api.ExecChannelClose:
				if closeStdin {
					stdinW.Close()
				}
			}
		}
	}()
	return s, nil
}

func (s *wsStream) send(ch byte, p []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	msg := make([]byte, 1+len(p))
	msg[0] = ch
	copy(msg[1:], p)
	wctx, wcancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer wcancel()
	return s.conn.Write(wctx, websocket.MessageBinary, msg)
}

func (s *wsStream) writer(ch byte) io.Writer { return chanWriter{send: s.send, ch: ch} }

// finish sends the exit frame and closes the session.
func (s *wsStream) finish(code int, err error, reason string) {
	exit := api.ExecExit{ExitCode: code}
	if err != nil {
		exit.Error = err.Error()
		exit.ExitCode = -1
	}
	b, _ := json.Marshal(exit)
	_ = s.send(api.ExecChannelExit, b)
	s.conn.Close(websocket.StatusNormalClosure, reason)
}

func (s *wsStream) close() {
	s.cancel()
	s.stdin.Close()
	s.conn.CloseNow()
}

// serveExecWS runs an interactive exec over a WebSocket.
func (a *Agent) serveExecWS(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	id := r.PathValue("id")
	name, err := a.containerName(id, q.Get("container"))
	if err != nil {
		return err
	}
	cmd := q["command"]
	if len(cmd) == 0 {
		return errdefs.Invalid("command is required (command=sh&command=-c&command=...)")
	}
	tty := q.Get("tty") == "true" || q.Get("tty") == "1"
	wantStdin := q.Get("stdin") == "true" || q.Get("stdin") == "1"
	st, err := acceptStream(w, r, true)
	if err != nil {
		return nil
	}
	defer st.close()
	cfg := sandbox.ExecConfig{Args: cmd, TTY: tty, Resize: st.resize,
		Stdout: st.writer(api.ExecChannelStdout), Stderr: st.writer(api.ExecChannelStderr)}
	if wantStdin {
		cfg.Stdin = st.stdin
	}
	code, err := a.rt.Exec(st.ctx, id, name, cfg)
	st.finish(code, err, "exited")
	return nil
}

// serveAttachWS attaches to the stdio of a container started with tty or
// stdin: stdin, resize and output (on the stdout channel), then an exit
// message when the container ended or the attachment failed. Stdin's close
// does not close the container's stdin. Detaching (closing the WebSocket)
// leaves the container running.
func (a *Agent) serveAttachWS(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	name, err := a.containerName(id, r.URL.Query().Get("container"))
	if err != nil {
		return err
	}
	at, ok := a.rt.(sandbox.Attacher)
	if !ok {
		return errdefs.Invalid("this host's runtime cannot attach to containers")
	}
	st, err := acceptStream(w, r, false)
	if err != nil {
		return nil
	}
	defer st.close()
	err = at.Attach(st.ctx, id, name, sandbox.AttachConfig{Stdin: st.stdin, Resize: st.resize, Stdout: st.writer(api.ExecChannelStdout)})
	if st.ctx.Err() != nil {
		return nil // detached
	}
	st.finish(0, err, "detached")
	return nil
}

type chanWriter struct {
	send func(byte, []byte) error
	ch   byte
}

func (c chanWriter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		n := min(len(p), 32<<10)
		if err := c.send(c.ch, p[:n]); err != nil {
			return 0, err
		}
		p = p[n:]
	}
	return total, nil
}

func (a *Agent) serveMetrics(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := a.containerName(id, ""); err != nil {
		return err
	}
	st, err := a.rt.Stats(r.Context(), id)
	if err != nil {
		return err
	}
	m := api.Metrics{GroupID: id, Time: st.Time, CPUNanos: st.CPUNanos, MemoryUsed: st.MemoryUsed, Pids: st.Pids, RxBytes: st.RxBytes, TxBytes: st.TxBytes}
	for name, cs := range st.Containers {
		m.Containers = append(m.Containers, api.ContainerMetrics{Name: name, CPUNanos: cs.CPUNanos, MemoryUsed: cs.MemoryUsed, Pids: cs.Pids})
	}
	return writeJSONReply(w, m)
}
