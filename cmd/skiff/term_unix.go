//go:build unix

package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	"github.com/skiffhq/skiff/api"
)

// watchTermSize sends the size of terminal fd now and after every SIGWINCH,
// until ctx is done.
func watchTermSize(ctx context.Context, fd int) <-chan api.TermSize {
	ch := make(chan api.TermSize, 1)
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	send := func() {
		w, h, err := term.GetSize(fd)
		if err != nil || w <= 0 || h <= 0 {
			return
		}
		select {
		case ch <- api.TermSize{Rows: uint16(h), Cols: uint16(w)}:
		case <-ctx.Done():
		}
	}
	go func() {
		defer signal.Stop(winch)
		send()
		for {
			select {
			case <-ctx.Done():
				return
			case <-winch:
				send()
			}
		}
	}()
	return ch
}
