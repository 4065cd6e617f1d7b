package eci

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"

	"github.com/skiffhq/skiff/api"
)

// ImageCacheBackend is the service layer's image caches.
type ImageCacheBackend interface {
	CreateImageCache(ctx context.Context, c Caller, req api.ImageCacheRequest) (*api.ImageCache, error)
	ListImageCaches(ctx context.Context, c Caller) ([]*api.ImageCache, error)
	UpdateImageCache(ctx context.Context, c Caller, id string, req api.ImageCacheRequest) (*api.ImageCache, error)
	DeleteImageCache(ctx context.Context, c Caller, id string) error
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (h *Handler) imageCaches() (ImageCacheBackend, error) {
	if h.cfg.ImageCaches == nil {
		return nil, &Error{Status: http.StatusBadRequest, Code: "UnsupportedOperation", Message: "Image caches are not available on this server."}
	}
	return h.cfg.ImageCaches, nil
}

func decodeCacheRequest(p *params, update bool) api.ImageCacheRequest {
	req := api.ImageCacheRequest{Name: p.str("ImageCacheName"), Images: p.strList("Image"),
		ImageRegistryCredentials: decodeRegistryCredentials(p),
		InsecureRegistries:       splitList(p.str("InsecureRegistry")),
		PlainHTTPRegistries:      splitList(p.str("PlainHttpRegistry"))}
	if !update {
		p.required("ImageCacheName")
		if len(req.Images) == 0 && p.err == nil {
			p.fail(missing("Image.1"))
		}
	}
	if d := p.int("RetentionDays", 0, 3650); d != nil {
		n := int(*d)
		req.RetentionDays = &n
	}
	_ = p.int("ImageCacheSize", 1, 1<<20) // hosts' disks, not a cloud disk: no size to pick
	return req
}

func describeCache(c *api.ImageCache) map[string]any {
	progress := "0%"
	if c.Status == api.ImageCacheReady {
		progress = "100%"
	}
	return map[string]any{"ImageCacheId": c.ID, "ImageCacheName": c.Name, "SnapshotId": c.ID, "Status": string(c.Status),
		"Progress": progress, "Images": nonNil(c.Images), "CreationTime": eciTime(&c.CreatedAt), "ExpireDateTime": eciTime(c.ExpiresAt),
		"ImageCacheSize": (c.Size + gib - 1) / gib, "Events": []any{},
		// ECI builds a cache with a temporary container group; skiff's
		// hosts pull directly, so there is none to name.
		"ContainerGroupId": ""}
}

func (h *Handler) createImageCache(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	req := decodeCacheRequest(p, false)
	if p.err != nil {
		return nil, p.err
	}
	b, err := h.imageCaches()
	if err != nil {
		return nil, err
	}
	ic, err := b.CreateImageCache(ctx, c, req)
	if err != nil {
		return nil, err
	}
	return map[string]any{"ImageCacheId": ic.ID, "ContainerGroupId": ""}, nil
}

func (h *Handler) describeImageCaches(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	id, name, snap, image := p.str("ImageCacheId"), p.str("ImageCacheName"), p.str("SnapshotId"), p.str("Image")
	b, err := h.imageCaches()
	if err != nil {
		return nil, err
	}
	list, err := b.ListImageCaches(ctx, c)
	if err != nil {
		return nil, err
	}
	var out []map[string]any
	for _, ic := range list {
		if (id != "" && ic.ID != id) || (name != "" && ic.Name != name) || (snap != "" && ic.ID != snap) {
			continue
		}
		if image != "" {
			has := false
			for _, im := range ic.Images {
				has = has || im == image
			}
			if !has {
				continue
			}
		}
		out = append(out, describeCache(ic))
	}
	return map[string]any{"ImageCaches": nonNilMaps(out), "TotalCount": len(out)}, nil
}

func (h *Handler) updateImageCache(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	id := p.required("ImageCacheId")
	req := decodeCacheRequest(p, true)
	if p.err != nil {
		return nil, p.err
	}
	b, err := h.imageCaches()
	if err != nil {
		return nil, err
	}
	if _, err := b.UpdateImageCache(ctx, c, id, req); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

func (h *Handler) deleteImageCache(ctx context.Context, c Caller, p *params, _ *http.Request) (map[string]any, error) {
	id := p.required("ImageCacheId")
	if p.err != nil {
		return nil, p.err
	}
	b, err := h.imageCaches()
	if err != nil {
		return nil, err
	}
	if err := b.DeleteImageCache(ctx, c, id); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}
