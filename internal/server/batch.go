package server

import (
	"bytes"
	"fmt"
	"io"
	"net/http"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
)

// MaxBatchCreate bounds the groups one batch-create call may ask for.
const MaxBatchCreate = 1000

// createGroups is POST /v1/groups:batch: many creates in one round trip.
// Every item is decoded, validated and created on its own; one bad item
// fails alone, with its error in its place of the answer, and the call
// itself succeeds (200) whenever the body as a whole could be read. The
// groups are stored in batched transactions and the scheduler is woken
// once for the batch, not once per group (Service.CreateGroups).
func (a *apiHandler) createGroups(w http.ResponseWriter, r *http.Request) error {
	b, _ := io.ReadAll(r.Body)
	var req api.BatchCreateRequest
	if err := decodeStrict(bytes.NewReader(b), &req); err != nil {
		return err
	}
	if len(req.Items) == 0 {
		return errdefs.Invalid("items: at least one group is required")
	}
	if len(req.Items) > MaxBatchCreate {
		return errdefs.Invalid(fmt.Sprintf("items: at most %d groups per call, got %d", MaxBatchCreate, len(req.Items)))
	}
	ctx := r.Context()
	reqs := make([]*api.CreateGroupRequest, len(req.Items))
	for i := range req.Items {
		reqs[i] = &req.Items[i]
	}
	groups, created, errs := a.svc.CreateGroups(ctx, callerFrom(ctx), reqs)
	out := api.BatchCreateResponse{Items: make([]api.BatchCreateResult, len(req.Items))}
	for i, err := range errs {
		res := &out.Items[i]
		if err != nil {
			status, code := errdefs.Class(err)
			if status >= 500 {
				a.log.Error("batch create item failed", "request", requestID(ctx), "item", i, "err", err)
			}
			res.Error = &api.Error{Code: code, Message: errdefs.Message(err), RequestID: requestID(ctx)}
			continue
		}
		res.Group = groups[i].Redacted() // registry passwords never leave the server
		res.Created = created[i]
		if created[i] {
			out.Created++
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
