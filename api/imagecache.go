package api

import (
	"fmt"
	"time"
)

// ImageRegistryCredential logs in to one registry.
type ImageRegistryCredential struct {
	// Server is the registry, HOST[:PORT] ("docker.io" for Docker Hub).
	Server   string `json:"server"`
	UserName string `json:"userName"`
	Password string `json:"password,omitempty"`
}

// RedactedPassword stands for a password in API responses.
const RedactedPassword = "******"

// Redacted returns g with registry passwords masked, for API responses. g
// itself is not changed.
func (g *Group) Redacted() *Group {
	if g == nil || len(g.Spec.ImageRegistryCredentials) == 0 {
		return g
	}
	cp := *g
	cp.Spec.ImageRegistryCredentials = RedactCredentials(g.Spec.ImageRegistryCredentials)
	return &cp
}

// RedactCredentials returns a copy of creds with the passwords masked.
func RedactCredentials(creds []ImageRegistryCredential) []ImageRegistryCredential {
	if creds == nil {
		return nil
	}
	out := make([]ImageRegistryCredential, len(creds))
	for i, c := range creds {
		out[i] = ImageRegistryCredential{Server: c.Server, UserName: c.UserName}
		if c.Password != "" {
			out[i].Password = RedactedPassword
		}
	}
	return out
}

// PullImageRequest is the body of POST /v1/images/pull.
type PullImageRequest struct {
	Image       string                    `json:"image"`
	Credentials []ImageRegistryCredential `json:"credentials,omitempty"`
	// InsecureRegistries and PlainHTTPRegistries as in GroupSpec.
	InsecureRegistries  []string `json:"insecureRegistries,omitempty"`
	PlainHTTPRegistries []string `json:"plainHttpRegistries,omitempty"`
	// Hosts limits the pull to these host ids; empty means every connected host.
	Hosts []string `json:"hosts,omitempty"`
}

// PullProgress is one line of the NDJSON stream that POST /v1/images/pull
// answers with. Lines of several hosts interleave.
type PullProgress struct {
	HostID string `json:"hostId,omitempty"`
	// Status: "resolved" (Digest known), "waiting" (Layer of Total bytes
	// will be fetched), "downloading" (Layer, Current of Total bytes),
	// "exists" (Layer was already on the host), "done" (Layer unpacked),
	// "complete" (Image, Fetched, Seconds), "error" (Error, Reason).
	Status  string  `json:"status"`
	Layer   string  `json:"layer,omitempty"`
	Digest  string  `json:"digest,omitempty"`
	Current int64   `json:"current,omitempty"`
	Total   int64   `json:"total,omitempty"`
	Image   *Image  `json:"image,omitempty"`
	Fetched int64   `json:"fetched,omitempty"`
	Seconds float64 `json:"seconds,omitempty"`
	Error   string  `json:"error,omitempty"`
	// Reason is ErrImagePull, ImageNotFound, RegistryUnauthorized,
	// RegistryUnavailable, PullTimeout, InvalidImage or CorruptImage.
	Reason string `json:"reason,omitempty"`
}

// ImageCacheStatus is an image cache's lifecycle status (ECI's names).
type ImageCacheStatus string

const (
	ImageCacheCreating ImageCacheStatus = "Creating"
	ImageCacheReady    ImageCacheStatus = "Ready"
	ImageCacheFailed   ImageCacheStatus = "Failed"
	ImageCacheDeleting ImageCacheStatus = "Deleting"
)

// ImageCache is a named set of images kept pulled and unpacked on hosts
// (ECI's image cache). Groups whose images it covers start without
// touching a registry.
type ImageCache struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	AccountID string   `json:"accountId,omitempty"`
	Images    []string `json:"images"`
	// ImageRegistryCredentials, InsecureRegistries and PlainHTTPRegistries
	// are used for the cache's pulls; passwords are never returned.
	ImageRegistryCredentials []ImageRegistryCredential `json:"imageRegistryCredentials,omitempty"`
	InsecureRegistries       []string                  `json:"insecureRegistries,omitempty"`
	PlainHTTPRegistries      []string                  `json:"plainHttpRegistries,omitempty"`
	// Hosts is how many hosts keep the cache; 0 means every host.
	Hosts int `json:"hosts,omitempty"`
	// RetentionDays: the cache is deleted this many days after it was
	// last made Ready or used by a group (0: kept until deleted).
	RetentionDays int `json:"retentionDays,omitempty"`

	Status  ImageCacheStatus `json:"status"`
	Reason  string           `json:"reason,omitempty"`
	Message string           `json:"message,omitempty"`
	// Size is the unpacked size of the cache's images on one host.
	Size int64 `json:"size"`
	// Digests maps each image to the manifest digest the hosts hold.
	Digests    map[string]string `json:"digests,omitempty"`
	HostStates []ImageCacheHost  `json:"hostStates,omitempty"`
	// Generation is bumped by every update; hosts are brought up to it.
	Generation int64 `json:"generation"`

	CreatedAt     time.Time  `json:"createdAt"`
	UpdatedAt     time.Time  `json:"updatedAt"`
	ReadyAt       *time.Time `json:"readyAt,omitempty"`
	ExpiresAt     *time.Time `json:"expiresAt,omitempty"`
	LastMatchedAt *time.Time `json:"lastMatchedAt,omitempty"`
	Revision      int64      `json:"revision,omitempty"`
}

