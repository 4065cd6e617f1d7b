package registrytest

import (
	"archive/tar"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	kgzip "github.com/klauspost/compress/gzip"

	"github.com/skiffhq/skiff/internal/image/imagetest"
)

// FileLayer is a gzip layer kept in a file, for images too big for memory.
type FileLayer struct {
	path           string
	digest, diffID v1.Hash
	size           int64
}

// RandomFileLayer writes, under dir, a gzip layer holding one file of n
// random (incompressible) bytes at name.
func RandomFileLayer(dir, name string, n int64) (*FileLayer, error) {
	f, err := os.CreateTemp(dir, "layer-*.tar.gz")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	blobHash, tarHash := sha256.New(), sha256.New()
	zw, err := kgzip.NewWriterLevel(io.MultiWriter(f, blobHash), kgzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(io.MultiWriter(zw, tarHash))
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: n, Typeflag: tar.TypeReg, ModTime: imagetest.Epoch}); err != nil {
		return nil, err
	}
	if _, err := io.CopyN(tw, rand.Reader, n); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return &FileLayer{
		path:   f.Name(),
		digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(blobHash.Sum(nil))},
		diffID: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(tarHash.Sum(nil))},
		size:   st.Size(),
	}, nil
}

// RandomFileLayers writes count layers of n bytes each, files data/NN.bin.
func RandomFileLayers(dir string, count int, n int64) ([]v1.Layer, error) {
	var out []v1.Layer
	for i := 0; i < count; i++ {
		l, err := RandomFileLayer(dir, filepath.Join("data", fmt.Sprintf("%02d.bin", i)), n)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

func (l *FileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *FileLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *FileLayer) Size() (int64, error)                { return l.size, nil }
func (l *FileLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
func (l *FileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }
func (l *FileLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	zr, err := kgzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}
