package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/image"
)

// Image pull policies (Kubernetes'). The default is IfNotPresent for every
// tag, :latest included: images imported with `skiff image import` and
// images kept by an image cache must start without a registry.
const (
	PullAlways       = "Always"
	PullIfNotPresent = "IfNotPresent"
	PullNever        = "Never"
)

// errPullBackOff tells create to try again later: a pull failed or is
// backing off.
var errPullBackOff = errors.New("image pull backing off")

// pulls is the agent's bookkeeping of image pulls: back-off per group and
// image after failures, and which images each group on the host uses
// (never pruned while it runs).
type pulls struct {
	mu      sync.Mutex
	backoff map[string]*pullBackoff // group id + "\x00" + image ->
	digests map[string]map[string]bool
	refs    map[string][]string // group id -> image refs of its spec
}

type pullBackoff struct {
	until    time.Time
	delay    time.Duration
	failures int
	reason   string
	msg      string
	told     time.Time // when a BackOff event was last emitted
}

func newPulls() *pulls {
	return &pulls{backoff: map[string]*pullBackoff{}, digests: map[string]map[string]bool{}, refs: map[string][]string{}}
}

// noteGroup records the images a group's spec names (for GC).
func (p *pulls) noteGroup(g *api.Group) {
	var refs []string
	for _, c := range append(append([]api.Container{}, g.Spec.InitContainers...), g.Spec.Containers...) {
		refs = append(refs, c.Image)
	}
	p.mu.Lock()
	p.refs[g.ID] = refs
	p.mu.Unlock()
}

// use records that a group runs on the image with this digest.
func (p *pulls) use(groupID, digest string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.digests[groupID] == nil {
		p.digests[groupID] = map[string]bool{}
	}
	p.digests[groupID][digest] = true
}

// release forgets a group that left the host.
func (p *pulls) release(groupID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.digests, groupID)
	delete(p.refs, groupID)
	for k := range p.backoff {
		if strings.HasPrefix(k, groupID+"\x00") {
			delete(p.backoff, k)
		}
	}
}

// inUse returns the digests and refs of every group on the host.
func (p *pulls) inUse() (digests map[string]bool, refs []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	digests = map[string]bool{}
	for _, ds := range p.digests {
		for d := range ds {
			digests[d] = true
		}
	}
	for _, rs := range p.refs {
		refs = append(refs, rs...)
	}
	return digests, refs
}

func (p *pulls) waiting(key string) *pullBackoff {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b := p.backoff[key]; b != nil && time.Now().Before(b.until) {
		cp := *b
		return &cp
	}
	return nil
}

func (p *pulls) failed(key, reason, msg string, base, maxDelay time.Duration) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.backoff[key]
	if b == nil {
		b = &pullBackoff{delay: base}
		p.backoff[key] = b
	} else {
		b.delay = min(b.delay*2, maxDelay)
	}
	b.failures++
	b.reason, b.msg = reason, msg
	b.until = time.Now().Add(b.delay)
	return b.delay
}

func (p *pulls) markTold(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.backoff[key]
	if b == nil || b.told.After(b.until.Add(-b.delay)) {
		return false
	}
	b.told = time.Now()
	return true
}

func (p *pulls) succeeded(key string) {
	p.mu.Lock()
	delete(p.backoff, key)
	p.mu.Unlock()
}

// pullOptions carries a group's registry access into a pull.
func pullOptions(s *api.GroupSpec) image.PullOptions {
	return accessOptions(s.ImageRegistryCredentials, s.InsecureRegistries, s.PlainHTTPRegistries)
}

func accessOptions(creds []api.ImageRegistryCredential, insecure, plain []string) image.PullOptions {
	o := image.PullOptions{Insecure: insecure, PlainHTTP: plain}
	for _, c := range creds {
		o.Credentials = append(o.Credentials, image.Credential{Server: c.Server, Username: c.UserName, Password: c.Password})
	}
	return o
}

// ensureImage makes c's image available on the host as its pull policy
// says, pulling it when needed, and resolves it. It returns
// errPullBackOff when the runner should come back later, and another
// error when the group cannot start at all.
func (r *runner) ensureImage(ctx context.Context, c *ctr) (*image.Resolved, error) {
	ref := c.spec.Image
	policy := c.spec.ImagePullPolicy
	if policy == "" {
		policy = PullIfNotPresent
	}
	if policy != PullAlways {
		res, err := r.a.images.Resolve(ctx, ref)
		switch {
		case err == nil:
			r.a.pulls.use(r.id, res.Digest)
			r.event("Normal", "Pulled", c.spec.Name, "Container image %q already present on host (%s)", ref, shortDigest(res.Digest))
			return res, nil
		case !errors.Is(err, image.ErrNotFound):
			return nil, fmt.Errorf("%w: %v", image.ErrInvalid, err)
		case policy == PullNever:
			return nil, err
		}
	}
	key := r.id + "\x00" + ref
	if b := r.a.pulls.waiting(key); b != nil {
		r.setWaiting("ImagePullBackOff", fmt.Sprintf("Back-off pulling image %q: %s: %s", ref, b.reason, b.msg))
		if r.a.pulls.markTold(key) {
			r.event("Normal", "BackOff", c.spec.Name, "Back-off pulling image %q (retry in %s)", ref, time.Until(b.until).Round(time.Second))
		}
		return nil, errPullBackOff
	}

	r.setWaiting("ContainerCreating", "")
	r.event("Normal", "Pulling", c.spec.Name, "Pulling image %q", ref)
	r.publish() // a pull can take a while: say so now
	pctx, done := r.pullContext(ctx)
	res, err := r.a.images.Pull(pctx, ref, pullOptions(&r.g.Spec))
	done()
	if err != nil {
		if pctx.Err() != nil && ctx.Err() == nil && errors.Is(err, context.Canceled) {
			return nil, errPullBackOff // the group is going away
		}
		reason := image.PullReason(err)
		msg := errdefs.Message(err)
		if !isUserError(err) {
			msg = err.Error()
		}
		delay := r.a.pulls.failed(key, reason, msg, r.a.cfg.BackoffBase*5, r.a.cfg.BackoffMax*5)
		r.log.Warn("image pull failed", "image", ref, "reason", reason, "err", err, "retryIn", delay)
		r.setWaiting("ErrImagePull", fmt.Sprintf("%s: %s", reason, msg))
		r.event("Warning", "Failed", c.spec.Name, "Failed to pull image %q: %s (%s); retrying in %s", ref, msg, reason, delay.Round(time.Millisecond))
		return nil, errPullBackOff
	}
	r.a.pulls.succeeded(key)
	r.event("Normal", "Pulled", c.spec.Name, "Successfully pulled image %q in %s (%s fetched, %d of %d layers). Image size: %d bytes.",
		ref, res.Duration.Round(time.Millisecond), humanBytes(res.Fetched), res.LayersFetched, res.Layers, res.Image.Size)
	resolved, err := r.a.images.Resolve(ctx, res.Digest)
	if err != nil {
		return nil, err
	}
	r.a.pulls.use(r.id, resolved.Digest)
	return resolved, nil
}

