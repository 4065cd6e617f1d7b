package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/skiffhq/skiff/api"
)

// Client talks to one skiff endpoint as one access key. It is safe for
// concurrent use.
type Client struct {
	base   *url.URL
	keyID  string
	secret string
	http   *http.Client
	now    func() time.Time
	agent  string
}

// Option adjusts a Client made by New.
type Option func(*Client)

// WithHTTPClient sets the HTTP client. It should have no overall Timeout:
// logs, watch and wait are long requests bounded by their context.
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.agent = ua } }

// New returns a client for cfg. An endpoint without a scheme is taken as
// http://.
func New(cfg api.ClientConfig, opts ...Option) (*Client, error) {
	ep := strings.TrimSpace(cfg.Endpoint)
	if ep == "" {
		return nil, errors.New("client config has no endpoint")
	}
	if !strings.Contains(ep, "://") {
		ep = "http://" + ep
	}
	u, err := url.Parse(ep)
	if err != nil {
		return nil, fmt.Errorf("invalid endpoint %q: %w", cfg.Endpoint, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("invalid endpoint %q: scheme must be http or https", cfg.Endpoint)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("invalid endpoint %q: no host", cfg.Endpoint)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	u.RawQuery, u.Fragment = "", ""
	c := &Client{
		base:   u,
		keyID:  cfg.AccessKeyID,
		secret: cfg.AccessKeySecret,
		http:   &http.Client{},
		now:    time.Now,
		agent:  "skiff-client",
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Endpoint returns the base URL the client talks to.
func (c *Client) Endpoint() string { return c.base.String() }

// ResponseError is a non-2xx answer. It unwraps to the *api.Error the server
// sent (or one made up from the status when the body was not an api.Error).
type ResponseError struct {
	Method     string
	Path       string
	StatusCode int
	Err        *api.Error
}

func (e *ResponseError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.StatusCode, e.Err.Error())
}

func (e *ResponseError) Unwrap() error { return e.Err }

// ErrorCode returns the API error code carried by err, or "" when err did
// not come from the server.
func ErrorCode(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// StatusCode returns the HTTP status of a ResponseError in err's chain, or 0.
func StatusCode(err error) int {
	var re *ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// IsNotFound reports whether err is a 404 from the server.
func IsNotFound(err error) bool { return StatusCode(err) == http.StatusNotFound }

// url builds an absolute URL for path segments (escaped here) and query.
func (c *Client) url(query url.Values, segs ...string) *url.URL {
	u := *c.base
	raw := u.Path
	plain := u.Path
	for _, s := range segs {
		raw += "/" + url.PathEscape(s)
		plain += "/" + s
	}
	u.Path = plain
	if raw != plain {
		u.RawPath = raw
	}
	u.RawQuery = query.Encode()
	return &u
}

// newRequest makes a signed request. bodySHA256 is the hex SHA-256 of body
// ("" for none).
func (c *Client) newRequest(ctx context.Context, method string, u *url.URL, body io.Reader, bodySHA256 string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", c.agent)
	api.SignRequest(req, c.keyID, c.secret, bodySHA256, c.now())
	return req, nil
}

// send performs req and returns the response when it is 2xx; otherwise it
// decodes the error body and closes it.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, decodeError(req.Method, req.URL.Path, resp)
}

func decodeError(method, path string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	ae := &api.Error{}
	if err := json.Unmarshal(b, ae); err != nil || ae.Code == "" {
		ae = &api.Error{Code: strings.ReplaceAll(http.StatusText(resp.StatusCode), " ", "")}
		if ae.Code == "" {
			ae.Code = fmt.Sprintf("HTTP%d", resp.StatusCode)
		}
		ae.Message = strings.TrimSpace(string(b))
		if ae.Message == "" {
			ae.Message = http.StatusText(resp.StatusCode)
		}
	}
	if ae.RequestID == "" {
		ae.RequestID = resp.Header.Get(api.HeaderRequestID)
	}
	return &ResponseError{Method: method, Path: path, StatusCode: resp.StatusCode, Err: ae}
}

// do sends a JSON request (in may be nil) and decodes a JSON answer into
// out (may be nil). It returns the HTTP status.
func (c *Client) do(ctx context.Context, method string, u *url.URL, in, out any) (int, error) {
	var body io.Reader
	sum := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, fmt.Errorf("encode request: %w", err)
		}
		h := sha256.Sum256(b)
		sum = hex.EncodeToString(h[:])
		body = bytes.NewReader(b)
	}
	req, err := c.newRequest(ctx, method, u, body, sum)
	if err != nil {
		return 0, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.send(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s %s response: %w", method, u.Path, err)
		}
	}
	return resp.StatusCode, nil
}
