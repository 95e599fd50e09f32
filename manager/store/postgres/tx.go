package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// Write runs fn in one transaction, again when PostgreSQL aborted it for
// a deadlock or a serialisation failure (see write).
func (s *Driver) Write(ctx context.Context, fn func(tx store.DriverTx) error) error {
	return s.write(ctx, func(w *wtx) error { return fn(w) })
}

var _ store.DriverTx = (*wtx)(nil)

// Emit records a change, delivered after the commit.
func (w *wtx) Emit(c store.Change) { w.emit(c) }

// TaskRow reads a task and locks it until the transaction ends.
func (w *wtx) TaskRow(id string) (*store.TaskRow, error) { return lockRow(w, id) }

// TaskStates reads the states of tasks under a share lock (lockReferences).
func (w *wtx) TaskStates(ids []string) (map[string]errand.State, error) {
	return lockReferences(w, ids)
}

const insertTaskSQL = `INSERT INTO tasks (id, type, data, selector, depends_on, affinity,
	priority, timeout, max_attempts, run_id, state, error_code, error_reason, created_at,
	queued_at, finished_at, approvals, approved, has_dependents)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
	ON CONFLICT (id) DO NOTHING`

// TaskInsert sends every row and edge of a batch in one round trip.
func (w *wtx) TaskInsert(rows []*store.TaskRow) error {
	b := &pgx.Batch{}
	for i, r := range rows {
		if err := queueInsert(b, i, r); err != nil {
			return fmt.Errorf("create task %s: %w", r.ID, err)
		}
	}
	return w.sendBatch(b)
}

// queueInsert queues the statements that store one new row, the i-th of
// its batch. An id that exists already fails the batch with
// errand.ErrConflict.
func queueInsert(b *pgx.Batch, i int, r *store.TaskRow) error {
	t := &r.Task
	selector := "{}"
	if t.Selector.Arch != "" || t.Selector.Group != "" || len(t.Selector.Labels) > 0 {
		b, err := json.Marshal(t.Selector)
		if err != nil {
			return err
		}
		selector = string(b)
	}
	deps, err := jsonOrEmpty(t.DependsOn, len(t.DependsOn) == 0)
	if err != nil {
		return err
	}
	var errCode, errReason string
	if t.Error != nil {
		errCode, errReason = t.Error.Code, t.Error.Reason
	}
	b.Queue(insertTaskSQL, t.ID, t.Type, nullBytes(t.Data), selector, deps,
		t.Affinity, t.Priority, int64(t.Timeout), t.MaxAttempts, t.RunID, t.State, errCode, errReason,
		nanos(t.CreatedAt), nullTime(t.QueuedAt), nullTime(t.FinishedAt), t.Approvals, t.Approved,
		r.HasDependents).Exec(func(tag pgconn.CommandTag) error {
		if tag.RowsAffected() == 0 {
			return errand.Errorf(errand.CodeConflict, "tasks[%d].id: task %s exists", i, t.ID)
		}
		return nil
	})
	if len(t.DependsOn) > 0 {
		depIDs := make([]string, len(t.DependsOn))
		conds := make([]string, len(t.DependsOn))
		for j, d := range t.DependsOn {
			depIDs[j] = d.Task
			conds[j] = string(d.Condition)
			if conds[j] == "" {
				conds[j] = string(errand.OnSuccess)
			}
		}
		b.Queue(`INSERT INTO task_deps (task_id, dep_id, condition, position)
			SELECT $1, d, c, i - 1 FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS u(d, c, i)`,
			t.ID, depIDs, conds)
		b.Queue(`UPDATE tasks SET has_dependents = true WHERE id = ANY($1) AND NOT has_dependents`, depIDs)
	}
	return nil
}

// TaskUpdate writes a row locked by TaskRow, conditional on the state,
// attempt, lease and approvals it was read with.
func (w *wtx) TaskUpdate(prev, next *store.TaskRow) error {
	var errCode, errReason string
	if next.Error != nil {
		errCode, errReason = next.Error.Code, next.Error.Reason
	}
	tag, err := w.exec(`UPDATE tasks SET state = $1, attempt = $2, cancel_requested = $3, result = $4,
		error_code = $5, error_reason = $6, lease_token = $7, queued_at = $8, started_at = $9,
		finished_at = $10, approved = $12
		WHERE seq = $11 AND state = $13 AND attempt = $14 AND lease_token = $15 AND approved = $16`,
		next.State, next.Attempt, next.CancelRequested, nullBytes(next.Result), errCode, errReason, next.LeaseToken,
		nullTime(next.QueuedAt), nullTime(next.StartedAt), nullTime(next.FinishedAt), prev.Seq, next.Approved,
		prev.State, prev.Attempt, prev.LeaseToken, prev.Approved)
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		return store.ErrStale
	}
	return nil
}

