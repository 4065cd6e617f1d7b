package server

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/internal/server/eci"
)

// Signature V3 (ACS3-HMAC-SHA256), the current SDKs' default: a good
// request passes (TestECIJavaScriptSDK drives the real SDK); a replayed
// nonce, a stale date, a header changed after signing, a body that is not
// the one hashed, or a signature that leaves the action unsigned fail.
func TestECISignatureV3(t *testing.T) {
	ts := startServer(t)
	type req struct {
		action, nonce, date, body string
		signed                    []string
		tamper                    func(r *http.Request)
	}
	send := func(rq req) (int, map[string]any) {
		t.Helper()
		q := url.Values{"RegionId": {"skiff"}}
		r, _ := http.NewRequest("POST", ts.cfg.Endpoint+"/?"+q.Encode(), strings.NewReader(rq.body))
		sum := sha256.Sum256([]byte(rq.body))
		r.Header.Set("x-acs-action", rq.action)
		r.Header.Set("x-acs-version", eci.Version)
		r.Header.Set("x-acs-date", rq.date)
		r.Header.Set("x-acs-signature-nonce", rq.nonce)
		r.Header.Set("x-acs-content-sha256", hex.EncodeToString(sum[:]))
		if rq.body != "" {
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		signed := rq.signed
		if signed == nil {
			signed = []string{"host", "x-acs-action", "x-acs-content-sha256", "x-acs-date", "x-acs-signature-nonce", "x-acs-version"}
		}
		r.Host = strings.TrimPrefix(ts.cfg.Endpoint, "http://")
		body := []byte(rq.body)
		sig := eci.SignV3(ts.cfg.AccessKeySecret, eci.CanonicalRequestV3(r, q, body, signed))
		r.Header.Set("Authorization", eci.SignatureV3+" Credential="+ts.cfg.AccessKeyID+",SignedHeaders="+strings.Join(signed, ";")+",Signature="+sig)
		if rq.tamper != nil {
			rq.tamper(r)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var out map[string]any
		_ = json.Unmarshal(b, &out)
		return resp.StatusCode, out
	}
	now := time.Now().UTC().Format("2006-01-02T15:04:05Z")
	if code, out := send(req{action: "DescribeRegions", nonce: "n1", date: now}); code != 200 || out["Regions"] == nil {
		t.Fatalf("good request: %d %v", code, out)
	}
	if code, out := send(req{action: "DescribeRegions", nonce: "n1b", date: now, body: "ZoneId=x"}); code != 200 {
		t.Fatalf("good request with a form body: %d %v", code, out)
	}
	for _, tc := range []struct {
		name, code string
		status     int
		rq         req
	}{
		{"replayed nonce", "SignatureNonceUsed", 400, req{action: "DescribeRegions", nonce: "n1", date: now}},
		{"stale date", "InvalidTimeStamp.Expired", 400, req{action: "DescribeRegions", nonce: "n2", date: time.Now().Add(-time.Hour).UTC().Format("2006-01-02T15:04:05Z")}},
		{"action changed after signing", "SignatureDoesNotMatch", 400, req{action: "DescribeRegions", nonce: "n3", date: now,
			tamper: func(r *http.Request) { r.Header.Set("x-acs-action", "ListUsage") }}},
		{"query changed after signing", "SignatureDoesNotMatch", 400, req{action: "DescribeRegions", nonce: "n4", date: now,
			tamper: func(r *http.Request) { r.URL.RawQuery = "RegionId=other" }}},
		{"body not the one hashed", "SignatureDoesNotMatch", 400, req{action: "DescribeRegions", nonce: "n5", date: now, body: "A=1",
			tamper: func(r *http.Request) { r.Body = io.NopCloser(strings.NewReader("A=2")); r.ContentLength = 3 }}},
		{"action left unsigned", "InvalidParameter", 400, req{action: "DescribeRegions", nonce: "n6", date: now,
			signed: []string{"host", "x-acs-content-sha256", "x-acs-date", "x-acs-signature-nonce", "x-acs-version"}}},
		{"unknown key", "InvalidAccessKeyId.NotFound", 404, req{action: "DescribeRegions", nonce: "n7", date: now,
			tamper: func(r *http.Request) {
				r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "Credential="+ts.cfg.AccessKeyID, "Credential=AKnope", 1))
			}}},
	} {
		code, out := send(tc.rq)
		if code != tc.status || out["Code"] != tc.code || out["RequestId"] == "" {
			t.Errorf("%s: %d %v, want %d %s", tc.name, code, out, tc.status, tc.code)
		}
	}
}
