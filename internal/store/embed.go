package store

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// EmbeddedConfig configures a single-node etcd run inside the server.
type EmbeddedConfig struct {
	Dir       string // data directory
	ClientURL string // e.g. http://127.0.0.1:2379
	PeerURL   string // e.g. http://127.0.0.1:2380
	Logger    *slog.Logger
}

// Embedded is a running embedded etcd.
type Embedded struct {
	etcd      *embed.Etcd
	ClientURL string
}

// StartEmbedded starts etcd and waits until it serves.
func StartEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Embedded, error) {
	ec := embed.NewConfig()
	ec.Dir = cfg.Dir
	ec.Name = "skiff"
	cu, err := url.Parse(cfg.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("etcd client url %q: %w", cfg.ClientURL, err)
	}
	pu, err := url.Parse(cfg.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("etcd peer url %q: %w", cfg.PeerURL, err)
	}
	ec.ListenClientUrls = []url.URL{*cu}
	ec.AdvertiseClientUrls = []url.URL{*cu}
	ec.ListenPeerUrls = []url.URL{*pu}
	ec.AdvertisePeerUrls = []url.URL{*pu}
	ec.InitialCluster = ec.Name + "=" + pu.String()
	ec.LogLevel = "error"
	ec.Logger = "zap"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// A single member: batch the backend commits rather than syncing on
	// every write (etcd still fsyncs its WAL per raft entry).
	ec.AutoCompactionMode = "revision"
	ec.AutoCompactionRetention = "10000"
	ec.QuotaBackendBytes = 4 << 30
	ec.MaxRequestBytes = 8 << 20
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w (is another skiff using this data dir or port?)", cfg.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd did not become ready in 60s")
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	return &Embedded{etcd: e, ClientURL: cu.String()}, nil
}

// Close stops etcd.
func (e *Embedded) Close() { e.etcd.Close() }

// Err reports a fatal etcd error.
func (e *Embedded) Err() <-chan error { return e.etcd.Err() }

// Dial connects an etcd client.
func Dial(ctx context.Context, endpoints []string) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		Context:     ctx,
	})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", endpoints, err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Get(sctx, "/skiff/health"); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd %v is not answering: %w", endpoints, err)
	}
	return cli, nil
}