func isUserError(err error) bool {
	var u *errdefs.User
	return errors.As(err, &u)
}

// setWaiting shows why the group's containers have not started.
func (r *runner) setWaiting(reason, msg string) {
	for _, c := range append(append([]*ctr{}, r.inits...), r.ctrs...) {
		if c.everRan || c.done {
			continue
		}
		c.st.State = api.ContainerWaiting
		c.st.Reason, c.st.Message = reason, msg
	}
}

// pullContext is cancelled when the group is removed or deleted, or the
// agent stops, while the run loop waits on a pull. Updates that arrive
// meanwhile go back to the run loop.
func (r *runner) pullContext(ctx context.Context) (context.Context, func()) {
	pctx, cancel := context.WithCancel(ctx)
	stop := make(chan struct{})
	exited := make(chan struct{})
	var latest *api.Group
	go func() {
		defer close(exited)
		for {
			select {
			case <-stop:
				return
			case <-r.removed:
				cancel()
				return
			case <-r.detached:
				cancel()
				return
			case g := <-r.updates:
				latest = g
				if g.Deleting {
					cancel()
				}
			}
		}
	}()
	return pctx, func() {
		close(stop)
		<-exited
		cancel()
		if latest != nil {
			select {
			case r.updates <- latest: // unless a newer one came in since
			default:
			}
		}
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// servePull pulls an image on this host for `skiff image pull` and image
// caches, streaming api.PullProgress lines (NDJSON) as it goes; the last
// line is "complete" or "error".
func (a *Agent) servePull(w http.ResponseWriter, r *http.Request) error {
	var req api.PullImageRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return errdefs.Invalid("malformed pull request: " + err.Error())
	}
	if err := api.ValidateImageRef(req.Image); err != nil {
		return errdefs.Invalid(err.Error())
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	send := func(p api.PullProgress) {
		mu.Lock()
		defer mu.Unlock()
		p.HostID = a.id.HostID
		if enc.Encode(p) == nil && fl != nil {
			fl.Flush()
		}
	}
	opts := accessOptions(req.Credentials, req.InsecureRegistries, req.PlainHTTPRegistries)
	opts.Progress = func(p image.Progress) { send(progressLine(p)) }
	res, err := a.images.Pull(r.Context(), req.Image, opts)
	if err != nil {
		a.log.Warn("image pull failed", "image", req.Image, "err", err)
		send(api.PullProgress{Status: "error", Error: pullMessage(err), Reason: image.PullReason(err)})
		return nil
	}
	a.log.Info("pulled image", "image", res.Ref, "digest", res.Digest, "fetched", res.Fetched, "took", res.Duration)
	im := res.Image
	send(api.PullProgress{Status: "complete", Digest: res.Digest, Image: &im, Fetched: res.Fetched, Seconds: res.Duration.Seconds()})
	return nil
}

// pullMessage is what a user reads about a failed pull.
func pullMessage(err error) string {
	if isUserError(err) {
		return errdefs.Message(err)
	}
	return err.Error()
}

func progressLine(p image.Progress) api.PullProgress {
	out := api.PullProgress{Layer: p.Layer, Current: p.Done, Total: p.Total}
	switch p.Phase {
	case image.PhaseResolved:
		out.Status, out.Digest, out.Layer = "resolved", p.Layer, ""
	case image.PhaseWaiting:
		out.Status = "waiting"
	case image.PhaseExists:
		out.Status = "exists"
	case image.PhaseUnpacking:
		out.Status = "downloading"
	case image.PhaseDone:
		out.Status = "done"
	default:
		out.Status = string(p.Phase)
	}
	return out
}

// pullStatus is the group's reason while its images cannot be pulled.
func (r *runner) pullStatus() (reason, msg string) {
	if r.created {
		return "", ""
	}
	for _, c := range append(append([]*ctr{}, r.inits...), r.ctrs...) {
		if c.st.Reason == "ErrImagePull" || c.st.Reason == "ImagePullBackOff" {
			return c.st.Reason, c.st.Message
		}
	}
	return "", ""
}