// ImageCacheHost is the cache's state on one host.
type ImageCacheHost struct {
	HostID     string            `json:"hostId"`
	Status     ImageCacheStatus  `json:"status"`
	Generation int64             `json:"generation"`
	Size       int64             `json:"size,omitempty"`
	Digests    map[string]string `json:"digests,omitempty"`
	Reason     string            `json:"reason,omitempty"`
	Message    string            `json:"message,omitempty"`
	Attempts   int               `json:"attempts,omitempty"`
	UpdatedAt  time.Time         `json:"updatedAt"`
}

// Redacted returns c with registry passwords masked.
func (c *ImageCache) Redacted() *ImageCache {
	if c == nil {
		return nil
	}
	cp := *c
	cp.ImageRegistryCredentials = RedactCredentials(c.ImageRegistryCredentials)
	return &cp
}

// ImageCacheRequest is the body of POST /v1/imagecaches, and of
// PUT /v1/imagecaches/{id}, where fields left out keep their value.
type ImageCacheRequest struct {
	Name                     string                    `json:"name,omitempty"`
	Images                   []string                  `json:"images,omitempty"`
	ImageRegistryCredentials []ImageRegistryCredential `json:"imageRegistryCredentials,omitempty"`
	InsecureRegistries       []string                  `json:"insecureRegistries,omitempty"`
	PlainHTTPRegistries      []string                  `json:"plainHttpRegistries,omitempty"`
	Hosts                    *int                      `json:"hosts,omitempty"`
	RetentionDays            *int                      `json:"retentionDays,omitempty"`
}

// Validate checks a create (full) or an update (partial) request.
func (r *ImageCacheRequest) Validate(update bool) error {
	c := &checker{}
	if r.Name != "" || !update {
		if err := ValidateName(r.Name); err != nil {
			c.addf("name: %v", err)
		}
	}
	if len(r.Images) == 0 && !update {
		c.addf("images: at least one image is required")
	}
	if len(r.Images) > 20 {
		c.addf("images: %d images, at most 20", len(r.Images))
	}
	seen := map[string]bool{}
	for i, im := range r.Images {
		if err := ValidateImageRef(im); err != nil {
			c.addf("images[%d]: %v", i, err)
		}
		if seen[im] {
			c.addf("images[%d]: %q is listed twice", i, im)
		}
		seen[im] = true
	}
	validateRegistryAccess(c, "", r.ImageRegistryCredentials, r.InsecureRegistries, r.PlainHTTPRegistries)
	if r.Hosts != nil && (*r.Hosts < 0 || *r.Hosts > 100000) {
		c.addf("hosts: %d: want 0 (every host) or a number of hosts", *r.Hosts)
	}
	if r.RetentionDays != nil && (*r.RetentionDays < 0 || *r.RetentionDays > 3650) {
		c.addf("retentionDays: %d: want 0 (forever) to 3650", *r.RetentionDays)
	}
	return c.err()
}

// validateRegistryAccess checks credentials and registry lists, reporting
// under the field prefix (e.g. "spec.").
func validateRegistryAccess(c *checker, prefix string, creds []ImageRegistryCredential, insecure, plain []string) {
	if len(creds) > 10 {
		c.addf("%simageRegistryCredentials: %d entries, at most 10", prefix, len(creds))
	}
	for i, cr := range creds {
		if err := validRegistryHost(cr.Server); err != nil {
			c.addf("%simageRegistryCredentials[%d].server: %v", prefix, i, err)
		}
		if cr.UserName == "" || len(cr.UserName) > 256 || len(cr.Password) > 4096 {
			c.addf("%simageRegistryCredentials[%d]: userName is required; userName at most 256 and password at most 4096 characters", prefix, i)
		}
	}
	for _, l := range []struct {
		f    string
		list []string
	}{{"insecureRegistries", insecure}, {"plainHttpRegistries", plain}} {
		if len(l.list) > 10 {
			c.addf("%s%s: %d entries, at most 10", prefix, l.f, len(l.list))
		}
		for i, h := range l.list {
			if err := validRegistryHost(h); err != nil {
				c.addf("%s%s[%d]: %v", prefix, l.f, i, err)
			}
		}
	}
}

// ValidateGroupRegistryAccess checks a group spec's registry fields.
func ValidateGroupRegistryAccess(s *GroupSpec) error {
	c := &checker{}
	validateRegistryAccess(c, "spec.", s.ImageRegistryCredentials, s.InsecureRegistries, s.PlainHTTPRegistries)
	if s.ImageCacheID != "" && (len(s.ImageCacheID) > 64 || !dnsLabel.MatchString(s.ImageCacheID)) {
		c.addf("spec.imageCacheId %q: not an image cache id", s.ImageCacheID)
	}
	return c.err()
}

func validRegistryHost(h string) error {
	if len(h) > 255 || !hostRe.MatchString(h) {
		return fmt.Errorf("%q: want a registry HOST[:PORT]", h)
	}
	return nil
}
