package api

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

func TestCanonicalQuery(t *testing.T) {
	q := url.Values{"b": {"2", "1"}, "a": {"x y"}}
	if got, want := CanonicalQuery(q), "a=x+y&b=1&b=2"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestSignRequestRoundTrip(t *testing.T) {
	r, _ := http.NewRequest("GET", "http://h/v1/groups/we%20b?limit=5", nil)
	SignRequest(r, "AK1", "secret", "", time.Unix(1700000000, 0))
	kid, sig, err := ParseAuthorization(r.Header.Get("Authorization"))
	if err != nil || kid != "AK1" {
		t.Fatalf("parse: %v %q", err, kid)
	}
	want := Signature("secret", StringToSign("GET", "/v1/groups/we%20b", r.URL.Query(), r.Header.Get(HeaderDate), r.Header.Get(HeaderNonce), EmptyBodySHA256))
	if sig != want {
		t.Fatalf("signature mismatch")
	}
	if Signature("other", "x") == Signature("secret", "x") {
		t.Fatal("signatures must depend on the secret")
	}
	for _, bad := range []string{"", "Basic abc", SignAlgorithm + " Credential=AK1"} {
		if _, _, err := ParseAuthorization(bad); err == nil {
			t.Errorf("ParseAuthorization(%q): want error", bad)
		}
	}
}
