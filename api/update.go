package api

// UpdateGroupRequest is the body of PATCH /v1/groups/{id} (and what ECI's
// UpdateContainerGroup translates to). A field left out keeps what the
// group has. An update that changes what runs — containers, init
// containers, volumes, the group's vCPU or memory, DNS, registry
// credentials — is applied by restarting the group with the new spec on
// its host: it goes through status Updating and keeps its id and IP.
// Tags, restart policy, deadline and grace period change in place.
type UpdateGroupRequest struct {
	// Containers replaces the group's containers. With Incremental set,
	// each one is instead merged by name into the group's container of
	// that name: its non-empty fields replace that container's, its env
	// variables are set one by one; a new name adds a container.
	Containers     []Container `json:"containers,omitempty"`
	InitContainers []Container `json:"initContainers,omitempty"`
	Incremental    bool        `json:"incremental,omitempty"`
	// Volumes replaces the group's volumes (all of them).
	Volumes []Volume `json:"volumes,omitempty"`

	CPU    *CPU      `json:"cpu,omitempty"`
	Memory *Quantity `json:"memory,omitempty"`

	DNSConfig                *DNSConfig                `json:"dnsConfig,omitempty"`
	ImageRegistryCredentials []ImageRegistryCredential `json:"imageRegistryCredentials,omitempty"`

	// Tags replaces the group's tags.
	Tags                          map[string]string `json:"tags,omitempty"`
	RestartPolicy                 RestartPolicy     `json:"restartPolicy,omitempty"`
	ActiveDeadlineSeconds         *int64            `json:"activeDeadlineSeconds,omitempty"`
	TerminationGracePeriodSeconds *int64            `json:"terminationGracePeriodSeconds,omitempty"`
}
