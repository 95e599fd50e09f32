package store

import (
	"context"

	"github.com/errandci/errand"
)

// ReportStore applies the reports a delegate sends together.
type ReportStore interface {
	// TaskReportBatch applies reports as TaskReport does, each decided on
	// its own: a stale lease, a refused transition or a missing task
	// fails that report alone. The reports of one task are applied in
	// their order. It returns one result per report, in their order.
	// Reports of many tasks share transactions (the engine commits the
	// reports that arrive together together), and each result is
	// durable when it returns.
	TaskReportBatch(ctx context.Context, reports []TaskReportParams) []TaskReportResult
}

// TaskReportResult is what became of one report of a TaskReportBatch.
type TaskReportResult struct {
	// Task is the task after the report; nil when Err is set.
	Task *errand.Task
	// Unchanged is set for a report of the state the task was already in
	// under the same lease: a retry, applied before.
	Unchanged bool
	// Err is why the report was refused (errand.ErrLeaseLost, …).
	Err error
}
