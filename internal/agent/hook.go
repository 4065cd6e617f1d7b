package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/sandbox"
)

// Lifecycle hooks and stopping one container, as Kubernetes has them.
//
// postStart runs right after the container started; until it completes the
// container is Waiting (ContainerCreating) and not ready, and its probes
// wait. A failed postStart kills the container; the restart policy decides
// what next. preStop runs before SIGTERM whenever we stop a container with
// a grace period (delete, restart, liveness or startup failure, deadline);
// the hook and the SIGTERM→SIGKILL wait share that one grace period. A
// grace period of 0 (rm -f) skips preStop.

func postStartOf(c *ctr) *api.Handler {
	if c.init || c.spec.Lifecycle == nil {
		return nil
	}
	return c.spec.Lifecycle.PostStart
}

func preStopOf(c *ctr) *api.Handler {
	if c.init || c.spec.Lifecycle == nil {
		return nil
	}
	return c.spec.Lifecycle.PreStop
}

// runPostStart starts c's postStart hook, if it has one, in the
// background; postStartDone takes the result.
func (r *runner) runPostStart(c *ctr) {
	h := postStartOf(c)
	if h == nil {
		return
	}
	l := &c.life
	ctx, cancel := context.WithCancel(r.ctx)
	l.hooking, l.cancelHook = true, cancel
	c.st.State = api.ContainerWaiting
	c.st.Reason, c.st.Message = "ContainerCreating", "running the postStart hook"
	name, inst, ip, act := c.spec.Name, l.instance, r.ip, handlerAction(h)
	go func() {
		defer cancel()
		err := r.hook(ctx, ip, name, act)
		r.send(func() { r.postStartDone(name, inst, err) })
	}()
}

func (r *runner) postStartDone(name string, inst int, err error) {
	c := r.find(name)
	if c == nil || c.life.instance != inst || !c.running || !c.life.hooking {
		return
	}
	l := &c.life
	l.hooking, l.cancelHook = false, nil
	if err != nil {
		r.event("Warning", "FailedPostStartHook", name, "PostStartHook failed: %v", err)
		r.kill(c, fmt.Sprintf("FailedPostStartHook: stopping container %s", name), fmt.Sprintf("PostStartHookError: %v", err))
		return
	}
	c.st.State = api.ContainerRunning
	c.st.Reason, c.st.Message = "", ""
}

// hook runs a hook's action. As in Kubernetes, an HTTP hook fails only when
// its request does, whatever the response's status.
func (r *runner) hook(ctx context.Context, ip, container string, a action) error {
	switch {
	case a.exec != nil:
		return r.execAction(ctx, container, a.exec.Command)
	case a.http != nil:
		_, _, _, err := httpGet(ctx, ip, a.http)
		return err
	case a.tcp != nil:
		return tcpProbe(ctx, ip, a.tcp.Port)
	}
	return errors.New("no exec, httpGet or tcpSocket action")
}

// kill stops one container in the background: preStop, then SIGTERM, then
// SIGKILL after what is left of the grace period. Its exit then arrives as
// any other, and the restart policy applies. why is the Killing event's
// message; cause becomes the ended instance's message.
func (r *runner) kill(c *ctr, why, cause string) {
	l := &c.life
	if l.stopping || !c.running {
		return
	}
	l.stopping, l.killMsg = true, cause
	grace := r.grace()
	r.event("Normal", "Killing", c.spec.Name, "%s", why)
	name, inst, ip, pre := c.spec.Name, l.instance, r.ip, preStopOf(c)
	go func() {
		// Not the runner's context: a kill once begun is carried out even if
		// the agent stops meanwhile.
		preErr, err := r.stopContainer(context.Background(), ip, name, pre, grace)
		r.send(func() { r.killDone(name, inst, preErr, err) })
	}()
}

func (r *runner) killDone(name string, inst int, preErr, err error) {
	c := r.find(name)
	if c == nil {
		return
	}
	if preErr != nil {
		r.event("Warning", "FailedPreStopHook", name, "PreStopHook failed: %v", preErr)
	}
	if err != nil && c.life.instance == inst && c.running {
		// It still runs: let the next failure try again.
		r.log.Warn("kill container", "container", name, "err", err)
		r.event("Warning", "FailedKillContainer", name, "cannot stop container %s: %v", name, err)
		c.life.stopping = false
	}
}

// stopContainer runs the preStop hook (unless grace is 0), then stops the
// container with what is left of grace. It is safe to call off the
// runner's goroutine. preErr is the hook's failure, if any; a container
// already gone is not an error.
func (r *runner) stopContainer(ctx context.Context, ip, name string, pre *api.Handler, grace time.Duration) (preErr, err error) {
	if pre != nil && grace > 0 {
		start := time.Now()
		hctx, cancel := context.WithTimeout(ctx, grace)
		preErr = r.hook(hctx, ip, name, handlerAction(pre))
		if preErr != nil && errors.Is(hctx.Err(), context.DeadlineExceeded) {
			preErr = fmt.Errorf("did not finish within the grace period (%s): %w", grace, preErr)
		}
		cancel()
		if errors.Is(preErr, sandbox.ErrNotRunning) || errors.Is(preErr, sandbox.ErrNotFound) {
			preErr = nil // the container ended by itself meanwhile
		}
		grace = max(grace-time.Since(start), 0)
	}
	err = r.a.rt.StopContainer(ctx, r.id, name, grace)
	if errors.Is(err, sandbox.ErrNotFound) || errors.Is(err, sandbox.ErrNotRunning) {
		err = nil
	}
	return preErr, err
}
