package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
)

// testRestartPolicies: exit codes against Never, OnFailure and Always, and a
// command that cannot run.
func testRestartPolicies(t *testing.T, cl *cluster) {
	labels := cl.labelsFor(t, "restart")
	mk := func(name string, policy api.RestartPolicy, argv ...string) *api.Group {
		s := busybox(argv...)
		s.RestartPolicy = policy
		return cl.create(t, name, s, labels)
	}
	failNever := mk("exit3-never", api.RestartNever, "sh", "-c", "exit 3")
	failOnFailure := mk("exit3-onfailure", api.RestartOnFailure, "sh", "-c", "exit 3")
	okNever := mk("exit0-never", api.RestartNever, "sh", "-c", "exit 0")
	okOnFailure := mk("exit0-onfailure", api.RestartOnFailure, "sh", "-c", "exit 0")
	missingNever := mk("missing-never", api.RestartNever, "/no/such/binary")
	missingAlways := mk("missing-always", api.RestartAlways, "/no/such/binary")

	t.Run("NeverFailed", func(t *testing.T) {
		g := cl.waitStatus(t, nil, failNever.ID, api.StatusFailed, 60*time.Second)
		c := firstContainer(t, g)
		if c.ExitCode == nil || *c.ExitCode != 3 || c.State != api.ContainerTerminated {
			t.Errorf("container %+v: want Terminated with exit code 3", c)
		}
		if c.RestartCount != 0 {
			t.Errorf("Never restarted %d times", c.RestartCount)
		}
		if g.FinishedAt == nil {
			t.Errorf("Failed group without finishedAt: %s", describe(g))
		}
	})
	t.Run("OnFailureRestarts", func(t *testing.T) {
		g := cl.waitFor(t, failOnFailure.ID, "restartCount >= 2", 60*time.Second, func(g *api.Group) bool {
			return len(g.Containers) > 0 && g.Containers[0].RestartCount >= 2
		})
		if g.Status.Terminal() {
			t.Errorf("OnFailure group ended: %s", describe(g))
		}
		c := firstContainer(t, g)
		last := c.LastState
		if c.ExitCode != nil && *c.ExitCode == 3 {
			last = &c
		}
		if last == nil || last.ExitCode == nil || *last.ExitCode != 3 {
			t.Errorf("OnFailure container: the last exit code (3) is not kept: %+v", c)
		}
		evs, err := cl.c.Events(ctxT(t, 10*time.Second), failOnFailure.ID)
		if err != nil {
			t.Fatal(err)
		}
		var reasons []string
		for _, e := range evs {
			reasons = append(reasons, e.Reason)
		}
		if !containsAll(reasons, "BackOff") {
			t.Logf("events of a crash-looping group: %v (no BackOff)", reasons)
		}
	})
	t.Run("NeverSucceeded", func(t *testing.T) {
		for _, id := range []string{okNever.ID, okOnFailure.ID} {
			g := cl.waitStatus(t, nil, id, api.StatusSucceeded, 60*time.Second)
			c := firstContainer(t, g)
			if c.ExitCode == nil || *c.ExitCode != 0 || c.RestartCount != 0 {
				t.Errorf("%s: container %+v: want exit 0 and no restart", g.Name, c)
			}
		}
	})
	t.Run("MissingBinary", func(t *testing.T) {
		g := cl.waitStatus(t, nil, missingNever.ID, api.StatusFailed, 60*time.Second)
		c := firstContainer(t, g)
		if c.Reason != "ContainerCannotRun" && g.Reason != "ContainerCannotRun" {
			t.Errorf("missing binary, Never: want reason ContainerCannotRun: %s", describe(g))
		}
		if !strings.Contains(c.Message+g.Message, "/no/such/binary") {
			t.Errorf("missing binary: the message does not name it: %s", describe(g))
		}
		// With Always it keeps trying, but says why instead of sitting in
		// Pending/ContainerCreating.
		g = cl.waitFor(t, missingAlways.ID, "reason ContainerCannotRun or CrashLoopBackOff", 60*time.Second, func(g *api.Group) bool {
			return g.Reason == "ContainerCannotRun" || g.Reason == "CrashLoopBackOff"
		})
		c = firstContainer(t, g)
		msg := g.Message + c.Message
		if c.LastState != nil {
			msg += c.LastState.Message
		}
		if !strings.Contains(msg, "/no/such/binary") {
			t.Errorf("missing binary, Always: the message does not name it: %s", describe(g))
		}
	})
}
