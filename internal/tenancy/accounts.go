package tenancy

import (
	"context"
	"errors"
	"fmt"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/pki"
	"github.com/skiffhq/skiff/internal/store"
)

// MaxKeysPerAccount bounds the key pairs of one account (ECI/RAM allow 2;
// we allow a few more for rotation overlap).
const MaxKeysPerAccount = 5

func newKey(accountID string) *store.AccessKey {
	return &store.AccessKey{ID: "AK" + pki.RandomHex(10), Secret: pki.RandomHex(20), AccountID: accountID}
}

func toAPIKey(k *store.AccessKey, withSecret bool) api.AccessKey {
	out := api.AccessKey{ID: k.ID, AccountID: k.AccountID, Disabled: k.Disabled, CreatedAt: k.CreatedAt}
	if withSecret {
		out.Secret = k.Secret
	}
	return out
}

// CreateAccount makes an account (its id is its name) with a first key.
func (m *Manager) CreateAccount(ctx context.Context, req api.CreateAccountRequest) (*api.CreateAccountResult, error) {
	if err := api.ValidateName(req.Name); err != nil {
		return nil, errdefs.Invalid("account " + err.Error())
	}
	if err := validQuota(req.Quota); err != nil {
		return nil, err
	}
	now := m.now().UTC()
	k := newKey(req.Name)
	k.CreatedAt = now
	a := &store.Account{ID: req.Name, Name: req.Name, CreatedAt: now}
	if err := m.store.CreateAccount(ctx, a, k); err != nil {
		if errors.Is(err, errdefs.ErrConflict) {
			return nil, errdefs.Userf(errdefs.ErrConflict, fmt.Sprintf("account %q already exists", req.Name))
		}
		return nil, err
	}
	if req.Quota != (api.Quota{}) {
		if err := m.store.PutQuota(ctx, a.ID, req.Quota); err != nil {
			return nil, err
		}
	}
	return &api.CreateAccountResult{
		Account: api.Account{ID: a.ID, Name: a.Name, Quota: req.Quota, CreatedAt: now},
		Key:     toAPIKey(k, true),
	}, nil
}

// GetAccount returns an account with its quota.
func (m *Manager) GetAccount(ctx context.Context, id string) (*api.Account, error) {
	a, err := m.store.GetAccount(ctx, id)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil, errdefs.Userf(errdefs.ErrNotFound, fmt.Sprintf("account %q not found", id))
		}
		return nil, err
	}
	q, err := m.store.GetQuota(ctx, id)
	if err != nil {
		return nil, err
	}
	return &api.Account{ID: a.ID, Name: a.Name, Admin: a.Admin, Quota: q, CreatedAt: a.CreatedAt}, nil
}

// ListAccounts returns every account.
func (m *Manager) ListAccounts(ctx context.Context) ([]api.Account, error) {
	list, err := m.store.ListAccounts(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Account, 0, len(list))
	for _, a := range list {
		q, err := m.store.GetQuota(ctx, a.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, api.Account{ID: a.ID, Name: a.Name, Admin: a.Admin, Quota: q, CreatedAt: a.CreatedAt})
	}
	return out, nil
}

// ListKeys returns an account's keys, without secrets.
func (m *Manager) ListKeys(ctx context.Context, accountID string) ([]api.AccessKey, error) {
	if _, err := m.GetAccount(ctx, accountID); err != nil {
		return nil, err
	}
	keys, err := m.store.ListAccessKeys(ctx, accountID)
	if err != nil {
		return nil, err
	}
	out := make([]api.AccessKey, 0, len(keys))
	for _, k := range keys {
		out = append(out, toAPIKey(k, false))
	}
	return out, nil
}

// CreateKey adds a key pair to an account; the secret is in the result only.
func (m *Manager) CreateKey(ctx context.Context, accountID string) (*api.AccessKey, error) {
	keys, err := m.ListKeys(ctx, accountID)
	if err != nil {
		return nil, err
	}
	if len(keys) >= MaxKeysPerAccount {
		return nil, errdefs.Userf(errdefs.ErrQuota, fmt.Sprintf("account %q already has %d access keys, the most allowed; delete or rotate one", accountID, len(keys)))
	}
	k := newKey(accountID)
	k.CreatedAt = m.now().UTC()
	if err := m.store.CreateAccessKey(ctx, k); err != nil {
		return nil, err
	}
	out := toAPIKey(k, true)
	return &out, nil
}

// SetKeyDisabled disables or re-enables a key. accountID, when not empty,
// must own the key.
func (m *Manager) SetKeyDisabled(ctx context.Context, accountID, keyID string, disabled bool) (*api.AccessKey, error) {
	k, err := m.store.UpdateAccessKey(ctx, keyID, func(k *store.AccessKey) error {
		if accountID != "" && k.AccountID != accountID {
			return errdefs.ErrNotFound
		}
		k.Disabled = disabled
		return nil
	})
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil, errdefs.Userf(errdefs.ErrNotFound, fmt.Sprintf("access key %q not found", keyID))
		}
		return nil, err
	}
	out := toAPIKey(k, false)
	return &out, nil
}

// RotateKey replaces a key with a new one: the new key is created and the
// old disabled in one transaction, so there is never a moment with both
// or neither valid.
func (m *Manager) RotateKey(ctx context.Context, accountID, keyID string) (*api.AccessKey, error) {
	old, err := m.store.GetAccessKey(ctx, keyID)
	if err != nil || (accountID != "" && old.AccountID != accountID) {
		return nil, errdefs.Userf(errdefs.ErrNotFound, fmt.Sprintf("access key %q not found", keyID))
	}
	k := newKey(old.AccountID)
	k.CreatedAt = m.now().UTC()
	if err := m.store.RotateAccessKey(ctx, keyID, k); err != nil {
		return nil, err
	}
	out := toAPIKey(k, true)
	return &out, nil
}

// SetQuota replaces an account's quota.
func (m *Manager) SetQuota(ctx context.Context, accountID string, q api.Quota) error {
	if err := validQuota(q); err != nil {
		return err
	}
	if err := m.store.PutQuota(ctx, accountID, q); err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return errdefs.Userf(errdefs.ErrNotFound, fmt.Sprintf("account %q not found", accountID))
		}
		return err
	}
	return nil
}

func validQuota(q api.Quota) error {
	if q.MilliCPU < 0 || q.Memory < 0 || q.Groups < 0 {
		return errdefs.Invalid("quota amounts must not be negative (0 means unlimited)")
	}
	return nil
}

// LookupKey returns an enabled key and whether its account is an admin;
// ErrUnauthorized when the key is unknown or disabled.
func (m *Manager) LookupKey(ctx context.Context, keyID string) (*store.AccessKey, bool, error) {
	k, err := m.store.GetAccessKey(ctx, keyID)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil, false, errdefs.Userf(errdefs.ErrUnauthorized, "the access key "+keyID+" is unknown or disabled")
		}
		return nil, false, err
	}
	if k.Disabled {
		return nil, false, errdefs.Userf(errdefs.ErrUnauthorized, "the access key "+keyID+" is unknown or disabled")
	}
	a, err := m.store.GetAccount(ctx, k.AccountID)
	if err != nil {
		return nil, false, errdefs.Userf(errdefs.ErrUnauthorized, "the account of access key "+keyID+" is gone")
	}
	return k, a.Admin, nil
}
