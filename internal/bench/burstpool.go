package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/skiffhq/skiff/api"
)

// ErrPoolSetup is the class of errors when the hosts' warm pool is not in
// the state a burst's --pool asks for.
var ErrPoolSetup = errors.New("warm pool not ready for this burst")

// preparePool brings the hosts' warm pool into the state cfg.Pool asks
// for, before the burst, and returns the reading to count hits from.
//
//   - "on": the hosts must hold a pool of the burst's shape class. The
//     bench does not size it (the pool's owner does: the agent's
//     --pool-size, or the control plane's plan); it waits, with progress,
//     until the pool has filled to its target or to the burst's size.
//   - "off": no prepared sandbox may be taken, so the hosts must hold
//     none (a create of one class takes another class's when its own is
//     empty). It waits for a pool that is draining (target 0) to empty.
//   - "": whatever the hosts have; hits are counted all the same.
func preparePool(ctx context.Context, h HostLister, cfg *BurstConfig, class string) (PoolSnapshot, error) {
	snap, err := ReadPool(ctx, h, class)
	if err != nil {
		return snap, fmt.Errorf("read the hosts' warm pool: %w", err)
	}
	wait := cfg.PoolWait
	if wait <= 0 {
		wait = 5 * time.Minute
	}
	deadline := time.Now().Add(wait)
	lastLog := time.Time{}
	switch cfg.Pool {
	case "on":
		if class == "" {
			return snap, fmt.Errorf("%w: --pool on: a group of %s vCPU and %s is larger than every shape class, so no pool serves it", ErrPoolSetup, cfg.CPU, cfg.Memory)
		}
		for {
			if !snap.Reported {
				return snap, fmt.Errorf("%w: --pool on: no host reports a warm pool (GET /v1/hosts has no pool): this skiff, or its sandbox runtime, has none", ErrPoolSetup)
			}
			if snap.ClassTarget == 0 {
				return snap, fmt.Errorf("%w: --pool on: no host has a warm-pool target for class %s; start the agent (or skiff up) with --pool-size %s=%d", ErrPoolSetup, class, class, cfg.Count)
			}
			want := min(snap.ClassTarget, cfg.Count)
			if snap.ClassSize >= want {
				if snap.ClassTarget < cfg.Count {
					cfg.logf("warm pool: target %d of class %s is below the burst's %d groups: at most %d can hit", snap.ClassTarget, class, cfg.Count, snap.ClassTarget)
				}
				cfg.logf("warm pool: %d prepared sandboxes of class %s (target %d)", snap.ClassSize, class, snap.ClassTarget)
				return snap, nil
			}
			if time.Since(lastLog) > 2*time.Second {
				cfg.logf("warm pool filling: %d of %d prepared sandboxes of class %s", snap.ClassSize, want, class)
				lastLog = time.Now()
			}
			if time.Now().After(deadline) {
				return snap, fmt.Errorf("%w: --pool on: the pool of class %s holds %d of %d after %s", ErrPoolSetup, class, snap.ClassSize, want, wait)
			}
			if snap, err = sleepRead(ctx, h, class); err != nil {
				return snap, err
			}
		}
	case "off":
		for snap.Size > 0 {
			if snap.Target > 0 {
				return snap, fmt.Errorf("%w: --pool off: the hosts hold %d prepared sandboxes (target %d) that the creates would take; restart skiff without --pool-size and with --pool-max-per-host 0 (no forecast targets) for a cold burst", ErrPoolSetup, snap.Size, snap.Target)
			}
			if time.Since(lastLog) > 2*time.Second {
				cfg.logf("warm pool draining: %d prepared sandboxes left", snap.Size)
				lastLog = time.Now()
			}
			if time.Now().After(deadline) {
				return snap, fmt.Errorf("%w: --pool off: %d prepared sandboxes still there after %s", ErrPoolSetup, snap.Size, wait)
			}
			if snap, err = sleepRead(ctx, h, class); err != nil {
				return snap, err
			}
		}
	}
	return snap, nil
}

func sleepRead(ctx context.Context, h HostLister, class string) (PoolSnapshot, error) {
	select {
	case <-ctx.Done():
		return PoolSnapshot{}, ctx.Err()
	case <-time.After(500 * time.Millisecond):
	}
	return ReadPool(ctx, h, class)
}

// countPoolHits waits for the hosts to report the burst's creates (their
// pool reports come every couple of seconds) and returns the hits and
// misses since before. It gives up waiting after a few report periods and
// returns what it has.
func countPoolHits(ctx context.Context, h HostLister, before PoolSnapshot, class string, creates int, since time.Time) (hits, misses int64, err error) {
	if !before.Reported {
		return 0, 0, nil
	}
	deadline := time.Now().Add(8 * time.Second)
	for {
		snap, err := ReadPool(ctx, h, class)
		if err != nil {
			return 0, 0, err
		}
		hits, misses = snap.ClassHits-before.ClassHits, snap.ClassMisses-before.ClassMisses
		fresh := snap.OldestReport.After(since)
		if (fresh && hits+misses >= int64(creates)) || time.Now().After(deadline) {
			return max(hits, 0), max(misses, 0), nil
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// burstClass is the shape class of the burst's groups ("" for none).
func burstClass(cfg BurstConfig) string {
	spec := api.GroupSpec{CPU: cfg.CPU, Memory: cfg.Memory, Containers: []api.Container{{Name: "c", Image: cfg.Image}}}
	return api.ShapeClassOf(spec.Requests())
}
