// Package eci is skiff's Alibaba Cloud ECI-compatible front: OpenAPI
// version 2018-08-08 as the official SDKs speak it (RPC style, flattened
// parameters in the query or a form body, signature version 1.0, JSON
// replies with a RequestId, ECI's error codes). It only decodes, validates
// and translates: every action is a call into the one service layer that
// also serves the native API, through the Backend interface.
package eci

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/store"
)

// Version is the ECI API version served.
const Version = "2018-08-08"

// Caller is who signed a request.
type Caller struct {
	AccountID string
	Admin     bool
}

// ListOptions filters a group listing.
type ListOptions struct {
	Name      string
	Labels    map[string]string
	Statuses  []api.Status
	IDs       []string
	Limit     int
	NextToken string
}

// LogOptions selects log lines.
type LogOptions struct {
	Container  string
	Tail       int // -1: all
	Since      string
	Timestamps bool
	Previous   bool
}

// Backend is the service layer as this front needs it.
type Backend interface {
	CreateGroup(ctx context.Context, c Caller, req *api.CreateGroupRequest) (*api.Group, bool, error)
	GetGroup(ctx context.Context, c Caller, id string) (*api.Group, error)
	ListGroups(ctx context.Context, c Caller, o ListOptions) (api.List[*api.Group], error)
	DeleteGroup(ctx context.Context, c Caller, id string) (*api.Group, error)
	RestartGroup(ctx context.Context, c Caller, id string) (*api.Group, error)
	// UpdateGroup changes a group's record through fn (tags).
	UpdateGroup(ctx context.Context, c Caller, id string, fn func(g *api.Group) error) (*api.Group, error)
	// UpdateGroupSpec is UpdateContainerGroup: see api.UpdateGroupRequest.
	UpdateGroupSpec(ctx context.Context, c Caller, id string, req *api.UpdateGroupRequest) (*api.Group, error)
	Events(ctx context.Context, c Caller, id string) ([]api.Event, error)
	Logs(ctx context.Context, c Caller, id string, o LogOptions) (string, error)
	Exec(ctx context.Context, c Caller, id string, req api.ExecRequest) (*api.ExecResult, error)
	// ExecWS serves an interactive exec on w (a WebSocket upgrade).
	ExecWS(w http.ResponseWriter, r *http.Request, c Caller, id string, q url.Values) error
	Metrics(ctx context.Context, c Caller, id string) (*api.Metrics, error)
	Hosts(ctx context.Context) ([]*api.Host, error)
	AccountUsage(ctx context.Context, c Caller) (*api.AccountUsage, error)
	Price(milliCPU, memory int64, spot bool) api.Price
}

// Keys finds access keys.
type Keys interface {
	LookupKey(ctx context.Context, keyID string) (*store.AccessKey, bool, error)
}

// Tokens keeps the one-time tokens of WebSocket execs.
type Tokens interface {
	PutExecToken(ctx context.Context, token string, t *store.ExecToken, ttl time.Duration) error
	TakeExecToken(ctx context.Context, token string) (*store.ExecToken, error)
}

// Config wires a Handler.
type Config struct {
	Backend Backend
	Keys    Keys
	Tokens  Tokens
	// ImageCaches serves the image cache actions; nil answers them with
	// UnsupportedOperation.
	ImageCaches ImageCacheBackend
	// Region is the one region this skiff is (default "skiff").
	Region string
	Logger *slog.Logger
	Now    func() time.Time
	// NewID makes request ids and tokens.
	NewID func(prefix string) string
}

// Handler serves the ECI RPC API.
type Handler struct {
	cfg    Config
	nonces nonces
}

// New returns a handler.
func New(cfg Config) *Handler {
	if cfg.Region == "" {
		cfg.Region = "skiff"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Handler{cfg: cfg}
}

type action func(ctx context.Context, c Caller, p *params, r *http.Request) (map[string]any, error)

func (h *Handler) actions() map[string]action {
	return map[string]action{
		"CreateContainerGroup":              h.createContainerGroup,
		"DescribeContainerGroups":           h.describeContainerGroups,
		"DescribeContainerGroupStatus":      h.describeContainerGroupStatus,
		"DeleteContainerGroup":              h.deleteContainerGroup,
		"RestartContainerGroup":             h.restartContainerGroup,
		"UpdateContainerGroup":              h.updateContainerGroup,
		"DescribeContainerLog":              h.describeContainerLog,
		"ExecContainerCommand":              h.execContainerCommand,
		"DescribeContainerGroupEvents":      h.describeContainerGroupEvents,
		"DescribeContainerGroupMetric":      h.describeContainerGroupMetric,
		"DescribeMultiContainerGroupMetric": h.describeMultiContainerGroupMetric,
		"DescribeContainerGroupPrice":       h.describeContainerGroupPrice,
		"DescribeRegions":                   h.describeRegions,
		"DescribeAvailableResource":         h.describeAvailableResource,
		"ListUsage":                         h.listUsage,
		"TagResources":                      h.tagResources,
		"UntagResources":                    h.untagResources,
		"ListTagResources":                  h.listTagResources,
		"CreateImageCache":                  h.createImageCache,
		"DescribeImageCaches":               h.describeImageCaches,
		"UpdateImageCache":                  h.updateImageCache,
		"DeleteImageCache":                  h.deleteImageCache,
	}
}

// ExecWSPath is where the WebSocketUri of ExecContainerCommand points.
const ExecWSPath = "/eci/exec/ws"

// ServeHTTP serves one RPC call: GET or POST on "/".
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rid := strings.ToUpper(h.newID(""))
	defer func() {
		if p := recover(); p != nil {
			h.cfg.Logger.Error("eci handler panic", "panic", p, "request", rid)
			writeReply(w, http.StatusInternalServerError, errBody(rid, fromErr(fmt.Errorf("panic: %v", p))))
		}
	}()
	if r.URL.Path == ExecWSPath {
		if err := h.serveExecWS(w, r); err != nil {
			e := fromErr(err)
			writeReply(w, e.Status, errBody(rid, e))
		}
		return
	}
	out, err := h.serve(r)
	if err != nil {
		e := fromErr(err)
		if e.Status >= 500 {
			h.cfg.Logger.Error("eci request failed", "request", rid, "err", err)
		}
		writeReply(w, e.Status, errBody(rid, e))
		return
	}
	out["RequestId"] = rid
	writeReply(w, http.StatusOK, out)
}

