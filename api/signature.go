package api

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Request signing for the native API.
//
// Every request carries four headers:
//
//	X-Skiff-Date:            the time of signing, RFC 3339 in UTC
//	X-Skiff-Nonce:           a random value never used twice
//	X-Skiff-Content-Sha256:  hex SHA-256 of the body (of "" when none)
//	Authorization:           SKIFF1-HMAC-SHA256 Credential=<keyID>, Signature=<hex>
//
// The signature is HMAC-SHA256, keyed with the access key secret, over
// StringToSign. The server rejects a date more than MaxClockSkew away from
// its own clock and a nonce it has seen within that window.
const (
	SignAlgorithm    = "SKIFF1-HMAC-SHA256"
	HeaderDate       = "X-Skiff-Date"
	HeaderNonce      = "X-Skiff-Nonce"
	HeaderBodySHA256 = "X-Skiff-Content-Sha256"
	HeaderRequestID  = "X-Skiff-Request-Id"
	MaxClockSkew     = 5 * time.Minute
)

// EmptyBodySHA256 is the hex SHA-256 of an empty body.
const EmptyBodySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// CanonicalQuery sorts the query by key, then value, and encodes it.
func CanonicalQuery(q url.Values) string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		vs := append([]string(nil), q[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(url.QueryEscape(k))
			b.WriteByte('=')
			b.WriteString(url.QueryEscape(v))
		}
	}
	return b.String()
}

// StringToSign is the text the signature covers.
func StringToSign(method, escapedPath string, query url.Values, date, nonce, bodySHA256 string) string {
	return strings.Join([]string{
		SignAlgorithm, date, nonce, strings.ToUpper(method), escapedPath, CanonicalQuery(query), bodySHA256,
	}, "\n")
}

// Signature computes the hex HMAC of s with secret.
func Signature(secret, s string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(s))
	return hex.EncodeToString(m.Sum(nil))
}

// SignRequest sets the signing headers on r. bodySHA256 is the hex SHA-256
// of the body that will be sent ("" means an empty body).
func SignRequest(r *http.Request, keyID, secret, bodySHA256 string, now time.Time) {
	if bodySHA256 == "" {
		bodySHA256 = EmptyBodySHA256
	}
	var nb [16]byte
	_, _ = rand.Read(nb[:])
	nonce := hex.EncodeToString(nb[:])
	date := now.UTC().Format(time.RFC3339)
	sts := StringToSign(r.Method, r.URL.EscapedPath(), r.URL.Query(), date, nonce, bodySHA256)
	r.Header.Set(HeaderDate, date)
	r.Header.Set(HeaderNonce, nonce)
	r.Header.Set(HeaderBodySHA256, bodySHA256)
	r.Header.Set("Authorization", fmt.Sprintf("%s Credential=%s, Signature=%s", SignAlgorithm, keyID, Signature(secret, sts)))
}

// ParseAuthorization splits an Authorization header into key id and
// signature.
func ParseAuthorization(h string) (keyID, sig string, err error) {
	rest, ok := strings.CutPrefix(h, SignAlgorithm+" ")
	if !ok {
		return "", "", fmt.Errorf("authorization must use %s", SignAlgorithm)
	}
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "Credential":
			keyID = v
		case "Signature":
			sig = v
		}
	}
	if keyID == "" || sig == "" {
		return "", "", fmt.Errorf("authorization needs Credential and Signature")
	}
	return keyID, sig, nil
}
