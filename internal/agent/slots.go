package agent

import (
	"context"
	"runtime"
)

// startSlots bounds the sandbox creates and container starts that run at
// once. They are CPU work in the kernel (namespaces, mounts, cgroups,
// exec); hundreds at once on a few cores only lengthen every run queue,
// starving the control plane and the API on the same host, without
// starting anything sooner.
//
// Measured on 2 cores, 500 groups at once (skiff bench burst, skiff up):
// with no limit a single GET took up to 1.0–1.2 s (p99) during the burst,
// with 4 slots 52–75 ms, and the burst was as fast (4.1–5.9 s both ways).
func newStartSlots(n int) chan struct{} {
	if n == 0 {
		n = 2 * runtime.NumCPU()
	}
	if n < 0 {
		return nil
	}
	return make(chan struct{}, n)
}

// startSlot takes a start slot (or returns at once when ctx ends) and
// returns its release.
func (a *Agent) startSlot(ctx context.Context) (release func()) {
	if a.slots == nil {
		return func() {}
	}
	select {
	case a.slots <- struct{}{}:
		return func() { <-a.slots }
	case <-ctx.Done():
		return func() {}
	}
}