func (h *Handler) newID(prefix string) string {
	if h.cfg.NewID != nil {
		return h.cfg.NewID(prefix)
	}
	return prefix + fmt.Sprintf("%d", h.cfg.Now().UnixNano())
}

func errBody(rid string, e *Error) map[string]any {
	return map[string]any{"RequestId": rid, "HostId": "skiff", "Code": e.Code, "Message": e.Message, "Recommend": ""}
}

func writeReply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (h *Handler) serve(r *http.Request) (map[string]any, error) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		return nil, &Error{Status: http.StatusMethodNotAllowed, Code: "UnsupportedHTTPMethod", Message: "Use GET or POST."}
	}
	if r.URL.Path != "/" && r.URL.Path != "" {
		return nil, &Error{Status: http.StatusNotFound, Code: "InvalidAction.NotFound", Message: fmt.Sprintf("No such path %q: the ECI API is served at \"/\" and the native API under /v1.", r.URL.Path)}
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, &Error{Status: http.StatusBadRequest, Code: "InvalidParameter", Message: "The query string is not well formed."}
	}
	var form url.Values
	var body []byte
	if r.Method == http.MethodPost && r.Body != nil {
		b, err := io.ReadAll(io.LimitReader(r.Body, maxTotalBytes+1))
		body = b
		if err != nil {
			return nil, &Error{Status: http.StatusBadRequest, Code: "InvalidParameter", Message: "The request body could not be read."}
		}
		if len(b) > maxTotalBytes {
			return nil, &Error{Status: http.StatusBadRequest, Code: "InvalidParameter.TooLarge", Message: "The request body is too large."}
		}
		if len(b) > 0 {
			ct := r.Header.Get("Content-Type")
			if ct != "" && !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
				return nil, &Error{Status: http.StatusBadRequest, Code: "InvalidParameter", Message: "The body must be application/x-www-form-urlencoded."}
			}
			if form, err = url.ParseQuery(string(b)); err != nil {
				return nil, &Error{Status: http.StatusBadRequest, Code: "InvalidParameter", Message: "The form body is not well formed."}
			}
		}
	}
	m, perr := parseParams(query, form)
	if perr != nil {
		return nil, perr
	}
	var caller Caller
	var aerr error
	if auth := r.Header.Get("Authorization"); strings.HasPrefix(auth, SignatureV3+" ") {
		// The current SDKs' default (signature_v3.go): Action and Version
		// travel in headers.
		caller, aerr = h.authenticateV3(r.Context(), r, query, body, auth)
		if aerr == nil {
			if m["Action"] == "" {
				m["Action"] = r.Header.Get("x-acs-action")
			}
			if m["Version"] == "" {
				m["Version"] = r.Header.Get("x-acs-version")
			}
		}
	} else {
		caller, aerr = h.authenticate(r.Context(), r.Method, m)
	}
	if aerr != nil {
		return nil, aerr
	}
	if v := m["Version"]; v != Version {
		return nil, errVersion
	}
	name := m["Action"]
	act := h.actions()[name]
	if act == nil {
		return nil, noAction(name)
	}
	return act(r.Context(), caller, newParams(m), r)
}

// authenticate checks signature 1.0, the timestamp window and the nonce.
func (h *Handler) authenticate(ctx context.Context, method string, m map[string]string) (Caller, error) {
	for _, k := range []string{"AccessKeyId", "Signature", "SignatureNonce", "Timestamp"} {
		if m[k] == "" {
			return Caller{}, missing(k)
		}
	}
	if m["SignatureMethod"] != "HMAC-SHA1" || (m["SignatureVersion"] != "" && m["SignatureVersion"] != "1.0") {
		return Caller{}, errMethod
	}
	if t := m["SignatureType"]; t != "" {
		return Caller{}, errMethod
	}
	ts, err := time.Parse("2006-01-02T15:04:05Z", m["Timestamp"])
	if err != nil {
		return Caller{}, errBadTimestamp
	}
	now := h.cfg.Now()
	if d := now.Sub(ts); d > MaxSkew || d < -MaxSkew {
		return Caller{}, errTimestamp
	}
	if n := len(m["SignatureNonce"]); n > 128 {
		return Caller{}, invalid("SignatureNonce", "at most 128 characters")
	}
	key, admin, err := h.cfg.Keys.LookupKey(ctx, m["AccessKeyId"])
	if err != nil {
		if e := fromErr(err); e.Status < 500 {
			return Caller{}, errKey
		}
		return Caller{}, err
	}
	want := Sign(key.Secret, StringToSign(method, m))
	if !hmac.Equal([]byte(want), []byte(m["Signature"])) {
		return Caller{}, errSignature
	}
	if !h.nonces.use(key.ID+"/"+m["SignatureNonce"], now) {
		return Caller{}, errNonceUsed
	}
	return Caller{AccountID: key.AccountID, Admin: admin}, nil
}