// TaskPendingDependents lists the pending dependents of a task, in id
// order: each is locked before its dependencies are read (TaskRow), so
// two dependencies ending at once in two transactions take turns on it
// and the second reads the first's committed outcome.
func (w *wtx) TaskPendingDependents(id string) ([]string, error) {
	rows, err := w.query(`SELECT DISTINCT d.task_id FROM task_deps d JOIN tasks t ON t.id = d.task_id
		WHERE d.dep_id = $1 AND t.state = 'pending' ORDER BY d.task_id`, id)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// TaskDependencyOutcomes lists a task's dependencies with their states.
func (w *wtx) TaskDependencyOutcomes(id string) ([]errand.DependencyOutcome, error) {
	rows, err := w.query(`SELECT d.condition, t.state FROM task_deps d JOIN tasks t ON t.id = d.dep_id
		WHERE d.task_id = $1 ORDER BY d.position`, id)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (errand.DependencyOutcome, error) {
		var o errand.DependencyOutcome
		err := r.Scan(&o.Condition, &o.State)
		return o, err
	})
}

// RunInsert inserts a run.
func (w *wtx) RunInsert(r *store.Run, now time.Time) error {
	setup, err := jsonOrEmpty(r.SetupErrors, len(r.SetupErrors) == 0)
	if err != nil {
		return err
	}
	tag, err := w.exec(`INSERT INTO runs (id, created_at, filename, config, branch, event, plan, setup_errors, stage_count, created_by)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING`,
		r.ID, nanos(now), r.Filename, nullBytes(r.Config), r.Branch, r.Event, nullBytes(r.Plan), setup, r.StageCount, r.CreatedBy)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return errand.Errorf(errand.CodeConflict, "run %s exists", r.ID)
	}
	return nil
}

