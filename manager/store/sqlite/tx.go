package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// Write runs fn in one write transaction, group-committed with the
// writes of other callers (see write).
func (s *Driver) Write(ctx context.Context, fn func(tx store.DriverTx) error) error {
	return s.write(ctx, func(w *wtx) error { return fn(w) })
}

var _ store.DriverTx = (*wtx)(nil)

// Emit records a change, delivered after the commit.
func (w *wtx) Emit(c store.Change) { w.emit(c) }

// TaskRow returns the row of a task a delegate holds as kept in memory
// since it was last written, saving a read; any other row is read. The
// cached row is a hint: TaskUpdate is conditional on its version, so a
// row changed since is never acted on.
func (w *wtx) TaskRow(id string) (*store.TaskRow, error) {
	if row, ok := w.s.active.get(id); ok {
		cp := *row
		return &cp, nil
	}
	return getRow(w, id)
}

// TaskStates reads the states of tasks; the single writer means none
// changes before the commit.
func (w *wtx) TaskStates(ids []string) (map[string]errand.State, error) {
	out := make(map[string]errand.State, len(ids))
	for _, id := range ids {
		var st errand.State
		err := w.queryRow(`SELECT state FROM tasks WHERE id = ?`, id).Scan(&st)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read task %s: %w", id, err)
		}
		out[id] = st
	}
	return out, nil
}

// TaskInsert writes new rows, several to a statement, and their edges.
func (w *wtx) TaskInsert(rows []*store.TaskRow) error {
	args := make([][]any, len(rows))
	inBatch := make(map[string]bool, len(rows))
	for i, r := range rows {
		a, err := insertArgs(w, r)
		if err != nil {
			return fmt.Errorf("create task %s: %w", r.ID, err)
		}
		args[i] = a
		inBatch[r.ID] = true
	}
	if err := insertTasks(w, rows, args); err != nil {
		return err
	}
	for _, r := range rows {
		if err := insertEdges(w, &r.Task, inBatch); err != nil {
			return fmt.Errorf("create task %s: %w", r.ID, err)
		}
	}
	return nil
}

// insertArgs returns the values of taskInsertCols for a new row, and
// gives the row its version.
func insertArgs(w *wtx, r *store.TaskRow) ([]any, error) {
	t := &r.Task
	selector, err := jsonOrEmpty(t.Selector, t.Selector.Arch == "" && t.Selector.Group == "" && len(t.Selector.Labels) == 0)
	if err != nil {
		return nil, err
	}
	deps, err := jsonOrEmpty(t.DependsOn, len(t.DependsOn) == 0)
	if err != nil {
		return nil, err
	}
	errCode, errReason := errorParts(t.Error)
	r.Version = w.s.nextVersion()
	return []any{t.ID, t.Type, nullBytes(t.Data), selector, deps, t.Affinity, t.Priority,
		int64(t.Timeout), t.MaxAttempts, t.RunID, t.State, errCode, errReason, boolInt(r.HasDependents),
		nanos(t.CreatedAt), nullTime(t.QueuedAt), nullTime(t.FinishedAt), t.Approvals, t.Approved, r.Version}, nil
}

