// Package hostapi holds the wire types between the server and host agents.
//
// An agent joins once with a join token (POST /join, server TLS only), and
// gets a client certificate. From then on it dials the server's agent port
// with mutual TLS and runs one yamux session over the connection. Both ends
// serve HTTP on that session, so hosts behind NAT need no inbound port:
//
//	agent → server   POST /agent/v1/hello         Hello → HelloReply
//	                 GET  /agent/v1/assignments   NDJSON of Assignment
//	                 POST /agent/v1/status        StatusReport
//	                 POST /agent/v1/pool          PoolReport → PoolReply (targets)
//	server → agent   /host/v1/...                 logs, exec, metrics, images
//	                 PUT  /host/v1/pool/targets   api.PoolTargets
package hostapi

import (
	"time"

	"github.com/skiffhq/skiff/api"
)

// JoinRequest asks the server for a host identity.
type JoinRequest struct {
	Token string `json:"token"`
	Name  string `json:"name"`
	// CSR is a PEM certificate request for the agent's key.
	CSR string `json:"csr"`
}

// JoinReply carries the host's identity and certificate.
type JoinReply struct {
	HostID string `json:"hostId"`
	Cert   string `json:"cert"` // PEM, signed by the cluster CA
	CA     string `json:"ca"`   // PEM of the cluster CA
}

// Hello is sent on every connect.
type Hello struct {
	Name     string            `json:"name"`
	Address  string            `json:"address"`
	Zone     string            `json:"zone,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Capacity api.Resources     `json:"capacity"`
	Runtime  string            `json:"runtime"`
	Version  string            `json:"version"`
	// PodCIDR is the agent's configured range, if it has one of its own.
	PodCIDR string `json:"podCidr,omitempty"`
}

// HelloReply tells the agent its pod range.
type HelloReply struct {
	HostID  string `json:"hostId"`
	PodCIDR string `json:"podCidr"`
}

// Assignment is one line of the assignments stream. The first lines list
// every group assigned to the host, then a line of type SYNCED, then
// changes as they happen.
type Assignment struct {
	Type  string     `json:"type"` // ADDED, MODIFIED, DELETED, SYNCED
	Group *api.Group `json:"group,omitempty"`
}

// StatusReport carries observed state of some groups.
type StatusReport struct {
	Updates []GroupUpdate `json:"updates"`
}

// GroupUpdate is the observed state of one group on the host.
type GroupUpdate struct {
	ID             string                `json:"id"`
	Status         api.Status            `json:"status"`
	Reason         string                `json:"reason,omitempty"`
	Message        string                `json:"message,omitempty"`
	IP             string                `json:"ip,omitempty"`
	StartedAt      *time.Time            `json:"startedAt,omitempty"`
	FinishedAt     *time.Time            `json:"finishedAt,omitempty"`
	Containers     []api.ContainerStatus `json:"containers,omitempty"`
	InitContainers []api.ContainerStatus `json:"initContainers,omitempty"`
	// Removed says the host has torn the group down after a delete.
	Removed bool        `json:"removed,omitempty"`
	Events  []api.Event `json:"events,omitempty"`
	// RestartGeneration is the restart request the host has acted on.
	RestartGeneration int64 `json:"restartGeneration,omitempty"`
	// SpecGeneration is the group spec the host has acted on.
	SpecGeneration int64 `json:"specGeneration,omitempty"`
}

// PoolReport is the agent's warm pool, sent every few seconds. The reply
// carries the control plane's current targets, so an agent connected to
// a replica that is not the leader still follows the leader's plan.
type PoolReport struct {
	Classes []api.PoolClassStatus `json:"classes"`
}

// PoolReply carries the pool targets the control plane set for the host
// (empty: none, the pool drains to the agent's own --pool-size).
type PoolReply struct {
	Targets api.PoolTargets `json:"targets"`
	// Images are the images of the groups the control plane expects on
	// this host (the rootfs of its warm pool): the agent pulls those it
	// lacks while idle.
	Images []string `json:"images,omitempty"`
}