// RunApprovalAdd records an approver of a stage, the run share-locked.
func (w *wtx) RunApprovalAdd(p store.RunApproveParams) (bool, error) {
	var one int
	err := w.queryRow(`SELECT 1 FROM runs WHERE id = $1 FOR SHARE`, p.RunID).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, notFound("run", p.RunID)
	}
	if err != nil {
		return false, fmt.Errorf("approve run %s: %w", p.RunID, err)
	}
	tag, err := w.exec(`INSERT INTO run_approvals (run_id, stage, approver, approved_at)
		VALUES ($1, $2, $3, $4) ON CONFLICT (run_id, stage, approver) DO NOTHING`,
		p.RunID, p.Stage, p.Approver, nanos(p.Now))
	if err != nil {
		return false, fmt.Errorf("approve run %s: %w", p.RunID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// RunApprovalCount counts the approvers of a stage.
func (w *wtx) RunApprovalCount(runID, stage string) (int, error) {
	var n int
	err := w.queryRow(`SELECT count(*) FROM run_approvals WHERE run_id = $1 AND stage = $2`, runID, stage).Scan(&n)
	return n, err
}

// TaskRowsHeld reads and locks a delegate's active tasks.
func (w *wtx) TaskRowsHeld(delegateID string) ([]*store.TaskRow, error) {
	rows, err := w.query(`SELECT `+taskCols+` FROM tasks WHERE delegate_id = $1
		AND state IN ('leased', 'running') ORDER BY seq FOR UPDATE`, delegateID)
	if err != nil {
		return nil, err
	}
	return collectTasks(rows)
}

// TaskRowsUnrenewed reads and locks the active tasks whose leases were
// not renewed since before; rows another sweeper holds are skipped.
func (w *wtx) TaskRowsUnrenewed(before time.Time) ([]store.RenewedRow, error) {
	rows, err := w.query(`SELECT lease_renewed, `+taskCols+` FROM tasks WHERE state IN ('leased', 'running')
		AND lease_renewed < $1 ORDER BY seq FOR UPDATE SKIP LOCKED`, nanos(before))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.RenewedRow
	for rows.Next() {
		var renewed int64
		row, err := scanTask(prefixScanner{rows: rows, first: &renewed})
		if err != nil {
			return nil, err
		}
		out = append(out, store.RenewedRow{Row: row, Renewed: fromNanos(renewed)})
	}
	return out, rows.Err()
}

// TaskRowsOverdue reads and locks the running tasks past their timeout.
func (w *wtx) TaskRowsOverdue(now time.Time, grace time.Duration) ([]*store.TaskRow, error) {
	rows, err := w.query(`SELECT `+taskCols+` FROM tasks WHERE state = 'running'
		AND timeout > 0 AND started_at + timeout + $1 < $2 ORDER BY seq FOR UPDATE SKIP LOCKED`,
		int64(grace), nanos(now))
	if err != nil {
		return nil, err
	}
	return collectTasks(rows)
}

// TaskRowsOrphaned reads and locks the queued tasks whose affinity task's
// delegate is gone or lost since before lostBefore.
func (w *wtx) TaskRowsOrphaned(lostBefore time.Time) ([]store.OrphanRow, error) {
	rows, err := w.query(`SELECT a.delegate_group, `+qualifiedTaskCols+` FROM tasks t
		JOIN tasks a ON a.id = t.affinity AND a.delegate_id <> ''
		LEFT JOIN delegates ad ON ad.id = a.delegate_id
		WHERE t.state = 'queued' AND t.affinity <> ''
			AND (ad.id IS NULL OR (ad.state = 'lost' AND ad.last_heartbeat < $1))
		ORDER BY t.seq FOR UPDATE OF t SKIP LOCKED`, nanos(lostBefore))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.OrphanRow
	for rows.Next() {
		var o store.OrphanRow
		if o.Row, err = scanTask(prefixScanner{rows: rows, first: &o.Group}); err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// DelegatesLose marks the silent delegates lost; delegates another
// sweeper is marking are skipped.
func (w *wtx) DelegatesLose(before time.Time) ([]string, error) {
	rows, err := w.query(`UPDATE delegates SET state = 'lost'
		WHERE seq IN (SELECT seq FROM delegates WHERE state <> 'lost' AND last_heartbeat < $1
			ORDER BY seq FOR UPDATE SKIP LOCKED)
		RETURNING seq, id`, nanos(before))
	if err != nil {
		return nil, err
	}
	type lost struct {
		seq int64
		id  string
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (lost, error) {
		var l lost
		err := r.Scan(&l.seq, &l.id)
		return l, err
	})
	if err != nil {
		return nil, err
	}
	// RETURNING follows no order.
	sort.Slice(got, func(i, j int) bool { return got[i].seq < got[j].seq })
	ids := make([]string, len(got))
	for i, l := range got {
		ids[i] = l.id
	}
	return ids, nil
}

// DelegatesActive reads the active delegates of a group.
func (w *wtx) DelegatesActive(group string) ([]*errand.Delegate, error) {
	rows, err := w.query(`SELECT `+delegateCols+` FROM delegates WHERE grp = $1 AND state = 'active' ORDER BY seq`, group)
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
	tag, err := w.exec(`DELETE FROM delegates WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete delegate %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return notFound("delegate", id)
	}
	return nil
}

// TaskRows reads and locks several tasks, in id order so that two
// transactions locking the same rows take turns instead of deadlocking.
func (w *wtx) TaskRows(ids []string) (map[string]*store.TaskRow, error) {
	sorted := append([]string(nil), ids...)
	sort.Strings(sorted)
	rows, err := w.query(`SELECT `+taskCols+` FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE`, sorted)
	if err != nil {
		return nil, err
	}
	got, err := collectTasks(rows)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*store.TaskRow, len(got))
	for _, r := range got {
		out[r.ID] = r
	}
	return out, nil
}

// TaskUpdates writes several locked rows in one statement, each
// conditional as in TaskUpdate: River's JobSetStateIfRunning, for tasks.
func (w *wtx) TaskUpdates(prev, next []*store.TaskRow) error {
	n := len(next)
	var (
		seqs                                      = make([]int64, n)
		states, codes, reasons, tokens, prevState = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		prevTokens                                = make([]string, n)
		attempts, approved, prevAttempt, prevAppr = make([]int32, n), make([]int32, n), make([]int32, n), make([]int32, n)
		cancels                                   = make([]bool, n)
		results                                   = make([][]byte, n)
		queued, started, finished                 = make([]*int64, n), make([]*int64, n), make([]*int64, n)
	)
	for i, r := range next {
		p := prev[i]
		seqs[i] = p.Seq
		states[i], attempts[i], cancels[i], results[i] = string(r.State), int32(r.Attempt), r.CancelRequested, nullBytes(r.Result)
		if r.Error != nil {
			codes[i], reasons[i] = r.Error.Code, r.Error.Reason
		}
		tokens[i], approved[i] = r.LeaseToken, int32(r.Approved)
		queued[i], started[i], finished[i] = nullTime(r.QueuedAt), nullTime(r.StartedAt), nullTime(r.FinishedAt)
		prevState[i], prevAttempt[i], prevTokens[i], prevAppr[i] = string(p.State), int32(p.Attempt), p.LeaseToken, int32(p.Approved)
	}
	tag, err := w.exec(`UPDATE tasks t SET state = u.state, attempt = u.attempt, cancel_requested = u.cancel,
		result = u.result, error_code = u.code, error_reason = u.reason, lease_token = u.token,
		queued_at = u.queued, started_at = u.started, finished_at = u.finished, approved = u.approved
	FROM unnest($1::bigint[], $2::text[], $3::int[], $4::boolean[], $5::bytea[], $6::text[], $7::text[],
		$8::text[], $9::bigint[], $10::bigint[], $11::bigint[], $12::int[], $13::text[], $14::int[], $15::text[], $16::int[])
		AS u(seq, state, attempt, cancel, result, code, reason, token, queued, started, finished, approved,
			prev_state, prev_attempt, prev_token, prev_approved)
	WHERE t.seq = u.seq AND t.state = u.prev_state AND t.attempt = u.prev_attempt
		AND t.lease_token = u.prev_token AND t.approved = u.prev_approved`,
		seqs, states, attempts, cancels, results, codes, reasons, tokens, queued, started, finished, approved,
		prevState, prevAttempt, prevTokens, prevAppr)
	if err != nil {
		return err
	}
	if int(tag.RowsAffected()) != n {
		return store.ErrStale
	}
	return nil
}
