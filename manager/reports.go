package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/manager/scheduler"
)

// decodeReportBatch reads the body of a batch of reports. The call as a
// whole is refused when the body is not a batch or carries more than
// client.MaxReports; a report that is malformed on its own is refused
// alone: refused[i] says why report i is not applied.
func decodeReportBatch(data []byte) (reports []*client.Report, refused []error, err error) {
	var b client.ReportBatch
	if err := httphelper.Unmarshal(data, &b); err != nil {
		return nil, nil, err
	}
	if len(b.Reports) > client.MaxReports {
		return nil, nil, errand.Errorf(errand.CodeInvalid, "reports: %d reports, more than the %d one call may carry", len(b.Reports), client.MaxReports)
	}
	refused = make([]error, len(b.Reports))
	for i, r := range b.Reports {
		refused[i] = checkReport(r)
	}
	return b.Reports, refused, nil
}

// checkReport says what makes one report of a batch malformed.
func checkReport(r *client.Report) error {
	if r == nil {
		return errand.Errorf(errand.CodeInvalid, "a report must be an object")
	}
	var problems []string
	if !validID(r.TaskID) {
		problems = append(problems, fmt.Sprintf("task_id: must be a task id of 1 to %d characters", maxIDLen))
	}
	if r.Lease == "" {
		problems = append(problems, "lease: required")
	}
	if _, ok := errand.EventForReport(r.State); !ok {
		problems = append(problems, fmt.Sprintf("state: %q cannot be reported (want running, succeeded, failed, cancelled or timed_out)", r.State))
	}
	if len(r.Result) > 0 && !json.Valid(r.Result) {
		problems = append(problems, "result: not JSON")
	}
	return invalid("report", problems)
}

// readReportBatch decodes a request's batch of reports.
func (s *Server) readReportBatch(r *http.Request) ([]*client.Report, []error, error) {
	var raw json.RawMessage
	if err := httphelper.DecodeJSON(r, &raw, s.cfg.MaxBodyBytes); err != nil {
		return nil, nil, err
	}
	return decodeReportBatch(raw)
}

// sendReports applies many status reports of one delegate in one call
// and answers each.
func (s *Server) sendReports(w http.ResponseWriter, r *http.Request, p principal) error {
	id := r.PathValue("id")
	if err := ownDelegate(p, id); err != nil {
		return err
	}
	reports, refused, err := s.readReportBatch(r)
	if err != nil {
		return err
	}
	httphelper.WriteJSON(w, &client.ReportResults{
		Kind:    errand.KindReports,
		Results: s.applyReports(r.Context(), id, reports, refused),
	}, http.StatusOK)
	return nil
}

// applyReports has the scheduler apply the well-formed reports and
// returns one result per report.
func (s *Server) applyReports(ctx context.Context, delegateID string, reports []*client.Report, refused []error) []*client.ReportResult {
	out := make([]*client.ReportResult, len(reports))
	rs := make([]scheduler.Report, 0, len(reports))
	at := make([]int, 0, len(reports))
	for i, rep := range reports {
		if refused[i] != nil {
			out[i] = s.refusedReport(ctx, rep, refused[i])
			continue
		}
		rs = append(rs, scheduler.Report{TaskID: rep.TaskID, DelegateID: delegateID, LeaseToken: rep.Lease,
			State: rep.State, Result: rep.Result, Error: rep.Error})
		at = append(at, i)
	}
	for j, res := range s.sched.Reports(ctx, delegateID, rs) {
		rep := reports[at[j]]
		switch {
		case res.Err != nil:
			out[at[j]] = s.refusedReport(ctx, rep, res.Err)
		case res.Unchanged:
			out[at[j]] = &client.ReportResult{TaskID: rep.TaskID, Status: client.ReportUnchanged, State: res.Task.State}
		default:
			out[at[j]] = &client.ReportResult{TaskID: rep.TaskID, Status: client.ReportApplied, State: res.Task.State}
		}
	}
	return out
}

// refusedReport is the result of a report refused with err. An internal
// error shows only the operation id, as a refused request does, and is
// logged under it.
func (s *Server) refusedReport(ctx context.Context, rep *client.Report, err error) *client.ReportResult {
	res := &client.ReportResult{Status: client.ReportRefused}
	if rep != nil {
		res.TaskID = rep.TaskID
	}
	code := errand.ErrorCode(err)
	reason := httphelper.Reason(err)
	if code == errand.CodeInternal {
		op := operationID(ctx)
		entry := s.log.WithFields(logrus.Fields{"operation_id": op, "task_id": res.TaskID}).WithError(err)
		if ctx.Err() != nil {
			entry.Debug("report not applied: the request ended")
		} else {
			entry.Error("report failed")
		}
		reason = "internal error; the manager's log has details under operation_id " + op
	}
	res.Error = &errand.Error{Code: code, Reason: reason}
	return res
}

// readOptionalReports decodes the batch of reports an acquire may
// carry; an empty body carries none.
func (s *Server) readOptionalReports(r *http.Request) ([]*client.Report, []error, error) {
	var raw json.RawMessage
	if err := s.decodeOptional(r, &raw); err != nil {
		return nil, nil, err
	}
	if raw == nil {
		return nil, nil, nil
	}
	return decodeReportBatch(raw)
}
