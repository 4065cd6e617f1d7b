package server

import (
	"fmt"
	"net/http"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/tenancy"
)

// tenancyRoutes are the native API's accounts, keys, quotas, usage and
// price routes. Account administration is for admins; an account may read
// itself and manage its own keys. Another account's records answer 404,
// as its groups do.
func (a *apiHandler) tenancyRoutes() []route {
	return []route{
		{pattern: "POST /v1/accounts", h: a.createAccount},
		{pattern: "GET /v1/accounts", h: a.listAccounts},
		{pattern: "GET /v1/accounts/{account}", h: a.getAccount},
		{pattern: "PUT /v1/accounts/{account}/quota", h: a.setQuota},
		{pattern: "GET /v1/accounts/{account}/usage", h: a.accountUsage},
		{pattern: "GET /v1/accounts/{account}/keys", h: a.listKeys},
		{pattern: "POST /v1/accounts/{account}/keys", h: a.createKey},
		{pattern: "POST /v1/accounts/{account}/keys/{key}/disable", h: a.keyAction("disable")},
		{pattern: "POST /v1/accounts/{account}/keys/{key}/enable", h: a.keyAction("enable")},
		{pattern: "POST /v1/accounts/{account}/keys/{key}/rotate", h: a.keyAction("rotate")},
		{pattern: "GET /v1/usage", h: a.usageReport},
		{pattern: "GET /v1/price", h: a.price},
	}
}

func (a *apiHandler) tenancy() (*tenancy.Manager, error) {
	if a.svc.ten == nil {
		return nil, errdefs.Userf(errdefs.ErrNotSupported, "tenancy is not enabled on this server")
	}
	return a.svc.ten, nil
}

func requireAdmin(c Caller) error {
	if !c.Admin {
		return errdefs.Userf(errdefs.ErrForbidden, "only an admin account may do this")
	}
	return nil
}

// ownAccount checks that the caller may act on account id.
func ownAccount(c Caller, id string) error {
	if c.Admin || c.AccountID == id {
		return nil
	}
	return errdefs.Userf(errdefs.ErrNotFound, fmt.Sprintf("account %q not found", id))
}

func (a *apiHandler) createAccount(w http.ResponseWriter, r *http.Request) error {
	ten, err := a.tenancy()
	if err != nil {
		return err
	}
	if err := requireAdmin(callerFrom(r.Context())); err != nil {
		return err
	}
	var req api.CreateAccountRequest
	if err := decodeStrict(r.Body, &req); err != nil {
		return err
	}
	res, err := ten.CreateAccount(r.Context(), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, res)
	return nil
}

func (a *apiHandler) listAccounts(w http.ResponseWriter, r *http.Request) error {
	ten, err := a.tenancy()
	if err != nil {
		return err
	}
	if err := requireAdmin(callerFrom(r.Context())); err != nil {
		return err
	}
	list, err := ten.ListAccounts(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.List[api.Account]{Items: list, Total: len(list)})
	return nil
}

func (a *apiHandler) getAccount(w http.ResponseWriter, r *http.Request) error {
	ten, err := a.tenancy()
	if err != nil {
		return err
	}
	id := r.PathValue("account")
	if err := ownAccount(callerFrom(r.Context()), id); err != nil {
		return err
	}
	acct, err := ten.GetAccount(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, acct)
	return nil
}

func (a *apiHandler) setQuota(w http.ResponseWriter, r *http.Request) error {
	ten, err := a.tenancy()
	if err != nil {
		return err
	}
	if err := requireAdmin(callerFrom(r.Context())); err != nil {
		return err
	}
	var q api.Quota
	if err := decodeStrict(r.Body, &q); err != nil {
		return err
	}
	id := r.PathValue("account")
	if err := ten.SetQuota(r.Context(), id, q); err != nil {
		return err
	}
	acct, err := ten.GetAccount(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, acct)
	return nil
}

func (a *apiHandler) accountUsage(w http.ResponseWriter, r *http.Request) error {
	ten, err := a.tenancy()
	if err != nil {
		return err
	}
	id := r.PathValue("account")
	if err := ownAccount(callerFrom(r.Context()), id); err != nil {
		return err
	}
	if _, err := ten.GetAccount(r.Context(), id); err != nil {
		return err
	}
	u, err := ten.Usage(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, u)
	return nil
}

