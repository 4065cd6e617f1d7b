package image

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/skiffhq/skiff/internal/errdefs"
)

// RegistryConfig is how a host talks to registries.
type RegistryConfig struct {
	// Insecure lists registries (HOST or HOST:PORT) reached over plain HTTP
	// or TLS without certificate checks, like Docker's insecure-registries.
	// Every other registry must present a certificate that verifies.
	Insecure []string
	// RootCAs verifies registry certificates (default: the system pool).
	RootCAs *x509.CertPool
	// Timeout bounds one whole pull, retries included (default 30 min).
	Timeout time.Duration
	// StallTimeout fails a request that waits this long for response
	// headers or for the next bytes of a body (default 60 s).
	StallTimeout time.Duration
	// Retries is how many times a pull that failed for a passing reason
	// (network, 5xx, 429, a stall) is tried again (default 3; -1: none),
	// waiting RetryBackoff, then twice as long each time (default 1 s).
	Retries      int
	RetryBackoff time.Duration
	// UserAgent is sent to registries (default "skiff").
	UserAgent string
}

func (c RegistryConfig) withDefaults() RegistryConfig {
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Minute
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = 60 * time.Second
	}
	if c.Retries == 0 {
		c.Retries = 3
	}
	if c.Retries < 0 {
		c.Retries = 0
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = time.Second
	}
	if c.UserAgent == "" {
		c.UserAgent = "skiff"
	}
	return c
}

// WithRegistry sets how the store's pulls reach registries.
func WithRegistry(c RegistryConfig) Option { return func(o *options) { o.registry = c } }

// transports are the store's connection pools: one that verifies TLS and
// one that does not, so that a connection made without checks is never
// reused by a pull that wants them.
type transports struct {
	secure, insecure *http.Transport
}

func newTransports(c RegistryConfig) *transports {
	mk := func(skip bool) *http.Transport {
		return &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:       &tls.Config{RootCAs: c.RootCAs, InsecureSkipVerify: skip, MinVersion: tls.VersionTLS12}, //nolint:gosec // only for registries configured insecure
			TLSHandshakeTimeout:   min(10*time.Second, c.StallTimeout),
			ResponseHeaderTimeout: c.StallTimeout,
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		}
	}
	return &transports{secure: mk(false), insecure: mk(true)}
}

// hostSet matches registry hosts: an entry with a port matches that
// host:port, one without matches the host on any port.
type hostSet map[string]bool

func newHostSet(lists ...[]string) hostSet {
	s := hostSet{}
	for _, l := range lists {
		for _, h := range l {
			h = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(h), "https://"), "http://"), "/"))
			if h != "" {
				s[h] = true
			}
		}
	}
	return s
}

func (s hostSet) has(hostport string) bool {
	hostport = strings.ToLower(hostport)
	if s[hostport] {
		return true
	}
	if h, _, err := net.SplitHostPort(hostport); err == nil && s[h] {
		return true
	}
	return false
}

// registryRT is one pull's view of the transports: it picks the pool by
// the pull's insecure list, refuses plain HTTP to registries not allowed
// it, watches bodies for stalls and counts the bytes that came in.
type registryRT struct {
	t        *transports
	insecure hostSet // TLS without verification
	plain    hostSet // plain HTTP
	stall    time.Duration
	fetched  atomic.Int64
	requests atomic.Int64
}

func (r *registryRT) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Host
	if req.URL.Scheme == "http" && !r.plain.has(host) {
		return nil, &pullError{class: errdefs.ErrUnavailable, reason: "RegistryInsecure",
			msg: fmt.Sprintf("registry %s answers only over plain HTTP (or not at all over HTTPS); allow it with the agent's --insecure-registry %s or the group's plainHttpRegistries", host, host)}
	}
	tr := r.t.secure
	if r.insecure.has(host) || r.plain.has(host) {
		tr = r.t.insecure
	}
	r.requests.Add(1)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = newStallBody(resp.Body, r.stall, &r.fetched)
	return resp, nil
}

// errStalled says a registry stopped sending.
var errStalled = errors.New("registry stopped sending data")

// stallBody closes the body when one Read waits longer than d, so that a
// registry that hangs mid-stream fails the pull instead of holding it.
type stallBody struct {
	rc      io.ReadCloser
	d       time.Duration
	timer   *time.Timer
	stalled atomic.Bool
	count   *atomic.Int64
}

func newStallBody(rc io.ReadCloser, d time.Duration, count *atomic.Int64) *stallBody {
	b := &stallBody{rc: rc, d: d, count: count}
	b.timer = time.AfterFunc(time.Hour, func() {
		b.stalled.Store(true)
		rc.Close()
	})
	b.timer.Stop()
	return b
}

func (b *stallBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.d)
	n, err := b.rc.Read(p)
	b.timer.Stop()
	b.count.Add(int64(n))
	if err != nil && err != io.EOF && b.stalled.Load() {
		return n, fmt.Errorf("%w for %s", errStalled, b.d)
	}
	return n, err
}

func (b *stallBody) Close() error {
	b.timer.Stop()
	return b.rc.Close()
}

// pullError is a pull failure with its class (for the API's status code),
// a short reason (for events) and whether trying again may help.
type pullError struct {
	class     error
	reason    string
	msg       string
	retriable bool
}

