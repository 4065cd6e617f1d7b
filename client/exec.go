package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/coder/websocket"

	"github.com/skiffhq/skiff/api"
)

// ExecOptions describes an interactive exec.
type ExecOptions struct {
	Container string
	Command   []string
	// TTY gives the process a terminal; its output then all comes on Stdout.
	TTY bool
	// Stdin, when not nil, is copied to the process; its EOF closes the
	// process's stdin. A Stdin that blocks (a terminal) is left blocked in
	// a goroutine when the exec ends.
	Stdin io.Reader
	// Stdout and Stderr receive the output; a nil Stderr means Stdout, a
	// nil Stdout discards.
	Stdout, Stderr io.Writer
	// Resize carries terminal size changes (send the first size at once).
	Resize <-chan api.TermSize
}

// ExecExitError says the server could not run the command at all.
type ExecExitError struct{ Message string }

func (e *ExecExitError) Error() string { return "exec: " + e.Message }

// maxExecMessage bounds one WebSocket message from the server.
const maxExecMessage = 16 << 20

// ExecInteractive runs a command in a container over a WebSocket, streaming
// stdin, stdout, stderr and terminal resizes, and returns the process's exit
// code.
func (c *Client) ExecInteractive(ctx context.Context, idOrName string, opts ExecOptions) (exitCode int, err error) {
	if len(opts.Command) == 0 {
		return -1, errors.New("exec: no command")
	}
	q := url.Values{}
	if opts.Container != "" {
		q.Set("container", opts.Container)
	}
	q["command"] = append([]string(nil), opts.Command...)
	if opts.TTY {
		q.Set("tty", "true")
	}
	if opts.Stdin != nil {
		q.Set("stdin", "true")
	}
	u := c.url(q, "v1", "groups", idOrName, "exec", "ws")
	// Sign a plain GET for the same URL; the dial sends these headers.
	signed, err := c.newRequest(ctx, http.MethodGet, u, nil, "")
	if err != nil {
		return -1, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient: c.http,
		HTTPHeader: signed.Header,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols && resp.Body != nil {
			return -1, decodeError(http.MethodGet, u.Path, resp)
		}
		return -1, fmt.Errorf("exec: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(maxExecMessage)

	stdout := opts.Stdout
	if stdout == nil {
		stdout = io.Discard
	}
	stderr := opts.Stderr
	if stderr == nil {
		stderr = stdout
	}

	// Writers: stdin and resizes, serialised through one goroutine each;
	// coder/websocket allows concurrent writers.
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
				if n > 0 {
					if send(api.ExecChannelStdin, buf[:n]) != nil {
						return
					}
				}
				if rerr != nil {
					if ctx.Err() == nil {
						_ = send(api.ExecChannelClose, nil)
					}
					return
				}
				if ctx.Err() != nil {
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
				return -1, ctx.Err()
			}
			return -1, fmt.Errorf("exec stream ended without an exit status: %w", err)
		}
		if typ != websocket.MessageBinary || len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case api.ExecChannelStdout:
			if _, err := stdout.Write(msg[1:]); err != nil {
				return -1, err
			}
		case api.ExecChannelStderr:
			if _, err := stderr.Write(msg[1:]); err != nil {
				return -1, err
			}
		case api.ExecChannelExit:
			var ex api.ExecExit
			if err := json.Unmarshal(msg[1:], &ex); err != nil {
				return -1, fmt.Errorf("exec: bad exit message: %w", err)
			}
			conn.Close(websocket.StatusNormalClosure, "")
			if ex.Error != "" {
				return ex.ExitCode, &ExecExitError{Message: ex.Error}
			}
			return ex.ExitCode, nil
		}
	}
}
