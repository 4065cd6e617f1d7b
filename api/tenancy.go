package api

import "time"

// Spot strategies, as ECI names them.
const (
	SpotNone       = "NoSpot"
	SpotAsPriceGo  = "SpotAsPriceGo"
	SpotWithLimit  = "SpotWithPriceLimit"
	ReasonSpotGone = "SpotReclaimed"
	// EventSpotToBeReleased warns ahead of a reclaim (ECI's event name).
	EventSpotToBeReleased = "SpotToBeReleased"
)

// IsSpot reports whether a spot strategy asks for spot capacity.
func IsSpot(strategy string) bool {
	return strategy == SpotAsPriceGo || strategy == SpotWithLimit
}

// Account is a tenant. Every group belongs to exactly one account.
type Account struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Admin     bool      `json:"admin,omitempty"`
	Quota     Quota     `json:"quota"`
	CreatedAt time.Time `json:"createdAt"`
}

// Quota bounds what an account may hold at once. Zero means unlimited.
// Every group that exists (whatever its status) counts until deleted.
type Quota struct {
	MilliCPU int64 `json:"milliCpu,omitempty"`
	Memory   int64 `json:"memory,omitempty"`
	Groups   int   `json:"groups,omitempty"`
}

// AccountUsage is what an account holds now, against its quota.
type AccountUsage struct {
	AccountID string `json:"accountId"`
	Quota     Quota  `json:"quota"`
	MilliCPU  int64  `json:"milliCpu"`
	Memory    int64  `json:"memory"`
	Groups    int    `json:"groups"`
}

// AccessKey is one key pair of an account. The secret is only ever
// returned by the call that creates the key.
type AccessKey struct {
	ID        string    `json:"id"`
	Secret    string    `json:"secret,omitempty"`
	AccountID string    `json:"accountId"`
	Disabled  bool      `json:"disabled,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

// CreateAccountRequest is the body of POST /v1/accounts.
type CreateAccountRequest struct {
	Name  string `json:"name"`
	Quota Quota  `json:"quota,omitempty"`
}

// CreateAccountResult returns the new account and its first key.
type CreateAccountResult struct {
	Account Account   `json:"account"`
	Key     AccessKey `json:"key"`
}

// PriceTable prices per hour of one vCPU and of one GiB of memory, for on
// demand and spot capacity.
type PriceTable struct {
	Currency string    `json:"currency"`
	OnDemand UnitPrice `json:"onDemand"`
	Spot     UnitPrice `json:"spot"`
}

// UnitPrice is a price per hour.
type UnitPrice struct {
	VCPUHour float64 `json:"vcpuHour"`
	GiBHour  float64 `json:"gibHour"`
}

// Price is the hourly price of a group shape.
type Price struct {
	Currency  string  `json:"currency"`
	VCPU      float64 `json:"vcpu"`
	MemoryGiB float64 `json:"memoryGiB"`
	Spot      bool    `json:"spot,omitempty"`
	VCPUHour  float64 `json:"vcpuPerHour"`
	MemHour   float64 `json:"memoryPerHour"`
	Hourly    float64 `json:"hourly"`
}

// UsageLine is one group's metered use within a report's period.
type UsageLine struct {
	AccountID   string    `json:"accountId"`
	GroupID     string    `json:"groupId"`
	GroupName   string    `json:"groupName"`
	Spot        bool      `json:"spot,omitempty"`
	VCPU        float64   `json:"vcpu"`
	MemoryGiB   float64   `json:"memoryGiB"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
	Open        bool      `json:"open,omitempty"` // still running at report time
	Seconds     int64     `json:"seconds"`
	VCPUSeconds float64   `json:"vcpuSeconds"`
	GiBSeconds  float64   `json:"gibSeconds"`
	Cost        float64   `json:"cost"`
}

// UsageReport is the metered use of an account over [From, To).
type UsageReport struct {
	AccountID   string      `json:"accountId,omitempty"`
	From        time.Time   `json:"from"`
	To          time.Time   `json:"to"`
	Currency    string      `json:"currency"`
	Lines       []UsageLine `json:"lines"`
	VCPUSeconds float64     `json:"vcpuSeconds"`
	GiBSeconds  float64     `json:"gibSeconds"`
	Cost        float64     `json:"cost"`
}
