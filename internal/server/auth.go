package server

import (
	"context"
	"crypto/hmac"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/store"
)

// authenticator checks request signatures (see api.SignRequest) and maps
// access keys to callers.
type authenticator struct {
	store *store.Store
	now   func() time.Time

	mu     sync.Mutex
	keys   map[string]cachedKey
	nonces map[string]time.Time // nonce → expiry
	sweep  time.Time
}

type cachedKey struct {
	key     *store.AccessKey
	admin   bool
	fetched time.Time
}

const keyCacheTTL = 10 * time.Second

func newAuthenticator(s *store.Store) *authenticator {
	return &authenticator{store: s, now: time.Now, keys: map[string]cachedKey{}, nonces: map[string]time.Time{}}
}

func unauthorized(msg string) error { return errdefs.Userf(errdefs.ErrUnauthorized, msg) }

// verify checks the signature headers against the request and the body hash
// the caller computed (or, for streamed bodies, the declared one).
func (a *authenticator) verify(ctx context.Context, r *http.Request, bodySHA256 string) (Caller, error) {
	authz := r.Header.Get("Authorization")
	if authz == "" {
		return Caller{}, unauthorized("request is not signed: set up a client config with `skiff up` or see the API docs on request signing")
	}
	keyID, sig, err := api.ParseAuthorization(authz)
	if err != nil {
		return Caller{}, unauthorized(err.Error())
	}
	date := r.Header.Get(api.HeaderDate)
	t, err := time.Parse(time.RFC3339, date)
	if err != nil {
		return Caller{}, unauthorized(api.HeaderDate + " must be an RFC 3339 time")
	}
	now := a.now()
	if d := now.Sub(t); d > api.MaxClockSkew || d < -api.MaxClockSkew {
		return Caller{}, unauthorized(fmt.Sprintf("request time %s is more than %s from the server's clock (%s): check the client's clock", date, api.MaxClockSkew, now.UTC().Format(time.RFC3339)))
	}
	nonce := r.Header.Get(api.HeaderNonce)
	if len(nonce) < 8 || len(nonce) > 128 {
		return Caller{}, unauthorized(api.HeaderNonce + " must be 8-128 characters")
	}
	if r.Header.Get(api.HeaderBodySHA256) != bodySHA256 {
		return Caller{}, unauthorized("body hash does not match " + api.HeaderBodySHA256)
	}
	ck, err := a.lookup(ctx, keyID)
	if err != nil {
		return Caller{}, err
	}
	want := api.Signature(ck.key.Secret, api.StringToSign(r.Method, r.URL.EscapedPath(), r.URL.Query(), date, nonce, bodySHA256))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return Caller{}, unauthorized("signature does not match: check the access key secret")
	}
	if !a.useNonce(keyID+"/"+nonce, t.Add(2*api.MaxClockSkew)) {
		return Caller{}, unauthorized("request was replayed (nonce already used)")
	}
	return Caller{AccountID: ck.key.AccountID, Admin: ck.admin}, nil
}

func (a *authenticator) lookup(ctx context.Context, keyID string) (cachedKey, error) {
	a.mu.Lock()
	ck, ok := a.keys[keyID]
	a.mu.Unlock()
	if ok && a.now().Sub(ck.fetched) < keyCacheTTL {
		if ck.key == nil || ck.key.Disabled {
			return ck, unauthorized("access key " + keyID + " is unknown or disabled")
		}
		return ck, nil
	}
	k, err := a.store.GetAccessKey(ctx, keyID)
	ck = cachedKey{fetched: a.now()}
	if err == nil {
		acct, aerr := a.store.GetAccount(ctx, k.AccountID)
		if aerr == nil {
			ck.key = k
			ck.admin = acct.Admin
		}
	} else if !isNotFound(err) {
		return ck, err
	}
	a.mu.Lock()
	a.keys[keyID] = ck
	a.mu.Unlock()
	if ck.key == nil || ck.key.Disabled {
		return ck, unauthorized("access key " + keyID + " is unknown or disabled")
	}
	return ck, nil
}

// useNonce records a nonce; false when it was seen before. Nonces are kept
// until their request's date falls out of the accepted window, after which
// the date check alone rejects a replay.
func (a *authenticator) useNonce(n string, expiry time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	if now.Sub(a.sweep) > time.Minute {
		for k, exp := range a.nonces {
			if now.After(exp) {
				delete(a.nonces, k)
			}
		}
		a.sweep = now
	}
	if _, seen := a.nonces[n]; seen {
		return false
	}
	a.nonces[n] = expiry
	return true
}
