package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/skiffhq/skiff/api"
)

// ImportImage uploads an image tarball (OCI layout or docker-archive) at
// path to the fleet. The file is read twice: once to hash it (the hash is
// signed), once to stream it. progress, when not nil, is called as bytes go
// out, with the total size.
func (c *Client) ImportImage(ctx context.Context, path string, progress func(sent, total int64)) (*api.ImportResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("hash %s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	total := st.Size()
	var body io.Reader = f
	if progress != nil {
		body = &progressReader{r: f, total: total, fn: progress}
	}
	req, err := c.newRequest(ctx, http.MethodPost, c.url(nil, "v1", "images", "import"), body, hex.EncodeToString(h.Sum(nil)))
	if err != nil {
		return nil, err
	}
	req.ContentLength = total
	req.Header.Set("Content-Type", "application/x-tar")
	req.Header.Set("Accept", "application/json")
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	res := new(api.ImportResult)
	if err := json.NewDecoder(resp.Body).Decode(res); err != nil {
		return nil, fmt.Errorf("decode import response: %w", err)
	}
	return res, nil
}

type progressReader struct {
	r     io.Reader
	sent  int64
	total int64
	fn    func(sent, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.sent += int64(n)
		p.fn(p.sent, p.total)
	}
	return n, err
}

// PullImage asks the hosts to pull an image from its registry. progress,
// when not nil, gets every line of every host's progress as it comes (see
// api.PullProgress). The result holds one final line ("complete" or
// "error") per host; err is set only when the request itself failed.
func (c *Client) PullImage(ctx context.Context, req api.PullImageRequest, progress func(api.PullProgress)) ([]api.PullProgress, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	hreq, err := c.newRequest(ctx, http.MethodPost, c.url(nil, "v1", "images", "pull"), bytes.NewReader(b), hex.EncodeToString(sum[:]))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/x-ndjson")
	resp, err := c.send(hreq)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var final []api.PullProgress
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var p api.PullProgress
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return final, fmt.Errorf("decode pull progress: %w", err)
		}
		if progress != nil {
			progress(p)
		}
		if p.Status == "complete" || p.Status == "error" {
			final = append(final, p)
		}
	}
	if err := sc.Err(); err != nil {
		return final, fmt.Errorf("pull progress stream: %w", err)
	}
	return final, nil
}
