package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/server/eci"
	"github.com/skiffhq/skiff/internal/tenancy"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// tenancyRound is the leader's metering and spot step of each scheduling
// round: it closes the billing intervals of groups that ended, and asks
// tenancy which spot groups to reclaim for the on-demand groups the
// scheduler could not place (ScheduleFailed), then carries reclaims on.
func (c *controller) tenancyRound(ctx context.Context, guard clientv3.Cmp) error {
	if c.ten == nil {
		return nil
	}
	groups, _, err := c.store.ListGroups(ctx)
	if err != nil {
		return err
	}
	if err := c.ten.MeterRound(ctx, groups); err != nil {
		return err
	}
	var needs []tenancy.Need
	spotPlaced := false
	for _, g := range groups {
		if g.HostID == "" && !g.Deleting && g.Status == api.StatusScheduleFailed && !api.IsSpot(g.Spec.SpotStrategy) {
			r := g.Spec.Requests()
			needs = append(needs, tenancy.Need{GroupID: g.ID, MilliCPU: r.MilliCPU, Memory: r.Memory, Zone: g.Spec.Zone, NodeSelector: g.Spec.NodeSelector})
		}
		spotPlaced = spotPlaced || (g.SpotReclaimAt != nil) || (g.HostID != "" && api.IsSpot(g.Spec.SpotStrategy))
	}
	if !spotPlaced {
		return nil
	}
	var views []tenancy.HostView
	if len(needs) > 0 {
		recs, err := c.store.ListHosts(ctx)
		if err != nil {
			return err
		}
		alive, err := c.store.AliveHosts(ctx)
		if err != nil {
			return err
		}
		snap, _ := snapshot(recs, alive, groups)
		for _, h := range snap {
			views = append(views, tenancy.HostView{ID: h.ID, Ready: h.Ready, Zone: h.Zone, Labels: h.Labels, Capacity: h.Capacity, Allocated: h.Allocated})
		}
	}
	return c.ten.SpotRound(ctx, groups, views, needs, guard)
}

// loadPriceTable reads a JSON price table; "" means the default.
func loadPriceTable(path string) (api.PriceTable, error) {
	if path == "" {
		return tenancy.DefaultPrices, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return api.PriceTable{}, fmt.Errorf("price table: %w", err)
	}
	var pt api.PriceTable
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pt); err != nil {
		return api.PriceTable{}, fmt.Errorf("price table %s: %w", path, err)
	}
	for _, v := range []float64{pt.OnDemand.VCPUHour, pt.OnDemand.GiBHour, pt.Spot.VCPUHour, pt.Spot.GiBHour} {
		if v < 0 || v > 1e6 {
			return api.PriceTable{}, fmt.Errorf("price table %s: prices must be between 0 and 1e6 per hour", path)
		}
	}
	return pt, nil
}

// eciImageCaches gives the ECI front the service's image caches.
func eciImageCaches(svc *Service) eci.ImageCacheBackend { return eciCaches{svc} }

type eciCaches struct{ svc *Service }

func (b eciCaches) CreateImageCache(ctx context.Context, c eci.Caller, req api.ImageCacheRequest) (*api.ImageCache, error) {
	return b.svc.CreateImageCache(ctx, fromECI(c), req)
}

func (b eciCaches) ListImageCaches(ctx context.Context, c eci.Caller) ([]*api.ImageCache, error) {
	return b.svc.ListImageCaches(ctx, fromECI(c))
}

func (b eciCaches) UpdateImageCache(ctx context.Context, c eci.Caller, id string, req api.ImageCacheRequest) (*api.ImageCache, error) {
	return b.svc.UpdateImageCache(ctx, fromECI(c), id, req)
}

func (b eciCaches) DeleteImageCache(ctx context.Context, c eci.Caller, id string) error {
	_, err := b.svc.DeleteImageCache(ctx, fromECI(c), id)
	return err
}
