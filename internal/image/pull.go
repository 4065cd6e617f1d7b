package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
)

// Pull phases, beside the import phases.
const (
	// PhaseResolved: the manifest is known; Layer is the manifest digest,
	// Total the compressed size of all layers.
	PhaseResolved Phase = "resolved"
	// PhaseWaiting: Layer (Total bytes) is to be fetched.
	PhaseWaiting Phase = "waiting"
	// PhaseExists: Layer is already unpacked on this host.
	PhaseExists Phase = "exists"
)

// Credential logs in to one registry.
type Credential struct {
	Server, Username, Password string
}

// PullOptions are one pull's own settings.
type PullOptions struct {
	// Credentials: the one whose Server matches the image's registry is used.
	Credentials []Credential
	// Insecure and PlainHTTP add to the store's RegistryConfig.Insecure
	// for this pull: registries whose certificate is not checked, and
	// registries spoken to over plain HTTP.
	Insecure, PlainHTTP []string
	// Progress, when set, is called (never concurrently) as the pull goes.
	Progress func(Progress)
}

// PullResult says what a pull did.
type PullResult struct {
	Image  api.Image
	Ref    string // normalized reference
	Digest string // manifest digest
	// Fetched is the bytes received from the registry; Requests the HTTP
	// requests made. A pull that joined another's reports that one's.
	Fetched  int64
	Requests int64
	// Layers is the number of layers; LayersFetched those downloaded.
	Layers, LayersFetched int
	// Cached: the image was complete on the host; only its manifest was
	// fetched.
	Cached   bool
	Duration time.Duration
}

// Pull fetches ref from its registry (a tag or a digest; a multi-platform
// index resolves to the store's platform) and stores it under ref.
// Layers already on the host are not fetched again. Concurrent pulls of
// one image share one download: by reference before the manifest is
// known, by manifest digest after. A pull whose context ends leaves the
// shared download running for the others.
func (s *Store) Pull(ctx context.Context, ref string, o PullOptions) (PullResult, error) {
	canon, err := NormalizeRef(ref)
	if err != nil {
		return PullResult{}, err
	}
	key := "ref:" + canon + "|" + o.accessKey()
	return s.flights.join(ctx, key, o.Progress, func(fctx context.Context, progress func(Progress)) (PullResult, error) {
		return s.pullWithRetries(fctx, canon, o, progress)
	})
}

