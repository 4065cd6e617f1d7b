package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/coder/websocket"

	"github.com/skiffhq/skiff/api"
)

// LogOptions selects what Logs returns.
type LogOptions struct {
	// Container names the container; "" is the group's only (or first) one.
	Container string
	// Tail is the number of lines from the end; nil means all of them.
	Tail *int
	// Since is an RFC 3339 time or a duration back from now ("10m").
	Since string
	// Follow keeps the stream open and sends new lines as they come, until
	// the container ends or ctx is done.
	Follow bool
	// Previous returns the logs of the container's previous instance.
	Previous bool
	// Timestamps prefixes every line with its RFC 3339 time.
	Timestamps bool
}

func (o LogOptions) query() url.Values {
	q := url.Values{}
	if o.Container != "" {
		q.Set("container", o.Container)
	}
	if o.Tail != nil {
		q.Set("tail", strconv.Itoa(*o.Tail))
	}
	if o.Since != "" {
		q.Set("since", o.Since)
	}
	for k, on := range map[string]bool{"follow": o.Follow, "previous": o.Previous, "timestamps": o.Timestamps} {
		if on {
			q.Set(k, "true")
		}
	}
	return q
}

// Logs returns a container's log as a text stream. The caller closes it;
// cancelling ctx ends a followed stream.
func (c *Client) Logs(ctx context.Context, idOrName string, opts LogOptions) (io.ReadCloser, error) {
	req, err := c.newRequest(ctx, http.MethodGet, c.url(opts.query(), "v1", "groups", idOrName, "logs"), nil, "")
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// WatchOptions filters a watch.
type WatchOptions struct {
	Name   string
	Labels map[string]string
}

// Watcher reads a watch stream, one event at a time:
//
//	w, err := c.Watch(ctx, opts)
//	defer w.Close()
//	for w.Next() { ev := w.Event() ... }
//	err = w.Err()
type Watcher struct {
	body io.ReadCloser
	dec  *json.Decoder
	ev   api.WatchEvent
	done bool
	err  error
}

// Watch opens a stream of changes to the groups that match opts. It ends
// when ctx is done, Close is called or the server closes it.
func (c *Client) Watch(ctx context.Context, opts WatchOptions) (*Watcher, error) {
	q := ListOptions{Name: opts.Name, Labels: opts.Labels}.query()
	req, err := c.newRequest(ctx, http.MethodGet, c.url(q, "v1", "watch"), nil, "")
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	return &Watcher{body: resp.Body, dec: json.NewDecoder(resp.Body)}, nil
}

// Next reads the next event; false at the end of the stream or on error.
func (w *Watcher) Next() bool {
	if w.done {
		return false
	}
	var ev api.WatchEvent
	if err := w.dec.Decode(&ev); err != nil {
		w.done = true
		if !errors.Is(err, io.EOF) {
			w.err = fmt.Errorf("watch stream: %w", err)
		}
		return false
	}
	w.ev = ev
	return true
}

// Event is the event Next read.
func (w *Watcher) Event() api.WatchEvent { return w.ev }

// Err is the error that ended the stream; nil at a clean end.
func (w *Watcher) Err() error { return w.err }

// Close ends the stream.
func (w *Watcher) Close() error { return w.body.Close() }

// frameStream is an interactive WebSocket session framed with the channel
// bytes of package api (exec/ws and attach/ws).
type frameStream struct {
	conn *websocket.Conn
}

// dialFrames signs and dials a framed WebSocket endpoint.
func (c *Client) dialFrames(ctx context.Context, u *url.URL, what string) (*frameStream, error) {
	signed, err := c.newRequest(ctx, http.MethodGet, u, nil, "")
	if err != nil {
		return nil, err
	}
	conn, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{HTTPClient: c.http, HTTPHeader: signed.Header})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols && resp.Body != nil {
			return nil, decodeError(http.MethodGet, u.Path, resp)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	conn.SetReadLimit(maxExecMessage)
	return &frameStream{conn: conn}, nil
}

func (s *frameStream) send(ctx context.Context, ch byte, payload []byte) error {
	msg := make([]byte, 1+len(payload))
	msg[0] = ch
	copy(msg[1:], payload)
	return s.conn.Write(ctx, websocket.MessageBinary, msg)
}

// pump copies stdin and resizes to the stream until ctx ends; with
// closeOnEOF, stdin's EOF is sent as a close frame (coder/websocket allows
// concurrent writers).
func (s *frameStream) pump(ctx context.Context, stdin io.Reader, resize <-chan api.TermSize, closeOnEOF bool) {
	if stdin != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, rerr := stdin.Read(buf)
				if n > 0 && s.send(ctx, api.ExecChannelStdin, buf[:n]) != nil {
					return
				}
				if rerr != nil {
					if closeOnEOF && ctx.Err() == nil {
						_ = s.send(ctx, api.ExecChannelClose, nil)
					}
					return
				}
				if ctx.Err() != nil {
					return
				}
			}
		}()
	}
	if resize != nil {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case sz, ok := <-resize:
					if !ok {
						return
					}
					b, _ := json.Marshal(sz)
					if s.send(ctx, api.ExecChannelResize, b) != nil {
						return
					}
				}
			}
		}()
	}
}

// read copies output frames until the exit frame, which it returns.
func (s *frameStream) read(ctx context.Context, stdout, stderr io.Writer, what string) (api.ExecExit, error) {
	for {
		typ, msg, err := s.conn.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return api.ExecExit{}, ctx.Err()
			}
			return api.ExecExit{}, fmt.Errorf("%s stream ended without an exit message: %w", what, err)
		}
		if typ != websocket.MessageBinary || len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case api.ExecChannelStdout:
			if _, err := stdout.Write(msg[1:]); err != nil {
				return api.ExecExit{}, err
			}
		case api.ExecChannelStderr:
			if _, err := stderr.Write(msg[1:]); err != nil {
				return api.ExecExit{}, err
			}
		case api.ExecChannelExit:
			var ex api.ExecExit
			if err := json.Unmarshal(msg[1:], &ex); err != nil {
				return api.ExecExit{}, fmt.Errorf("%s: bad exit message: %w", what, err)
			}
			s.conn.Close(websocket.StatusNormalClosure, "")
			return ex, nil
		}
	}
}
