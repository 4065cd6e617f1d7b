package client

import (
	"context"
	"errors"
	"io"
	"net/url"

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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.dialFrames(ctx, u, "exec")
	if err != nil {
		return -1, err
	}
	defer st.conn.CloseNow()
	stdout := opts.Stdout
	if stdout == nil {
		stdout = io.Discard
	}
	stderr := opts.Stderr
	if stderr == nil {
		stderr = stdout
	}
	st.pump(ctx, opts.Stdin, opts.Resize, true)
	ex, err := st.read(ctx, stdout, stderr, "exec")
	if err != nil {
		return -1, err
	}
	if ex.Error != "" {
		return ex.ExitCode, &ExecExitError{Message: ex.Error}
	}
	return ex.ExitCode, nil
}