// accessKey tells pulls with different access apart: they must not share
// a flight (one may be refused where another is let in).
func (o PullOptions) accessKey() string {
	h := sha256.New()
	for _, c := range o.Credentials {
		fmt.Fprintf(h, "%q %q %q\n", c.Server, c.Username, c.Password)
	}
	fmt.Fprintf(h, "%q %q", o.Insecure, o.PlainHTTP)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func (s *Store) pullWithRetries(ctx context.Context, canon string, o PullOptions, progress func(Progress)) (PullResult, error) {
	cfg := s.opts.registry
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	start := time.Now()
	wait := cfg.RetryBackoff
	var total PullResult
	for attempt := 0; ; attempt++ {
		res, err := s.pullOnce(ctx, canon, o, progress)
		total.Fetched += res.Fetched
		total.Requests += res.Requests
		if err == nil {
			res.Fetched, res.Requests = total.Fetched, total.Requests
			res.Duration = time.Since(start)
			return res, nil
		}
		if !retriable(err) || attempt >= cfg.Retries || ctx.Err() != nil {
			if ctx.Err() != nil && !errors.Is(err, context.Canceled) {
				err = classify(ctx.Err(), canon, registryOf(canon), "the image")
			}
			total.Duration = time.Since(start)
			return total, err
		}
		s.opts.log.Warn("pull failed; retrying", "image", canon, "attempt", attempt+1, "in", wait, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait *= 2
	}
}

func registryOf(canon string) string {
	r, _, _ := strings.Cut(canon, "/")
	return r
}

// pullOnce is one attempt: resolve the manifest, then fetch what is missing.
func (s *Store) pullOnce(ctx context.Context, canon string, o PullOptions, progress func(Progress)) (res PullResult, err error) {
	cfg := s.opts.registry
	plain := newHostSet(cfg.Insecure, o.PlainHTTP)
	rt := &registryRT{t: s.transports, insecure: newHostSet(cfg.Insecure, o.Insecure), plain: plain, stall: cfg.StallTimeout}
	defer func() { res.Fetched, res.Requests = rt.fetched.Load(), rt.requests.Load() }()

	var nopts []name.Option
	reg := registryOf(canon)
	if plain.has(reg) {
		nopts = append(nopts, name.Insecure)
	}
	nref, err := name.ParseReference(canon, nopts...)
	if err != nil {
		return res, fmt.Errorf("%w: bad image reference %q", ErrInvalid, canon)
	}
	ropts := []remote.Option{
		remote.WithContext(ctx), remote.WithTransport(rt), remote.WithPlatform(s.opts.platform),
		remote.WithUserAgent(cfg.UserAgent), remote.WithAuth(pickAuth(o.Credentials, nref.Context().Registry)),
		// Retries are ours (whole attempts, with our back-off), not per request.
		remote.WithRetryPredicate(func(error) bool { return false }),
		remote.WithRetryBackoff(remote.Backoff{Duration: time.Millisecond, Factor: 1, Steps: 1}),
		remote.WithRetryStatusCodes(),
	}
	desc, err := remote.Get(nref, ropts...)
	if err != nil {
		return res, classify(err, canon, reg, stageManifest)
	}
	img, err := desc.Image() // an index resolves to our platform here
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return res, err
		}
		if strings.Contains(err.Error(), "no child with platform") {
			return res, &pullError{class: errdefs.ErrNotFound, reason: "ImageNotFound",
				msg: fmt.Sprintf("image %s has no variant for platform %s", canon, platformString(s.opts.platform))}
		}
		return res, classify(err, canon, reg, stageManifest)
	}
	dg, err := img.Digest()
	if err != nil {
		return res, classify(err, canon, reg, stageManifest)
	}
	digest := dg.String()
	if d, ok := nref.(name.Digest); ok && desc.MediaType.IsImage() && d.DigestStr() != digest {
		return res, fmt.Errorf("%w: registry %s sent manifest %s for %s", ErrCorrupt, reg, digest, canon)
	}
	names := []string{canon}
	if strings.Contains(canon, "@") {
		names = nil // a digest ref is found by digest; no tag to write
	}
	res.Ref, res.Digest = canon, digest

	// The same image under another name joins by digest.
	inner, err := s.flights.join(ctx, "digest:"+digest, progress, func(fctx context.Context, progress func(Progress)) (PullResult, error) {
		return s.fetchImage(fctx, img, digest, canon, reg, progress)
	})
	if err != nil {
		return res, err
	}
	if err := s.tagDigest(digest, names); err != nil {
		return res, err
	}
	res.Image, res.Layers, res.LayersFetched, res.Cached = inner.Image, inner.Layers, inner.LayersFetched, inner.Cached
	if len(names) > 0 {
		res.Image.Ref = canon
	}
	return res, nil
}

func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// fetchImage stores img unless it is complete here already.
func (s *Store) fetchImage(ctx context.Context, img v1.Image, digest, canon, reg string, progress func(Progress)) (PullResult, error) {
	res := PullResult{Digest: digest}
	if im, ok := s.completeImage(digest); ok {
		res.Image, res.Layers, res.Cached = im, im.Layers, true
		progress(Progress{Layer: digest, Phase: PhaseResolved})
		return res, nil
	}
	m, err := img.Manifest()
	if err != nil {
		return res, classify(err, canon, reg, stageManifest)
	}
	var total int64
	for _, l := range m.Layers {
		total += l.Size
	}
	res.Layers = len(m.Layers)
	progress(Progress{Layer: digest, Phase: PhaseResolved, Total: total})
	cf, err := img.ConfigFile()
	if err != nil {
		return res, classify(err, canon, reg, stageConfig)
	}
	for i, l := range m.Layers {
		if i < len(cf.RootFS.DiffIDs) && s.haveSnapshot(cf.RootFS.DiffIDs[i].String()) {
			progress(Progress{Layer: l.Digest.String(), Phase: PhaseExists, Done: l.Size, Total: l.Size})
			continue
		}
		res.LayersFetched++
		progress(Progress{Layer: l.Digest.String(), Phase: PhaseWaiting, Total: l.Size})
	}
	a, err := s.Put(ctx, img, nil, progress)
	if err != nil {
		return res, classify(err, canon, reg, stageLayer)
	}
	res.Image = a
	return res, nil
}

