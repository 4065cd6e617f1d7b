package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/coder/websocket"

	"github.com/skiffhq/skiff/api"
)

// AttachOptions describes an attachment to a container started with tty
// or stdin.
type AttachOptions struct {
	Container string
	// Stdin, when not nil, is copied to the container's stdin (or
	// terminal). Its EOF does not close the container's stdin. A Stdin that
	// blocks (a terminal) is left blocked in a goroutine when Attach ends.
	Stdin io.Reader
	// Stdout receives the container's output (nil discards).
	Stdout io.Writer
	// Resize carries terminal size changes (send the first size at once).
	Resize <-chan api.TermSize
}

// Attach streams a running container's stdio over a WebSocket until the
// container ends (nil) or ctx is done (detach: the container goes on).
func (c *Client) Attach(ctx context.Context, idOrName string, opts AttachOptions) error {
	q := url.Values{}
	if opts.Container != "" {
		q.Set("container", opts.Container)
	}
	u := c.url(q, "v1", "groups", idOrName, "attach", "ws")
	signed, err := c.newRequest(ctx, http.MethodGet, u, nil, "")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient: c.http,
		HTTPHeader: signed.Header,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols && resp.Body != nil {
			return decodeError(http.MethodGet, u.Path, resp)
		}
		return fmt.Errorf("attach: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(maxExecMessage)
	stdout := opts.Stdout
	if stdout == nil {
		stdout = io.Discard
	}
	send := func(ch byte, payload []byte) error {
		msg := make([]byte, 1+len(payload))
		msg[0] = ch
		copy(msg[1:], payload)
		return conn.Write(ctx, websocket.MessageBinary, msg)
	}
	if opts.Stdin != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, rerr := opts.Stdin.Read(buf)
				if n > 0 && send(api.ExecChannelStdin, buf[:n]) != nil {
					return
				}
				if rerr != nil || ctx.Err() != nil {
					return
				}
			}
		}()
	}
	if opts.Resize != nil {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case sz, ok := <-opts.Resize:
					if !ok {
						return
					}
					b, _ := json.Marshal(sz)
					if send(api.ExecChannelResize, b) != nil {
						return
					}
				}
			}
		}()
	}
	for {
		typ, msg, err := conn.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("attach stream ended without an exit message: %w", err)
		}
		if typ != websocket.MessageBinary || len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case api.ExecChannelStdout, api.ExecChannelStderr:
			if _, err := stdout.Write(msg[1:]); err != nil {
				return err
			}
		case api.ExecChannelExit:
			var ex api.ExecExit
			if err := json.Unmarshal(msg[1:], &ex); err != nil {
				return fmt.Errorf("attach: bad exit message: %w", err)
			}
			conn.Close(websocket.StatusNormalClosure, "")
			if ex.Error != "" {
				return fmt.Errorf("attach: %s", ex.Error)
			}
			return nil
		}
	}
}
