package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/errandci/errand"
)

// MaxReports bounds the reports of one call (POST
// /api/v1/delegates/{id}/reports, or an acquire that carries them).
const MaxReports = 256

// Report is one status report of a batch: a task's state under its
// lease, as StatusUpdate says it for one task.
type Report struct {
	TaskID string          `json:"task_id"`
	Lease  string          `json:"lease"`
	State  errand.State    `json:"state"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *errand.Error   `json:"error,omitempty"`
}

// ReportBatch is the body of POST /api/v1/delegates/{id}/reports, and
// the body an acquire may carry: the reports of tasks that just ended
// ride on the call that asks for the next ones.
type ReportBatch struct {
	Reports []*Report `json:"reports"`
}

// The statuses of a ReportResult.
const (
	// ReportApplied: the report changed the task.
	ReportApplied = "applied"
	// ReportUnchanged: the task was in that state under that lease
	// already; a retried report.
	ReportUnchanged = "unchanged"
	// ReportRefused: the report was not applied; Error says why
	// (lease_lost, forbidden, illegal_transition, not_found, invalid,
	// or a passing failure worth retrying).
	ReportRefused = "refused"
)

// ReportResult is the manager's answer to one report of a batch.
type ReportResult struct {
	TaskID string `json:"task_id"`
	Status string `json:"status"`
	// State is the task's state after the report, unless refused.
	State errand.State  `json:"state,omitempty"`
	Error *errand.Error `json:"error,omitempty"`
}

// Err returns why the report was refused, nil when it was applied or
// unchanged: errors.Is(r.Err(), ErrLeaseLost) works.
func (r *ReportResult) Err() error {
	if r.Status != ReportRefused {
		return nil
	}
	if r.Error == nil {
		return errand.Errorf(errand.CodeInternal, "report on task %s refused without a reason", r.TaskID)
	}
	return r.Error
}

// ReportResults answers a ReportBatch: one result per report, in its
// order.
type ReportResults struct {
	Kind    string          `json:"kind"`
	Results []*ReportResult `json:"results"`
}

// Reports sends many status reports in one call and returns one result
// per report, in their order. Each report is decided on its own: a lost
// lease refuses that report only. A repeated report is applied once, so
// its caller may retry the call.
func (c *HTTP) Reports(ctx context.Context, delegateID string, reports []*Report) ([]*ReportResult, error) {
	var out ReportResults
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/delegates/" + url.PathEscape(delegateID) + "/reports",
		body: &ReportBatch{Reports: reports}, out: &out, policy: sendOnce})
	if err != nil {
		return nil, fmt.Errorf("send %d reports for delegate %s: %w", len(reports), delegateID, err)
	}
	if len(out.Results) != len(reports) {
		return nil, errand.Errorf(errand.CodeInternal, "manager answered %d reports with %d results", len(reports), len(out.Results))
	}
	return out.Results, nil
}
