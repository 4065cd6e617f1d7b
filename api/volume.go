package api

import (
	"path"
	"strings"
)

// Validate checks a ConfigFileVolume given on its own: the body of a
// volume update (PUT /v1/groups/{id}/volumes/{name}).
func (v *ConfigFileVolume) Validate() error {
	var c checker
	total := 0
	for j, it := range v.Items {
		total += len(it.Content)
		if it.Path == "" || path.IsAbs(it.Path) || strings.Contains(it.Path, "..") {
			c.addf("items[%d].path %q: must be relative, without '..'", j, it.Path)
		}
		if it.Mode != nil && (*it.Mode < 0 || *it.Mode > 0o7777) {
			c.addf("items[%d].mode %o: out of range", j, *it.Mode)
		}
	}
	if v.DefaultMode != nil && (*v.DefaultMode < 0 || *v.DefaultMode > 0o7777) {
		c.addf("defaultMode %o: out of range", *v.DefaultMode)
	}
	if total > MaxConfigFileBytes {
		c.addf("%d bytes of content, at most %d", total, MaxConfigFileBytes)
	}
	return c.err()
}
