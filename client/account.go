package client

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/skiffhq/skiff/api"
)

// CreateAccount makes an account and its first key (admins only). The
// key's secret is only ever in this reply.
func (c *Client) CreateAccount(ctx context.Context, req api.CreateAccountRequest) (*api.CreateAccountResult, error) {
	var out api.CreateAccountResult
	_, err := c.do(ctx, http.MethodPost, c.url(nil, "v1", "accounts"), req, &out)
	return &out, err
}

// Accounts lists every account (admins only).
func (c *Client) Accounts(ctx context.Context) ([]api.Account, error) {
	return listAll[api.Account](ctx, c, "v1", "accounts")
}

// Account reads one account.
func (c *Client) Account(ctx context.Context, id string) (*api.Account, error) {
	var out api.Account
	_, err := c.do(ctx, http.MethodGet, c.url(nil, "v1", "accounts", id), nil, &out)
	return &out, err
}

// SetQuota replaces an account's quota (admins only).
func (c *Client) SetQuota(ctx context.Context, id string, q api.Quota) (*api.Account, error) {
	var out api.Account
	_, err := c.do(ctx, http.MethodPut, c.url(nil, "v1", "accounts", id, "quota"), q, &out)
	return &out, err
}

// AccountUsage reads what an account holds against its quota.
func (c *Client) AccountUsage(ctx context.Context, id string) (*api.AccountUsage, error) {
	var out api.AccountUsage
	_, err := c.do(ctx, http.MethodGet, c.url(nil, "v1", "accounts", id, "usage"), nil, &out)
	return &out, err
}

// AccessKeys lists an account's keys, without secrets.
func (c *Client) AccessKeys(ctx context.Context, account string) ([]api.AccessKey, error) {
	return listAll[api.AccessKey](ctx, c, "v1", "accounts", account, "keys")
}

// CreateAccessKey adds a key pair to an account.
func (c *Client) CreateAccessKey(ctx context.Context, account string) (*api.AccessKey, error) {
	var out api.AccessKey
	_, err := c.do(ctx, http.MethodPost, c.url(nil, "v1", "accounts", account, "keys"), nil, &out)
	return &out, err
}

// AccessKeyAction disables, enables or rotates a key ("disable",
// "enable", "rotate"); rotate returns the new key with its secret.
func (c *Client) AccessKeyAction(ctx context.Context, account, keyID, action string) (*api.AccessKey, error) {
	var out api.AccessKey
	_, err := c.do(ctx, http.MethodPost, c.url(nil, "v1", "accounts", account, "keys", keyID, action), nil, &out)
	return &out, err
}

// UsageOptions selects a usage report. Account "" is the caller's, "*"
// every account's (admins).
type UsageOptions struct {
	Account  string
	From, To time.Time
}

func (o UsageOptions) query(format string) url.Values {
	q := url.Values{}
	if o.Account != "" {
		q.Set("account", o.Account)
	}
	if !o.From.IsZero() {
		q.Set("from", o.From.UTC().Format(time.RFC3339))
	}
	if !o.To.IsZero() {
		q.Set("to", o.To.UTC().Format(time.RFC3339))
	}
	if format != "" {
		q.Set("format", format)
	}
	return q
}

// Usage returns the metered use over a period.
func (c *Client) Usage(ctx context.Context, o UsageOptions) (*api.UsageReport, error) {
	var out api.UsageReport
	_, err := c.do(ctx, http.MethodGet, c.url(o.query(""), "v1", "usage"), nil, &out)
	return &out, err
}

// UsageCSV returns the report as CSV; the caller closes it.
func (c *Client) UsageCSV(ctx context.Context, o UsageOptions) (io.ReadCloser, error) {
	req, err := c.newRequest(ctx, http.MethodGet, c.url(o.query("csv"), "v1", "usage"), nil, "")
	if err != nil {
		return nil, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Price returns the hourly price of a shape.
func (c *Client) Price(ctx context.Context, cpu string, memory string, spot bool) (*api.Price, error) {
	q := url.Values{"cpu": {cpu}, "memory": {memory}, "spot": {strconv.FormatBool(spot)}}
	var out api.Price
	_, err := c.do(ctx, http.MethodGet, c.url(q, "v1", "price"), nil, &out)
	return &out, err
}
