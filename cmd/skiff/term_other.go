//go:build !unix

package main

import (
	"context"

	"golang.org/x/term"

	"github.com/skiffhq/skiff/api"
)

// watchTermSize sends the size of terminal fd once; there is no SIGWINCH.
func watchTermSize(ctx context.Context, fd int) <-chan api.TermSize {
	ch := make(chan api.TermSize, 1)
	if w, h, err := term.GetSize(fd); err == nil {
		ch <- api.TermSize{Rows: uint16(h), Cols: uint16(w)}
	}
	return ch
}
