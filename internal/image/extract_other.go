//go:build !linux

package image

import (
	"context"
	"fmt"
	"io"

	"github.com/skiffhq/skiff/internal/errdefs"
)

func extractTar(ctx context.Context, root string, r io.Reader) (int64, error) {
	return 0, fmt.Errorf("%w: unpacking image layers needs Linux", errdefs.ErrNotSupported)
}

func syncFS(dir string) {}
