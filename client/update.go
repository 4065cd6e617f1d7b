package client

import (
	"context"
	"net/http"

	"github.com/skiffhq/skiff/api"
)

// UpdateGroup changes a group (PATCH /v1/groups/{id}); see
// api.UpdateGroupRequest for what restarts it and what does not.
func (c *Client) UpdateGroup(ctx context.Context, idOrName string, req *api.UpdateGroupRequest) (*api.Group, error) {
	g := new(api.Group)
	if _, err := c.do(ctx, http.MethodPatch, c.url(nil, "v1", "groups", idOrName), req, g); err != nil {
		return nil, err
	}
	return g, nil
}
