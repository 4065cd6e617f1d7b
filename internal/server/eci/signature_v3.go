package eci

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Signature V3 (ACS3-HMAC-SHA256), what the current generated SDKs
// (@alicloud/eci20180808 and its kin) sign with by default. The request
// carries x-acs-action, x-acs-version, x-acs-date, x-acs-signature-nonce
// and x-acs-content-sha256 headers and
//
//	Authorization: ACS3-HMAC-SHA256 Credential=<key id>,SignedHeaders=<h1;h2…>,Signature=<hex>
//
// where the signature is hex HMAC-SHA256, keyed with the secret, over
//
//	ACS3-HMAC-SHA256 \n hex(sha256(canonical request))
//
// and the canonical request is
//
//	METHOD \n path \n canonical query \n canonical headers \n signed headers \n hex(sha256(body))
//
// (the query sorted by name, names and values RFC 3986-encoded, "k=v"
// joined by "&"; each signed header "name:value\n", lower-case, sorted).

// SignatureV3 names the algorithm in the Authorization header.
const SignatureV3 = "ACS3-HMAC-SHA256"

// mustSignV3 are the headers a V3 request must sign: without them a
// signature could be replayed or moved to another action or body.
var mustSignV3 = []string{"host", "x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"}

// CanonicalRequestV3 returns the canonical request of r (with its query
// and body as read) over the signed headers.
func CanonicalRequestV3(r *http.Request, query url.Values, body []byte, signed []string) string {
	keys := make([]string, 0, len(query))
	for k := range query {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var q strings.Builder
	for i, k := range keys {
		if i > 0 {
			q.WriteByte('&')
		}
		v := ""
		if vs := query[k]; len(vs) > 0 {
			v = vs[0]
		}
		q.WriteString(percent(k) + "=" + percent(v))
	}
	var hb strings.Builder
	for _, name := range signed {
		var vals []string
		if name == "host" {
			vals = []string{r.Host}
		} else {
			for _, v := range r.Header.Values(name) {
				vals = append(vals, strings.TrimSpace(v))
			}
		}
		sort.Strings(vals)
		hb.WriteString(name + ":" + strings.Join(vals, ",") + "\n")
	}
	sum := sha256.Sum256(body)
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	return r.Method + "\n" + path + "\n" + q.String() + "\n" + hb.String() + "\n" + strings.Join(signed, ";") + "\n" + hex.EncodeToString(sum[:])
}

// SignV3 returns the hex signature of a canonical request with secret.
func SignV3(secret, canonical string) string {
	sum := sha256.Sum256([]byte(canonical))
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(SignatureV3 + "\n" + hex.EncodeToString(sum[:])))
	return hex.EncodeToString(m.Sum(nil))
}

// authenticateV3 checks a V3-signed request: the Authorization header, the
// body hash, the date window and the nonce.
func (h *Handler) authenticateV3(ctx context.Context, r *http.Request, query url.Values, body []byte, auth string) (Caller, error) {
	fields := map[string]string{}
	for _, part := range strings.Split(strings.TrimPrefix(auth, SignatureV3+" "), ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return Caller{}, errSignature
		}
		fields[k] = v
	}
	keyID, sig := fields["Credential"], fields["Signature"]
	signed := strings.Split(strings.ToLower(fields["SignedHeaders"]), ";")
	if keyID == "" || sig == "" || fields["SignedHeaders"] == "" {
		return Caller{}, missing("Authorization")
	}
	if !sort.StringsAreSorted(signed) {
		return Caller{}, errSignature
	}
	for _, want := range mustSignV3 {
		if i := sort.SearchStrings(signed, want); i == len(signed) || signed[i] != want {
			return Caller{}, invalid("Authorization", "SignedHeaders must include "+strings.Join(mustSignV3, ";"))
		}
		if want != "host" && r.Header.Get(want) == "" {
			return Caller{}, missing(want)
		}
	}
	sum := sha256.Sum256(body)
	if !strings.EqualFold(r.Header.Get("x-acs-content-sha256"), hex.EncodeToString(sum[:])) {
		return Caller{}, errSignature
	}
	ts, err := time.Parse("2006-01-02T15:04:05Z", r.Header.Get("x-acs-date"))
	if err != nil {
		return Caller{}, errBadTimestamp
	}
	now := h.cfg.Now()
	if d := now.Sub(ts); d > MaxSkew || d < -MaxSkew {
		return Caller{}, errTimestamp
	}
	nonce := r.Header.Get("x-acs-signature-nonce")
	if len(nonce) > 128 {
		return Caller{}, invalid("x-acs-signature-nonce", "at most 128 characters")
	}
	key, admin, err := h.cfg.Keys.LookupKey(ctx, keyID)
	if err != nil {
		if e := fromErr(err); e.Status < 500 {
			return Caller{}, errKey
		}
		return Caller{}, err
	}
	want := SignV3(key.Secret, CanonicalRequestV3(r, query, body, signed))
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(sig))) {
		return Caller{}, errSignature
	}
	if !h.nonces.use(key.ID+"/"+nonce, now) {
		return Caller{}, errNonceUsed
	}
	return Caller{AccountID: key.AccountID, Admin: admin}, nil
}
