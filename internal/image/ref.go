package image

import (
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
)

// NormalizeRef returns ref in Docker's canonical form: "busybox" becomes
// "docker.io/library/busybox:latest", "busybox@sha256:…" becomes
// "docker.io/library/busybox@sha256:…".
func NormalizeRef(ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("%w: bad image reference %q: want NAME[:TAG] or NAME@sha256:DIGEST", ErrInvalid, ref)
	}
	reg := r.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	repo := reg + "/" + r.Context().RepositoryStr()
	if d, ok := r.(name.Digest); ok {
		return repo + "@" + d.DigestStr(), nil
	}
	return repo + ":" + r.Identifier(), nil
}
