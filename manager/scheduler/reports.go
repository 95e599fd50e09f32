package scheduler

import (
	"context"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// ReportResult is what became of one report of Reports.
type ReportResult struct {
	// Task is the task after the report; nil when Err is set.
	Task *errand.Task
	// Unchanged is set for a retried report: the task was in that state
	// under that lease already.
	Unchanged bool
	// Err is why the report was refused.
	Err error
}

// Reports records the reports a delegate sends together (see Report),
// each decided on its own, the reports of one task in their order, and
// returns one result per report. They share transactions with each
// other and with the reports other delegates send meanwhile.
func (s *Scheduler) Reports(ctx context.Context, delegateID string, reports []Report) []ReportResult {
	s.Heard(delegateID)
	out := make([]ReportResult, len(reports))
	params := make([]store.TaskReportParams, 0, len(reports))
	at := make([]int, 0, len(reports))
	now := s.now()
	for i, r := range reports {
		result, e, err := s.maskReport(ctx, r.TaskID, r.Result, r.Error)
		if err != nil {
			out[i].Err = fmt.Errorf("report %s on task %s: %w", r.State, r.TaskID, err)
			continue
		}
		params = append(params, store.TaskReportParams{
			TaskID: r.TaskID, DelegateID: delegateID, LeaseToken: r.LeaseToken,
			State: r.State, Result: result, Error: e, Now: now,
		})
		at = append(at, i)
	}
	debug := s.log.IsLevelEnabled(logrus.DebugLevel)
	for j, res := range s.store.TaskReportBatch(ctx, params) {
		i := at[j]
		r := reports[i]
		out[i] = ReportResult{Task: res.Task, Unchanged: res.Unchanged, Err: res.Err}
		if res.Err != nil {
			out[i].Err = fmt.Errorf("report %s on task %s: %w", r.State, r.TaskID, res.Err)
		} else if debug && res.Task.State.Terminal() && !res.Unchanged {
			s.log.WithFields(logrus.Fields{"task_id": r.TaskID, "delegate_id": delegateID, "state": res.Task.State}).Debug("task ended")
		}
	}
	return out
}
