package server

import (
	"os"
	"testing"
)

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }

// FuzzDecodeCreateRequest: no input may panic the create decoder, and what
// it accepts must be valid.
func FuzzDecodeCreateRequest(f *testing.F) {
	for _, s := range []string{
		`{"name":"a","spec":{"containers":[{"name":"a","image":"busybox"}]}}`,
		`{"spec":{"cpu":"500m","memory":"256Mi","containers":[{"name":"a","image":"busybox","resources":{"limits":{"cpu":0.5,"memory":"128Mi"}}}]}}`,
		`{"spec":{"volumes":[{"name":"v","emptyDir":{"medium":"Memory","sizeLimit":"1Mi"}}],"containers":[{"name":"a","image":"busybox","volumeMounts":[{"name":"v","mountPath":"/v"}]}]}}`,
		`{"spec":{"containers":[{"name":"a","image":"busybox","livenessProbe":{"httpGet":{"port":80}}}]}}`,
		`{"spec":{"cpu":-1}}`, `[]`, `null`, `{"spec":{"memory":"1e999"}}`, `{"name":"A"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := DecodeCreateRequest(b)
		if err != nil {
			return
		}
		if err := req.Validate(); err != nil {
			t.Fatalf("accepted a request that does not validate: %v", err)
		}
		_ = req.Spec.Requests()
	})
}
