package api

// BatchCreateRequest is the body of POST /v1/groups:batch: up to 1000
// create requests handled in one call, each on its own.
type BatchCreateRequest struct {
	Items []CreateGroupRequest `json:"items"`
}

// BatchCreateResult is the outcome of one item of a batch create, in the
// request's order: the group (Created false when its client token matched
// an earlier create), or the error that item alone met.
type BatchCreateResult struct {
	Group   *Group `json:"group,omitempty"`
	Created bool   `json:"created,omitempty"`
	Error   *Error `json:"error,omitempty"`
}

// BatchCreateResponse answers a batch create.
type BatchCreateResponse struct {
	Items   []BatchCreateResult `json:"items"`
	Created int                 `json:"created"`
}
