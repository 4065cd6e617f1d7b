package client

import (
	"context"
	"net/http"

	"github.com/skiffhq/skiff/api"
)

// UpdateVolume replaces the files of a running group's config-file volume.
// The group's host swaps them in atomically (a reader sees the old set or
// the new one), with no process in the group; the group's record is
// returned with the new files.
func (c *Client) UpdateVolume(ctx context.Context, idOrName, volume string, v api.ConfigFileVolume) (*api.Group, error) {
	if v.Items == nil {
		v.Items = []api.ConfigFileItem{}
	}
	g := new(api.Group)
	if _, err := c.do(ctx, http.MethodPut, c.url(nil, "v1", "groups", idOrName, "volumes", volume), v, g); err != nil {
		return nil, err
	}
	return g, nil
}