func (a *apiHandler) listKeys(w http.ResponseWriter, r *http.Request) error {
	ten, err := a.tenancy()
	if err != nil {
		return err
	}
	id := r.PathValue("account")
	if err := ownAccount(callerFrom(r.Context()), id); err != nil {
		return err
	}
	keys, err := ten.ListKeys(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.List[api.AccessKey]{Items: keys, Total: len(keys)})
	return nil
}

func (a *apiHandler) createKey(w http.ResponseWriter, r *http.Request) error {
	ten, err := a.tenancy()
	if err != nil {
		return err
	}
	id := r.PathValue("account")
	if err := ownAccount(callerFrom(r.Context()), id); err != nil {
		return err
	}
	k, err := ten.CreateKey(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, k)
	return nil
}

func (a *apiHandler) keyAction(op string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		ten, err := a.tenancy()
		if err != nil {
			return err
		}
		c := callerFrom(r.Context())
		id, key := r.PathValue("account"), r.PathValue("key")
		if err := ownAccount(c, id); err != nil {
			return err
		}
		var k *api.AccessKey
		switch op {
		case "disable":
			k, err = ten.SetKeyDisabled(r.Context(), id, key, true)
		case "enable":
			k, err = ten.SetKeyDisabled(r.Context(), id, key, false)
		default:
			k, err = ten.RotateKey(r.Context(), id, key)
		}
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, k)
		return nil
	}
}

// usageReport meters an account over a period: from and to are RFC 3339
// times (default: the last 24 hours); format=csv answers CSV. Admins may
// name any account, or "*" for every account.
func (a *apiHandler) usageReport(w http.ResponseWriter, r *http.Request) error {
	ten, err := a.tenancy()
	if err != nil {
		return err
	}
	c := callerFrom(r.Context())
	q := r.URL.Query()
	acct := q.Get("account")
	switch {
	case acct == "":
		acct = c.AccountID
	case acct == "*":
		if err := requireAdmin(c); err != nil {
			return err
		}
		acct = ""
	default:
		if err := ownAccount(c, acct); err != nil {
			return err
		}
	}
	to := time.Now().UTC()
	from := to.Add(-24 * time.Hour)
	if s := q.Get("from"); s != "" {
		if from, err = time.Parse(time.RFC3339, s); err != nil {
			return errdefs.Invalid("from must be an RFC 3339 time, e.g. 2024-01-02T00:00:00Z")
		}
	}
	if s := q.Get("to"); s != "" {
		if to, err = time.Parse(time.RFC3339, s); err != nil {
			return errdefs.Invalid("to must be an RFC 3339 time, e.g. 2024-01-03T00:00:00Z")
		}
	}
	groups, _, err := a.svc.store.ListGroups(r.Context())
	if err != nil {
		return err
	}
	rep, err := ten.Report(r.Context(), acct, groups, from, to)
	if err != nil {
		return err
	}
	switch q.Get("format") {
	case "", "json":
		writeJSON(w, http.StatusOK, rep)
	case "csv":
		w.Header().Set("Content-Type", "text/csv")
		w.WriteHeader(http.StatusOK)
		return tenancy.WriteCSV(w, rep)
	default:
		return errdefs.Invalid("format must be json or csv")
	}
	return nil
}

func (a *apiHandler) price(w http.ResponseWriter, r *http.Request) error {
	ten, err := a.tenancy()
	if err != nil {
		return err
	}
	q := r.URL.Query()
	cpu, err := api.ParseCPU(q.Get("cpu"))
	if err != nil || cpu <= 0 || cpu > api.MaxMilliCPU {
		return errdefs.Invalid("cpu must be a vCPU amount such as 2 or 500m")
	}
	mem, err := api.ParseQuantity(q.Get("memory"))
	if err != nil || mem <= 0 || mem > api.MaxMemory {
		return errdefs.Invalid("memory must be a quantity such as 4Gi")
	}
	spot, err := parseBool(q.Get("spot"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ten.Price(cpu, int64(mem), spot))
	return nil
}
