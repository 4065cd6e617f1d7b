package client

import (
	"context"
	"net/http"

	"github.com/skiffhq/skiff/api"
)

// CreateImageCache creates an image cache; it is Creating until its images
// are pulled onto the hosts.
func (c *Client) CreateImageCache(ctx context.Context, req api.ImageCacheRequest) (*api.ImageCache, error) {
	out := new(api.ImageCache)
	if _, err := c.do(ctx, http.MethodPost, c.url(nil, "v1", "imagecaches"), req, out); err != nil {
		return nil, err
	}
	return out, nil
}

// ImageCaches lists the account's image caches.
func (c *Client) ImageCaches(ctx context.Context) ([]api.ImageCache, error) {
	var out api.List[api.ImageCache]
	if _, err := c.do(ctx, http.MethodGet, c.url(nil, "v1", "imagecaches"), nil, &out); err != nil {
		return nil, err
	}
	return out.Items, nil
}

// GetImageCache returns one cache by id or name.
func (c *Client) GetImageCache(ctx context.Context, idOrName string) (*api.ImageCache, error) {
	out := new(api.ImageCache)
	if _, err := c.do(ctx, http.MethodGet, c.url(nil, "v1", "imagecaches", idOrName), nil, out); err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateImageCache changes a cache; fields left empty keep their value.
func (c *Client) UpdateImageCache(ctx context.Context, idOrName string, req api.ImageCacheRequest) (*api.ImageCache, error) {
	out := new(api.ImageCache)
	if _, err := c.do(ctx, http.MethodPut, c.url(nil, "v1", "imagecaches", idOrName), req, out); err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteImageCache starts a cache's deletion (Deleting, then gone).
func (c *Client) DeleteImageCache(ctx context.Context, idOrName string) (*api.ImageCache, error) {
	out := new(api.ImageCache)
	if _, err := c.do(ctx, http.MethodDelete, c.url(nil, "v1", "imagecaches", idOrName), nil, out); err != nil {
		return nil, err
	}
	return out, nil
}
