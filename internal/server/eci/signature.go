package eci

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// Signature version 1.0 of Alibaba Cloud's RPC APIs: HMAC-SHA1, keyed with
// the secret followed by "&", over
//
//	METHOD & percent("/") & percent(canonical query)
//
// where the canonical query is every parameter but Signature (query and
// form alike), sorted by name, each name and value percent-encoded as RFC
// 3986 says (space is %20, "~" stays as is) and joined with "=" and "&".

// percent is RFC 3986 percent-encoding, as signature 1.0 wants it.
func percent(s string) string {
	e := url.QueryEscape(s)
	e = strings.ReplaceAll(e, "+", "%20")
	e = strings.ReplaceAll(e, "*", "%2A")
	return strings.ReplaceAll(e, "%7E", "~")
}

// StringToSign returns the string signature 1.0 signs for method and params.
func StringToSign(method string, params map[string]string) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		if k != "Signature" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(percent(k))
		b.WriteByte('=')
		b.WriteString(percent(params[k]))
	}
	return method + "&" + percent("/") + "&" + percent(b.String())
}

// Sign returns the base64 HMAC-SHA1 signature of s with secret.
func Sign(secret, s string) string {
	m := hmac.New(sha1.New, []byte(secret+"&"))
	m.Write([]byte(s))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// MaxSkew is how far a request's Timestamp may be from the server's clock.
const MaxSkew = 15 * time.Minute

// nonces remembers the SignatureNonces seen within the timestamp window;
// a nonce older than the window needs no memory, since its timestamp is
// then rejected anyway.
type nonces struct {
	mu    sync.Mutex
	seen  map[string]time.Time
	sweep time.Time
}

func (n *nonces) use(key string, now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.seen == nil {
		n.seen = map[string]time.Time{}
	}
	if now.Sub(n.sweep) > time.Minute {
		for k, exp := range n.seen {
			if now.After(exp) {
				delete(n.seen, k)
			}
		}
		n.sweep = now
	}
	if _, ok := n.seen[key]; ok {
		return false
	}
	n.seen[key] = now.Add(2 * MaxSkew)
	return true
}
