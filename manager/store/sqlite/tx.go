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
	depended := map[string]bool{}
	for _, r := range rows {
		inBatch[r.ID] = true
		for _, d := range r.DependsOn {
			depended[d.Task] = true
		}
	}
	for i, r := range rows {
		// Dependencies in the batch are marked as they are written;
		// insertEdges marks those outside it.
		r.HasDependents = r.HasDependents || depended[r.ID]
		a, err := insertArgs(w, r)
		if err != nil {
			return fmt.Errorf("create task %s: %w", r.ID, err)
		}
		args[i] = a
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
	names, vals := changedCols(prev, next)
	var set strings.Builder
	for _, n := range names {
		set.WriteString(n)
		set.WriteString(" = ?, ")
	}
	version := w.s.nextVersion()
	args := append(vals, version, prev.Seq, prev.Version)
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
	w.updated(next, version)
	return nil
}

// updated records that next was written at version.
func (w *wtx) updated(next *store.TaskRow, version int64) {
	next.Version = version
	if next.State.Active() {
		cp := *next
		w.s.active.put(&cp)
	} else {
		w.s.active.drop(next.ID)
	}
}

// changedCols lists the columns of next that differ from prev, with
// their values.
func changedCols(prev, next *store.TaskRow) (names []string, vals []any) {
	col := func(name string, v any) {
		names = append(names, name)
		vals = append(vals, v)
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
	return names, vals
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
	res, err := w.exec(`INSERT INTO runs (id, created_at, filename, config, branch, event, plan, setup_errors, stage_count, created_by)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		r.ID, nanos(now), r.Filename, nullBytes(r.Config), r.Branch, r.Event, nullBytes(r.Plan), setup, r.StageCount, r.CreatedBy)
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

// readRows reads the rows of tasks by id.
func readRows(w *wtx, ids []string) ([]*store.TaskRow, error) {
	out := make([]*store.TaskRow, 0, len(ids))
	for _, id := range ids {
		row, err := getRow(w, id)
		if err != nil {
			return nil, err
		}
		out = append(out, row)
	}
	return out, nil
}

// TaskRowsHeld reads a delegate's active tasks.
func (w *wtx) TaskRowsHeld(delegateID string) ([]*store.TaskRow, error) {
	ids, err := selectIDs(w, `SELECT id FROM tasks WHERE delegate_id = ? AND lease_token <> '' AND finished_at IS NULL
		AND (state = 'leased' OR state = 'running') ORDER BY seq`, delegateID)
	if err != nil {
		return nil, err
	}
	return readRows(w, ids)
}

// TaskRowsUnrenewed reads the active tasks whose leases were not renewed
// since before.
func (w *wtx) TaskRowsUnrenewed(before time.Time) ([]store.RenewedRow, error) {
	ids, renewed, err := selectIDsWith[int64](w, `SELECT id, lease_renewed FROM tasks WHERE lease_token <> '' AND finished_at IS NULL
		AND lease_renewed < ? ORDER BY +seq`, nanos(before))
	if err != nil {
		return nil, err
	}
	read, err := readRows(w, ids)
	if err != nil {
		return nil, err
	}
	out := make([]store.RenewedRow, len(read))
	for i, row := range read {
		out[i] = store.RenewedRow{Row: row, Renewed: fromNanos(renewed[i])}
	}
	return out, nil
}

// TaskRowsOverdue reads the running tasks past their timeout and grace.
func (w *wtx) TaskRowsOverdue(now time.Time, grace time.Duration) ([]*store.TaskRow, error) {
	ids, err := selectIDs(w, `SELECT id FROM tasks WHERE lease_token <> '' AND finished_at IS NULL AND state = 'running'
		AND timeout > 0 AND started_at + timeout + ? < ? ORDER BY seq`, int64(grace), nanos(now))
	if err != nil {
		return nil, err
	}
	return readRows(w, ids)
}

// TaskRowsOrphaned reads the queued tasks whose affinity task's delegate
// is gone or lost since before lostBefore.
func (w *wtx) TaskRowsOrphaned(lostBefore time.Time) ([]store.OrphanRow, error) {
	ids, groups, err := selectIDsWith[string](w, `SELECT t.id, a.delegate_group FROM tasks t
		JOIN tasks a ON a.id = t.affinity AND a.delegate_id <> ''
		LEFT JOIN delegates ad ON ad.id = a.delegate_id
		WHERE t.state = 'queued' AND t.affinity <> ''
			AND (ad.id IS NULL OR (ad.state = 'lost' AND ad.last_heartbeat < ?))
		ORDER BY +t.seq`, nanos(lostBefore))
	if err != nil {
		return nil, err
	}
	read, err := readRows(w, ids)
	if err != nil {
		return nil, err
	}
	out := make([]store.OrphanRow, len(read))
	for i, row := range read {
		out[i] = store.OrphanRow{Row: row, Group: groups[i]}
	}
	return out, nil
}

// DelegatesLose marks the silent delegates lost.
func (w *wtx) DelegatesLose(before time.Time) ([]string, error) {
	ids, err := selectIDs(w, `SELECT id FROM delegates WHERE state <> 'lost' AND last_heartbeat < ? ORDER BY seq`, nanos(before))
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if _, err := w.exec(`UPDATE delegates SET state = 'lost' WHERE id = ?`, id); err != nil {
			return nil, fmt.Errorf("lose delegate %s: %w", id, err)
		}
	}
	return ids, nil
}

// DelegatesActive reads the active delegates of a group.
func (w *wtx) DelegatesActive(group string) ([]*errand.Delegate, error) {
	rows, err := w.query(`SELECT `+delegateCols+` FROM delegates WHERE grp = ? AND state = 'active' ORDER BY seq`, group)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*errand.Delegate
	for rows.Next() {
		d, err := scanDelegate(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// DelegateRemove deletes a delegate's row.
func (w *wtx) DelegateRemove(id string) error {
	res, err := w.exec(`DELETE FROM delegates WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete delegate %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("delete delegate %s: %w", id, err)
	} else if n == 0 {
		return notFound("delegate", id)
	}
	return nil
}

// TaskRows reads several tasks as TaskRow does, mostly from the cache.
func (w *wtx) TaskRows(ids []string) (map[string]*store.TaskRow, error) {
	out := make(map[string]*store.TaskRow, len(ids))
	for _, id := range ids {
		row, err := w.TaskRow(id)
		if errors.Is(err, errand.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[id] = row
	}
	return out, nil
}

// TaskUpdates writes several rows as TaskUpdate does, one statement for
// the rows that change the same columns (a CASE on seq per column, each
// row conditional on its version). Statements are made for runs of 1, 2,
// 4, … 64 rows, so that few shapes are prepared.
func (w *wtx) TaskUpdates(prev, next []*store.TaskRow) error {
	type group struct {
		names []string
		idx   []int
		vals  [][]any
	}
	var (
		groups []*group
		bySig  = map[string]*group{}
	)
	for i := range next {
		names, vals := changedCols(prev[i], next[i])
		sig := strings.Join(names, ",")
		g := bySig[sig]
		if g == nil {
			g = &group{names: names}
			bySig[sig] = g
			groups = append(groups, g)
		}
		g.idx, g.vals = append(g.idx, i), append(g.vals, vals)
	}
	for _, g := range groups {
		for lo := 0; lo < len(g.idx); {
			n := 1
			for n*2 <= min(len(g.idx)-lo, 64) {
				n *= 2
			}
			if err := w.updateRun(g.names, g.idx[lo:lo+n], g.vals[lo:lo+n], prev, next); err != nil {
				return err
			}
			lo += n
		}
	}
	return nil
}

// updateRun writes rows that change the same columns in one statement.
func (w *wtx) updateRun(names []string, idx []int, vals [][]any, prev, next []*store.TaskRow) error {
	if len(idx) == 1 {
		return w.TaskUpdate(prev[idx[0]], next[idx[0]])
	}
	var (
		q    strings.Builder
		args []any
	)
	byRow := func(val func(k int) any) {
		q.WriteString("CASE seq")
		for k, i := range idx {
			q.WriteString(" WHEN ? THEN ?")
			args = append(args, prev[i].Seq, val(k))
		}
		q.WriteString(" END")
	}
	versions := make([]int64, len(idx))
	for k := range idx {
		versions[k] = w.s.nextVersion()
	}
	q.WriteString("UPDATE tasks SET ")
	for c, name := range names {
		q.WriteString(name + " = ")
		byRow(func(k int) any { return vals[k][c] })
		q.WriteString(", ")
	}
	q.WriteString("version = ")
	byRow(func(k int) any { return versions[k] })
	q.WriteString(" WHERE seq IN (?" + strings.Repeat(", ?", len(idx)-1) + ") AND version = ")
	for _, i := range idx {
		args = append(args, prev[i].Seq)
	}
	byRow(func(k int) any { return prev[idx[k]].Version })
	res, err := w.exec(q.String(), args...)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if int(n) != len(idx) {
		for _, i := range idx {
			w.s.active.drop(prev[i].ID)
		}
		return store.ErrStale
	}
	for k, i := range idx {
		w.updated(next[i], versions[k])
	}
	return nil
}
