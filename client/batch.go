package client

import (
	"context"
	"net/http"

	"github.com/skiffhq/skiff/api"
)

// CreateGroups creates many groups in one call (POST /v1/groups:batch, at
// most 1000). Each item succeeds or fails on its own: the answer holds one
// result per request, in order, with either the group or its error; err is
// set only when the call as a whole failed.
func (c *Client) CreateGroups(ctx context.Context, reqs []api.CreateGroupRequest) (*api.BatchCreateResponse, error) {
	out := new(api.BatchCreateResponse)
	if _, err := c.do(ctx, http.MethodPost, c.url(nil, "v1", "groups:batch"), api.BatchCreateRequest{Items: reqs}, out); err != nil {
		return nil, err
	}
	return out, nil
}
