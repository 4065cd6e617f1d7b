package main

import (
	"crypto/x509"
	"fmt"
	"os"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/agent"
)

// registryConfig turns the agent's registry flags into its config.
func (f *agentFlags) registryConfig(cfg *agent.Config) error {
	cfg.Registry.Insecure = f.insecureRegistries
	if f.registryCA != "" {
		b, err := os.ReadFile(f.registryCA)
		if err != nil {
			return fmt.Errorf("--registry-ca: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(b) {
			return fmt.Errorf("--registry-ca %s: no PEM certificate in it", f.registryCA)
		}
		cfg.Registry.RootCAs = pool
	}
	if f.imageGCThreshold != "" {
		q, err := api.ParseQuantity(f.imageGCThreshold)
		if err != nil || q <= 0 {
			return fmt.Errorf("--image-gc-threshold %q: want a size such as 50Gi", f.imageGCThreshold)
		}
		cfg.ImageGCThreshold = int64(q)
	}
	return nil
}