func (e *pullError) Error() string { return e.msg }
func (e *pullError) Unwrap() error { return e.class }

// PullReason returns a one-word reason for a pull error, for events and
// statuses: ImageNotFound, RegistryUnauthorized, RegistryUnavailable,
// RegistryInsecure, PullTimeout, InvalidImage, CorruptImage, NoSpace or
// ErrImagePull.
func PullReason(err error) string {
	var pe *pullError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &pe) && pe.reason != "":
		return pe.reason
	case errors.Is(err, syscall.ENOSPC):
		return "NoSpace"
	case errors.Is(err, ErrCorrupt):
		return "CorruptImage"
	case errors.Is(err, ErrInvalid):
		return "InvalidImage"
	case errors.Is(err, errdefs.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return "PullTimeout"
	case errors.Is(err, ErrNotFound):
		return "ImageNotFound"
	}
	return "ErrImagePull"
}

// retriable says whether trying the pull again may succeed.
func retriable(err error) bool {
	var pe *pullError
	if errors.As(err, &pe) {
		return pe.retriable
	}
	return false
}

// Stages of a pull, for messages.
const (
	stageManifest = "the manifest"
	stageConfig   = "the image config"
	stageLayer    = "a layer"
)

// classify turns what go-containerregistry and the network return into a
// pullError. ref is the image, for messages; it never holds credentials.
func classify(err error, ref, registry string, stage string) error {
	if err == nil {
		return nil
	}
	var pe *pullError
	if errors.As(err, &pe) {
		return pe
	}
	if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrInvalid) || errors.Is(err, ErrNotFound) {
		return err // the store's own verdicts, already clear
	}
	if errors.Is(err, syscall.ENOSPC) {
		return &pullError{class: errdefs.ErrUnavailable, reason: "NoSpace", msg: fmt.Sprintf("pull %s: no space left on the host's image store: %v", ref, err)}
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		codes := map[transport.ErrorCode]bool{}
		for _, d := range terr.Errors {
			codes[d.Code] = true
		}
		switch {
		case terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden || codes[transport.UnauthorizedErrorCode] || codes[transport.DeniedErrorCode]:
			return &pullError{class: errdefs.ErrUnauthorized, reason: "RegistryUnauthorized",
				msg: fmt.Sprintf("registry %s refused access to %s (HTTP %d): check imageRegistryCredentials for %s", registry, ref, terr.StatusCode, registry)}
		case terr.StatusCode == http.StatusNotFound || codes[transport.ManifestUnknownErrorCode] || codes[transport.NameUnknownErrorCode] || codes[transport.BlobUnknownErrorCode]:
			return &pullError{class: errdefs.ErrNotFound, reason: "ImageNotFound",
				msg: fmt.Sprintf("image %s not found in registry %s (%s)", ref, registry, stage)}
		case terr.StatusCode == http.StatusTooManyRequests || terr.StatusCode >= 500 || terr.StatusCode == http.StatusRequestTimeout:
			return &pullError{class: errdefs.ErrUnavailable, reason: "RegistryUnavailable", retriable: true,
				msg: fmt.Sprintf("registry %s failed while fetching %s of %s: HTTP %d", registry, stage, ref, terr.StatusCode)}
		}
		return &pullError{class: errdefs.ErrInvalid, reason: "ErrImagePull",
			msg: fmt.Sprintf("registry %s answered HTTP %d for %s of %s", registry, terr.StatusCode, stage, ref)}
	}
	var certErr *tls.CertificateVerificationError
	var uaErr x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	if errors.As(err, &certErr) || errors.As(err, &uaErr) || errors.As(err, &hostErr) {
		return &pullError{class: errdefs.ErrUnavailable, reason: "RegistryInsecure",
			msg: fmt.Sprintf("registry %s: its TLS certificate does not verify (%v); trust its CA, or allow it with --insecure-registry / insecureRegistries", registry, err)}
	}
	if errors.Is(err, errStalled) || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		return &pullError{class: errdefs.ErrTimeout, reason: "PullTimeout", retriable: true,
			msg: fmt.Sprintf("registry %s timed out while sending %s of %s: %v", registry, stage, ref, err)}
	}
	var nerr net.Error
	var opErr *net.OpError
	if errors.As(err, &opErr) || errors.As(err, &nerr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) {
		return &pullError{class: errdefs.ErrUnavailable, reason: "RegistryUnavailable", retriable: true,
			msg: fmt.Sprintf("cannot reach registry %s for %s of %s: %v", registry, stage, ref, err)}
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	// What is left is a registry that answered, but not with the image:
	// a manifest that does not parse or has an unknown media type; or a
	// blob that fails go-containerregistry's checks (digest or size), which
	// is as corrupt as one failing ours.
	if stage != stageManifest {
		return &pullError{class: ErrCorrupt, reason: "CorruptImage",
			msg: fmt.Sprintf("registry %s sent %s of %s that does not match its digest or size: %v", registry, stage, ref, err)}
	}
	return &pullError{class: errdefs.ErrInvalid, reason: "InvalidImage",
		msg: fmt.Sprintf("registry %s sent an invalid manifest for %s: %v", registry, ref, err)}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