// completeImage reports whether the image with this manifest digest is
// stored with every snapshot.
func (s *Store) completeImage(digest string) (api.Image, bool) {
	s.mu.RLock()
	rec := s.meta.Images[digest]
	var out api.Image
	if rec != nil {
		out = s.apiImageLocked(rec, "")
	}
	s.mu.RUnlock()
	if rec == nil {
		return out, false
	}
	for _, l := range rec.Layers {
		if !s.haveSnapshot(l.DiffID) {
			return out, false
		}
	}
	return out, true
}

// tagDigest points names (normalized) at a stored image.
func (s *Store) tagDigest(digest string, names []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.meta.Images[digest]
	if rec == nil {
		return fmt.Errorf("%w: image %s vanished while being tagged", ErrNotFound, digest)
	}
	rec.LastUsed = time.Now().UTC()
	changed := false
	for _, n := range names {
		if s.meta.Tags[n] != digest {
			s.meta.Tags[n] = digest
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return s.persistLocked()
}

// pickAuth finds the credential for registry reg.
func pickAuth(creds []Credential, reg name.Registry) authn.Authenticator {
	want := canonicalRegistry(reg.RegistryStr())
	for _, c := range creds {
		if canonicalRegistry(c.Server) == want {
			return authn.FromConfig(authn.AuthConfig{Username: c.Username, Password: c.Password})
		}
	}
	return authn.Anonymous
}

func canonicalRegistry(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	s, _, _ = strings.Cut(s, "/")
	switch s {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return name.DefaultRegistry
	}
	return s
}

// flights deduplicates concurrent work by key. Every caller gets the
// progress of the shared work from when it joined (plus the last state of
// each layer before that), and the shared work stops only when every
// caller has gone.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done    chan struct{}
	res     PullResult
	err     error
	cancel  context.CancelFunc
	waiters int

	mu     sync.Mutex
	subs   map[int]func(Progress)
	nextID int
	last   map[string]Progress // per layer, for late joiners
	order  []string
}

func (f *flight) publish(p Progress) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.last[p.Layer]; !ok {
		f.order = append(f.order, p.Layer)
	}
	f.last[p.Layer] = p
	for _, fn := range f.subs {
		fn(p)
	}
}

func (f *flight) subscribe(fn func(Progress)) (unsubscribe func()) {
	if fn == nil {
		return func() {}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.order {
		fn(f.last[l])
	}
	id := f.nextID
	f.nextID++
	f.subs[id] = fn
	return func() {
		f.mu.Lock()
		delete(f.subs, id)
		f.mu.Unlock()
	}
}

func (fs *flights) join(ctx context.Context, key string, progress func(Progress), work func(context.Context, func(Progress)) (PullResult, error)) (PullResult, error) {
	fs.mu.Lock()
	if fs.m == nil {
		fs.m = map[string]*flight{}
	}
	f := fs.m[key]
	if f == nil {
		// The work outlives any one caller: it is cancelled when the last
		// one leaves, not when the first one does.
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{done: make(chan struct{}), cancel: cancel, subs: map[int]func(Progress){}, last: map[string]Progress{}}
		fs.m[key] = f
		go func() {
			defer cancel()
			f.res, f.err = work(wctx, f.publish)
			fs.mu.Lock()
			delete(fs.m, key)
			fs.mu.Unlock()
			close(f.done)
		}()
	}
	f.waiters++
	fs.mu.Unlock()
	unsub := f.subscribe(progress)
	defer unsub()
	select {
	case <-f.done:
		fs.mu.Lock()
		f.waiters--
		fs.mu.Unlock()
		return f.res, f.err
	case <-ctx.Done():
		fs.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			f.cancel()
		}
		fs.mu.Unlock()
		return PullResult{}, ctx.Err()
	}
}
