// Command skiff is the one skiff binary: the server, agent and all-in-one
// roles (skiff up, server, agent) and the docker-like client verbs (run,
// ps, logs, exec, ...) that talk to a server's native API.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/skiffhq/skiff/internal/sandbox/linux"
)

func main() {
	// First, before anything else runs: the sandbox runtime re-executes
	// this binary as a container's init stage, which never returns here.
	linux.Init()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, the default action is back: a second Ctrl-C
	// kills a client that is slow to wind down.
	go func() { <-ctx.Done(); stop() }()
	code := execute(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
