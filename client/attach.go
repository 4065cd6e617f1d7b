package client

import (
	"context"
	"fmt"
	"io"
	"net/url"

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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.dialFrames(ctx, u, "attach")
	if err != nil {
		return err
	}
	defer st.conn.CloseNow()
	stdout := opts.Stdout
	if stdout == nil {
		stdout = io.Discard
	}
	st.pump(ctx, opts.Stdin, opts.Resize, false)
	ex, err := st.read(ctx, stdout, stdout, "attach")
	if err != nil {
		return err
	}
	if ex.Error != "" {
		return fmt.Errorf("attach: %s", ex.Error)
	}
	return nil
}
