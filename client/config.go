package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/skiffhq/skiff/api"
)

// ConfigEnv names the environment variable that points at the client config.
const ConfigEnv = "SKIFF_CONFIG"

// ErrNoConfig is wrapped by LoadConfig when the config file does not exist.
var ErrNoConfig = errors.New("no client config")

// DefaultConfigPath is $SKIFF_CONFIG, else ~/.skiff/config.json.
func DefaultConfigPath() string {
	if p := os.Getenv(ConfigEnv); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		home = "."
	}
	return filepath.Join(home, ".skiff", "config.json")
}

// LoadConfig reads a client config (JSON api.ClientConfig) from path; an
// empty path means DefaultConfigPath. A missing file gives an error wrapping
// ErrNoConfig that tells the user how to get one.
func LoadConfig(path string) (api.ClientConfig, error) {
	if path == "" {
		path = DefaultConfigPath()
	}
	var cfg api.ClientConfig
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, fmt.Errorf("%w at %s: start skiff with `skiff up` or set %s", ErrNoConfig, path, ConfigEnv)
	}
	if err != nil {
		return cfg, fmt.Errorf("read client config: %w", err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("client config %s is not valid JSON: %w", path, err)
	}
	if cfg.Endpoint == "" || cfg.AccessKeyID == "" || cfg.AccessKeySecret == "" {
		return cfg, fmt.Errorf("client config %s needs endpoint, accessKeyId and accessKeySecret", path)
	}
	return cfg, nil
}