// TaskUpdate writes the columns of next that differ from prev, if the
// row is still at prev's version; SQLite then leaves alone the indexes
// that do not cover them. The cache keeps the rows of active tasks.
func (w *wtx) TaskUpdate(prev, next *store.TaskRow) error {
	var (
		set  strings.Builder
		args = make([]any, 0, 14)
	)
	col := func(name string, v any) {
		set.WriteString(name)
		set.WriteString(" = ?, ")
		args = append(args, v)
	}
	if next.State != prev.State {
		col("state", next.State)
	}
	if next.Attempt != prev.Attempt {
		col("attempt", next.Attempt)
	}
	if next.CancelRequested != prev.CancelRequested {
		col("cancel_requested", boolInt(next.CancelRequested))
	}
	if next.Approved != prev.Approved {
		col("approved", next.Approved)
	}
	if !bytes.Equal(next.Result, prev.Result) {
		col("result", nullBytes(next.Result))
	}
	code, reason := errorParts(next.Error)
	if oldCode, oldReason := errorParts(prev.Error); code != oldCode || reason != oldReason {
		col("error_code", code)
		col("error_reason", reason)
	}
	if next.LeaseToken != prev.LeaseToken {
		col("lease_token", next.LeaseToken)
	}
	if !sameTime(next.QueuedAt, prev.QueuedAt) {
		col("queued_at", nullTime(next.QueuedAt))
	}
	if !sameTime(next.StartedAt, prev.StartedAt) {
		col("started_at", nullTime(next.StartedAt))
	}
	if !sameTime(next.FinishedAt, prev.FinishedAt) {
		col("finished_at", nullTime(next.FinishedAt))
	}
	version := w.s.nextVersion()
	args = append(args, version, prev.Seq, prev.Version)
	res, err := w.exec(`UPDATE tasks SET `+set.String()+`version = ? WHERE seq = ? AND version = ?`, args...)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		w.s.active.drop(prev.ID)
		return store.ErrStale
	}
	next.Version = version
	if next.State.Active() {
		cp := *next
		w.s.active.put(&cp)
	} else {
		w.s.active.drop(next.ID)
	}
	return nil
}

// TaskPendingDependents lists the pending dependents of a task.
func (w *wtx) TaskPendingDependents(id string) ([]string, error) {
	return selectIDs(w, `SELECT DISTINCT d.task_id FROM task_deps d JOIN tasks t ON t.id = d.task_id
		WHERE d.dep_id = ? AND t.state = 'pending'`, id)
}

// TaskDependencyOutcomes lists a task's dependencies with their states.
func (w *wtx) TaskDependencyOutcomes(id string) ([]errand.DependencyOutcome, error) {
	rows, err := w.query(`SELECT d.condition, t.state FROM task_deps d JOIN tasks t ON t.id = d.dep_id
		WHERE d.task_id = ? ORDER BY d.position`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []errand.DependencyOutcome
	for rows.Next() {
		var o errand.DependencyOutcome
		if err := rows.Scan(&o.Condition, &o.State); err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// RunInsert inserts a run.
func (w *wtx) RunInsert(r *store.Run, now time.Time) error {
	setup, err := jsonOrEmpty(r.SetupErrors, len(r.SetupErrors) == 0)
	if err != nil {
		return err
	}
	res, err := w.exec(`INSERT INTO runs (id, created_at, filename, config, branch, event, plan, setup_errors, stage_count)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		r.ID, nanos(now), r.Filename, nullBytes(r.Config), r.Branch, r.Event, nullBytes(r.Plan), setup, r.StageCount)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return errand.Errorf(errand.CodeConflict, "run %s exists", r.ID)
	}
	return nil
}

// RunApprovalAdd records an approver of a stage.
func (w *wtx) RunApprovalAdd(p store.RunApproveParams) (bool, error) {
	var one int
	err := w.queryRow(`SELECT 1 FROM runs WHERE id = ?`, p.RunID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, notFound("run", p.RunID)
	}
	if err != nil {
		return false, fmt.Errorf("approve run %s: %w", p.RunID, err)
	}
	res, err := w.exec(`INSERT INTO run_approvals (run_id, stage, approver, approved_at, seq)
		VALUES (?, ?, ?, ?, (SELECT coalesce(max(seq), 0) + 1 FROM run_approvals WHERE run_id = ?))
		ON CONFLICT (run_id, stage, approver) DO NOTHING`,
		p.RunID, p.Stage, p.Approver, nanos(p.Now), p.RunID)
	if err != nil {
		return false, fmt.Errorf("approve run %s: %w", p.RunID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("approve run %s: %w", p.RunID, err)
	}
	return n == 1, nil
}

// RunApprovalCount counts the approvers of a stage.
func (w *wtx) RunApprovalCount(runID, stage string) (int, error) {
	var n int
	err := w.queryRow(`SELECT count(*) FROM run_approvals WHERE run_id = ? AND stage = ?`, runID, stage).Scan(&n)
	return n, err
}

func errorParts(e *errand.Error) (code, reason string) {
	if e == nil {
		return "", ""
	}
	return e.Code, e.Reason
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}
