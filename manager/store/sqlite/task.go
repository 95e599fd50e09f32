package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// TaskCreate inserts a batch of tasks atomically.
func (s *Store) TaskCreate(ctx context.Context, p store.TaskCreateParams) ([]*errand.Task, error) {
	order, err := errand.BatchOrder(p.Tasks)
	if err != nil {
		return nil, err
	}
	now := nanos(p.Now)
	var out []*errand.Task
	err = s.write(ctx, func(w *wtx) error {
		inBatch := make(map[string]*errand.Task, len(p.Tasks))
		for _, t := range p.Tasks {
			inBatch[t.ID] = t
		}
		// States of tasks outside the batch that the batch refers to.
		outside := map[string]errand.State{}
		for i, t := range p.Tasks {
			if len(t.DependsOn) == 0 && t.Affinity == "" {
				continue
			}
			refs := make([]string, 0, len(t.DependsOn)+1)
			paths := make([]string, 0, len(t.DependsOn)+1)
			for j, d := range t.DependsOn {
				refs = append(refs, d.Task)
				paths = append(paths, fmt.Sprintf("tasks[%d].depends_on[%d].task", i, j))
			}
			if t.Affinity != "" {
				refs = append(refs, t.Affinity)
				paths = append(paths, fmt.Sprintf("tasks[%d].affinity", i))
			}
			for j, ref := range refs {
				if _, ok := inBatch[ref]; ok {
					continue
				}
				if _, ok := outside[ref]; ok {
					continue
				}
				var st errand.State
				err := w.queryRow(`SELECT state FROM tasks WHERE id = ?`, ref).Scan(&st)
				if errors.Is(err, sql.ErrNoRows) {
					return errand.Errorf(errand.CodeInvalid, "%s: unknown task %s", paths[j], ref)
				}
				if err != nil {
					return fmt.Errorf("create task %s: %w", t.ID, err)
				}
				outside[ref] = st
			}
		}

		// Dependencies inside the batch are known now; those outside
		// are marked once the batch is in.
		depended := map[string]bool{}
		for _, t := range p.Tasks {
			for _, d := range t.DependsOn {
				depended[d.Task] = true
			}
		}
		decided := make(map[string]errand.State, len(p.Tasks))
		out = make([]*errand.Task, len(p.Tasks))
		rows := make([][]any, len(p.Tasks))
		for _, i := range order {
			t := p.Tasks[i]
			task, args, err := prepareTask(w, t, outside, decided, depended[t.ID], now)
			if err != nil {
				return fmt.Errorf("create task %s: %w", t.ID, err)
			}
			decided[t.ID] = task.State
			out[i], rows[i] = task, args
		}
		if err := insertTasks(w, p.Tasks, rows); err != nil {
			return err
		}
		for _, t := range p.Tasks {
			if err := insertEdges(w, t, inBatch); err != nil {
				return fmt.Errorf("create task %s: %w", t.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// taskInsertCols are the columns TaskCreate writes, in prepareTask's order.
const taskInsertCols = `id, type, data, selector, depends_on, affinity, priority, timeout,
	max_attempts, run_id, state, error_code, error_reason, has_dependents, created_at, queued_at,
	finished_at, approvals, approved, version`

// taskInsertWidth is the number of taskInsertCols.
const taskInsertWidth = 20

// insertChunk bounds the rows of one INSERT statement.
const insertChunk = 32

// prepareTask decides the state of a new task, resolved at once when
// every dependency has already ended (in the database or earlier in the
// batch), and returns it with the values of its row.
func prepareTask(w *wtx, t *errand.Task, outside, decided map[string]errand.State, hasDependents bool, now int64) (*errand.Task, []any, error) {
	maxAttempts := t.MaxAttempts
	if maxAttempts == 0 {
		maxAttempts = errand.DefaultMaxAttempts
	}
	st := errand.Status{State: errand.StatePending, MaxAttempts: maxAttempts, Approvals: t.Approvals}
	outcomes := make([]errand.DependencyOutcome, len(t.DependsOn))
	for j, d := range t.DependsOn {
		ds, ok := decided[d.Task]
		if !ok {
			ds = outside[d.Task]
		}
		outcomes[j] = errand.DependencyOutcome{Condition: d.Condition, State: ds}
	}
	if ev, ok := resolveEvent(errand.Resolve(outcomes)); ok {
		next, err := errand.Transition(st, ev)
		if err != nil {
			return nil, nil, err
		}
		st = next
	}
	var errCode, errReason string
	if st.State.Terminal() {
		errCode, errReason = store.OutcomeError(nil, st, nil)
	}
	selector, err := jsonOrEmpty(t.Selector, t.Selector.Arch == "" && t.Selector.Group == "" && len(t.Selector.Labels) == 0)
	if err != nil {
		return nil, nil, err
	}
	deps, err := jsonOrEmpty(t.DependsOn, len(t.DependsOn) == 0)
	if err != nil {
		return nil, nil, err
	}
	out := &errand.Task{Kind: errand.KindTask, ID: t.ID, Type: t.Type, Data: t.Data, Selector: t.Selector,
		DependsOn: t.DependsOn, Affinity: t.Affinity, Priority: t.Priority, Timeout: t.Timeout,
		MaxAttempts: maxAttempts, RunID: t.RunID, State: st.State, Approvals: t.Approvals, CreatedAt: fromNanos(now)}
	if errCode != "" {
		out.Error = &errand.Error{Code: errCode, Reason: errReason}
	}
	var queuedAt, finishedAt any
	switch {
	case st.State == errand.StateQueued:
		queuedAt = now
		out.QueuedAt = ptrTime(now)
		w.emit(store.Change{Kind: store.ChangeTaskQueued, TaskID: t.ID, TaskType: t.Type})
	case st.State.Terminal():
		finishedAt = now
		out.FinishedAt = ptrTime(now)
		w.emit(store.Change{Kind: store.ChangeTaskEnded, TaskID: t.ID})
	}
	args := []any{t.ID, t.Type, nullBytes(t.Data), selector, deps, t.Affinity, t.Priority,
		int64(t.Timeout), maxAttempts, t.RunID, st.State, errCode, errReason, boolInt(hasDependents),
		now, queuedAt, finishedAt, t.Approvals, 0, w.s.nextVersion()}
	return out, args, nil
}

// insertTasks writes the rows of a batch, several to a statement, in batch
// order. An id that exists already is errand.ErrConflict.
func insertTasks(w *wtx, tasks []*errand.Task, rows [][]any) error {
	for lo := 0; lo < len(rows); lo += insertChunk {
		hi := min(lo+insertChunk, len(rows))
		var q strings.Builder
		q.WriteString(`INSERT INTO tasks (` + taskInsertCols + `) VALUES `)
		args := make([]any, 0, (hi-lo)*taskInsertWidth)
		for i := lo; i < hi; i++ {
			if i > lo {
				q.WriteString(", ")
			}
			q.WriteString("(?" + strings.Repeat(", ?", taskInsertWidth-1) + ")")
			args = append(args, rows[i]...)
		}
		q.WriteString(` ON CONFLICT (id) DO NOTHING`)
		res, err := w.exec(q.String(), args...)
		if err != nil {
			return fmt.Errorf("create tasks: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("create tasks: %w", err)
		}
		if int(n) == hi-lo {
			continue
		}
		// Some id exists: the row there is not the one just written.
		for i := lo; i < hi; i++ {
			var version int64
			if err := w.queryRow(`SELECT version FROM tasks WHERE id = ?`, tasks[i].ID).Scan(&version); err != nil {
				return fmt.Errorf("create tasks: %w", err)
			}
			if version != rows[i][taskInsertWidth-1].(int64) {
				return errand.Errorf(errand.CodeConflict, "tasks[%d].id: task %s exists", i, tasks[i].ID)
			}
		}
		return fmt.Errorf("create tasks: %d of %d rows written", n, hi-lo)
	}
	return nil
}

// insertEdges records a new task's dependencies, and marks the tasks
// outside the batch that now have a dependent.
func insertEdges(w *wtx, t *errand.Task, inBatch map[string]*errand.Task) error {
	for j, d := range t.DependsOn {
		cond := d.Condition
		if cond == "" {
			cond = errand.OnSuccess
		}
		if _, err := w.exec(`INSERT INTO task_deps (task_id, dep_id, condition, position) VALUES (?, ?, ?, ?)`,
			t.ID, d.Task, cond, j); err != nil {
			return err
		}
		if _, ok := inBatch[d.Task]; ok {
			continue
		}
		if _, err := w.exec(`UPDATE tasks SET has_dependents = 1, version = ? WHERE id = ? AND has_dependents = 0`,
			w.s.nextVersion(), d.Task); err != nil {
			return err
		}
	}
	return nil
}

func resolveEvent(r errand.Readiness) (errand.Event, bool) {
	switch r {
	case errand.Ready:
		return errand.EventDepsMet, true
	case errand.Skip:
		return errand.EventDepsUnmet, true
	}
	return "", false
}

// TaskGet returns one task.
func (s *Store) TaskGet(ctx context.Context, id string) (*errand.Task, error) {
	row, err := scanTask(s.rdb.QueryRowContext(ctx, `SELECT `+taskCols+` FROM tasks WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("task", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get task %s: %w", id, err)
	}
	return row.task(), nil
}

// TaskList returns tasks matching the filter in creation order, or
// newest first with p.Desc.
func (s *Store) TaskList(ctx context.Context, p store.TaskListParams) ([]*errand.Task, error) {
	var (
		where []string
		args  []any
	)
	if len(p.States) > 0 {
		marks := make([]string, len(p.States))
		for i, st := range p.States {
			marks[i] = "?"
			args = append(args, st)
		}
		where = append(where, "state IN ("+strings.Join(marks, ", ")+")")
	}
	if p.Type != "" {
		where = append(where, "type = ?")
		args = append(args, p.Type)
	}
	if p.RunID != "" {
		where = append(where, "run_id = ?")
		args = append(args, p.RunID)
	}
	order := "seq"
	if p.After != "" {
		cmp := "seq > coalesce((SELECT seq FROM tasks WHERE id = ?), 0)"
		if p.Desc {
			cmp = "seq < coalesce((SELECT seq FROM tasks WHERE id = ?), 9223372036854775807)"
		}
		where = append(where, cmp)
		args = append(args, p.After)
	}
	if p.Desc {
		// The primary key (and tasks_run for a run) serve the backward
		// scan as they serve the forward one.
		order = "seq DESC"
	}
	limit := p.Limit
	if limit <= 0 {
		limit = 100
	}
	q := `SELECT ` + taskCols + ` FROM tasks`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY " + order + " LIMIT ?"
	args = append(args, limit)
	rows, err := s.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	defer rows.Close()
	out := []*errand.Task{}
	for rows.Next() {
		row, err := scanTask(rows)
		if err != nil {
			return nil, fmt.Errorf("list tasks: %w", err)
		}
		out = append(out, row.task())
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	return out, nil
}

// getRow reads a task inside a write transaction.
func getRow(w *wtx, id string) (*taskRow, error) {
	row, err := scanTask(w.queryRow(`SELECT `+taskCols+` FROM tasks WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("task", id)
	}
	if err != nil {
		return nil, fmt.Errorf("read task %s: %w", id, err)
	}
	return row, nil
}

// TaskReport applies a delegate's report under its lease.
func (s *Store) TaskReport(ctx context.Context, p store.TaskReportParams) (*errand.Task, error) {
	ev, ok := errand.EventForReport(p.State)
	if !ok {
		return nil, errand.Errorf(errand.CodeInvalid, "state: a delegate cannot report %q", p.State)
	}
	if len(p.Result) > 0 && !json.Valid(p.Result) {
		return nil, errand.Errorf(errand.CodeInvalid, "result: not JSON")
	}
	var out *errand.Task
	err := s.write(ctx, func(w *wtx) error {
		var err error
		if out, err = reportCached(w, p, ev); out != nil || err != nil {
			return err
		}
		row, err := getRow(w, p.TaskID)
		if err != nil {
			return err
		}
		if !store.LeaseMatches(row.leaseToken, p.LeaseToken) {
			return errand.Errorf(errand.CodeLeaseLost, "task %s: lease is not current", p.TaskID)
		}
		if row.DelegateID != p.DelegateID {
			return errand.Errorf(errand.CodeForbidden, "task %s: leased to another delegate", p.TaskID)
		}
		if row.State == p.State {
			// A retry of a report that already took effect.
			out = row.task()
			return nil
		}
		next, err := errand.Transition(row.status(), ev)
		if err != nil {
			return fmt.Errorf("report task %s: %w", p.TaskID, err)
		}
		out, err = applyTransition(w, row, next, transitionExtras{result: p.Result, err: p.Error}, nanos(p.Now))
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// reportCached applies a report that changes the task using the row kept
// in memory since the task was leased, saving a read. The write is
// conditional on the row's version, so a row that changed since (or a
// cached change that was rolled back) is never acted on: it returns no
// task and no error, and the caller reads the row and decides afresh, as
// it does for every report that is refused or repeated.
func reportCached(w *wtx, p store.TaskReportParams, ev errand.Event) (*errand.Task, error) {
	row, ok := w.s.active.get(p.TaskID)
	if !ok || !store.LeaseMatches(row.leaseToken, p.LeaseToken) || row.DelegateID != p.DelegateID || row.State == p.State {
		return nil, nil
	}
	next, err := errand.Transition(row.status(), ev)
	if err != nil {
		return nil, nil
	}
	out, err := applyTransition(w, row, next, transitionExtras{result: p.Result, err: p.Error}, nanos(p.Now))
	if errors.Is(err, errStale) {
		w.s.active.drop(p.TaskID)
		return nil, nil
	}
	return out, err
}

// transitionExtras carries what a transition stores beside the status.
type transitionExtras struct {
	result     json.RawMessage
	err        *errand.Error
	clearLease bool // the lease expired: its token no longer reports
}

// applyTransition persists next for a task read as row, conditional on
// the row still being in the state it was read in, then resolves the
// dependents of a task that ended.
func applyTransition(w *wtx, row *taskRow, next errand.Status, x transitionExtras, now int64) (*errand.Task, error) {
	t := row.task()
	errCode, errReason := store.OutcomeError(row.Error, next, x.err)
	if next.State.Terminal() {
		t.FinishedAt = ptrTime(now)
	}
	if next.State == errand.StateQueued {
		t.QueuedAt = ptrTime(now)
	}
	if next.State == errand.StateRunning && row.State != errand.StateRunning {
		t.StartedAt = ptrTime(now)
	}
	result := store.OutcomeResult(row.Result, next, x.result)
	token := row.leaseToken
	if x.clearLease {
		token = ""
	}
	// Only the columns that change are written: SQLite then leaves alone
	// the indexes that do not cover them.
	var (
		set  strings.Builder
		args = make([]any, 0, 12)
	)
	col := func(name string, v any) {
		set.WriteString(name)
		set.WriteString(" = ?, ")
		args = append(args, v)
	}
	if next.State != row.State {
		col("state", next.State)
	}
	if next.Attempt != row.Attempt {
		col("attempt", next.Attempt)
	}
	if next.CancelRequested != row.CancelRequested {
		col("cancel_requested", boolInt(next.CancelRequested))
	}
	if next.Approved != row.Approved {
		col("approved", next.Approved)
	}
	if !bytes.Equal(result, row.Result) {
		col("result", nullBytes(result))
	}
	if oldCode, oldReason := errorParts(row.Error); errCode != oldCode || errReason != oldReason {
		col("error_code", errCode)
		col("error_reason", errReason)
	}
	if token != row.leaseToken {
		col("lease_token", token)
	}
	if !sameTime(t.QueuedAt, row.QueuedAt) {
		col("queued_at", nullTime(t.QueuedAt))
	}
	if !sameTime(t.StartedAt, row.StartedAt) {
		col("started_at", nullTime(t.StartedAt))
	}
	if !sameTime(t.FinishedAt, row.FinishedAt) {
		col("finished_at", nullTime(t.FinishedAt))
	}
	version := w.s.nextVersion()
	args = append(args, version, row.seq, row.version)
	res, err := w.exec(`UPDATE tasks SET `+set.String()+`version = ? WHERE seq = ? AND version = ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("update task %s: %w", row.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return nil, fmt.Errorf("update task %s: %w", row.ID, err)
	} else if n != 1 {
		return nil, errStale
	}
	t.State, t.Attempt, t.CancelRequested, t.Approved = next.State, next.Attempt, next.CancelRequested, next.Approved
	t.Result = result
	t.Error = nil
	if errCode != "" {
		t.Error = &errand.Error{Code: errCode, Reason: errReason}
	}
	if next.State.Active() {
		w.s.active.put(&taskRow{Task: *t, seq: row.seq, leaseToken: token, hasDependents: row.hasDependents, version: version})
	} else {
		w.s.active.drop(row.ID)
	}
	switch {
	case next.State == errand.StateQueued:
		w.emit(store.Change{Kind: store.ChangeTaskQueued, TaskID: row.ID, TaskType: row.Type})
	case next.State.Terminal():
		w.emit(store.Change{Kind: store.ChangeTaskEnded, TaskID: row.ID})
		if row.hasDependents {
			if err := releaseDependents(w, row.ID, now); err != nil {
				return nil, err
			}
		}
	}
	return t, nil
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

// releaseDependents resolves the pending tasks that depend on an ended
// task, in the same transaction. A dependent that this skips ends too, and
// applyTransition releases its own dependents in turn, so skips travel
// down whole chains.
func releaseDependents(w *wtx, endedID string, now int64) error {
	dependents, err := selectIDs(w, `SELECT DISTINCT d.task_id FROM task_deps d JOIN tasks t ON t.id = d.task_id
		WHERE d.dep_id = ? AND t.state = 'pending'`, endedID)
	if err != nil {
		return fmt.Errorf("dependents of %s: %w", endedID, err)
	}
	for _, dep := range dependents {
		if err := resolvePending(w, dep, now); err != nil {
			return err
		}
	}
	return nil
}

// resolvePending queues or skips a pending task once every dependency has
// ended, and leaves it waiting otherwise.
func resolvePending(w *wtx, id string, now int64) error {
	row, err := getRow(w, id)
	if err != nil {
		return err
	}
	// A cascade may already have decided it: the dependents of an ended
	// task were listed before resolving the first of them.
	if row.State != errand.StatePending {
		return nil
	}
	rows, err := w.query(`SELECT d.condition, t.state FROM task_deps d JOIN tasks t ON t.id = d.dep_id
		WHERE d.task_id = ? ORDER BY d.position`, id)
	if err != nil {
		return fmt.Errorf("dependencies of %s: %w", id, err)
	}
	var outcomes []errand.DependencyOutcome
	for rows.Next() {
		var o errand.DependencyOutcome
		if err := rows.Scan(&o.Condition, &o.State); err != nil {
			rows.Close()
			return fmt.Errorf("dependencies of %s: %w", id, err)
		}
		outcomes = append(outcomes, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("dependencies of %s: %w", id, err)
	}
	ev, ok := resolveEvent(errand.Resolve(outcomes))
	if !ok {
		return nil
	}
	next, err := errand.Transition(row.status(), ev)
	if err != nil {
		return fmt.Errorf("resolve task %s: %w", id, err)
	}
	_, err = applyTransition(w, row, next, transitionExtras{}, now)
	return err
}

// TaskCancel cancels a task or asks its delegate to stop it.
func (s *Store) TaskCancel(ctx context.Context, p store.TaskCancelParams) (*errand.Task, error) {
	var out *errand.Task
	err := s.write(ctx, func(w *wtx) error {
		row, err := getRow(w, p.TaskID)
		if err != nil {
			return err
		}
		next, err := errand.Transition(row.status(), errand.EventCancel)
		if err != nil {
			return fmt.Errorf("cancel task %s: %w", p.TaskID, err)
		}
		if next == row.status() {
			out = row.task()
			return nil
		}
		out, err = applyTransition(w, row, next, transitionExtras{}, nanos(p.Now))
		if err != nil {
			return err
		}
		if next.CancelRequested && !next.State.Terminal() {
			w.emit(store.Change{Kind: store.ChangeCancelRequested, TaskID: row.ID, DelegateID: row.DelegateID})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TaskCancelRequests lists a delegate's active tasks that a user cancelled.
func (s *Store) TaskCancelRequests(ctx context.Context, delegateID string) ([]string, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT id FROM tasks
		WHERE delegate_id = ? AND lease_token <> '' AND finished_at IS NULL
		AND (state = 'leased' OR state = 'running') AND cancel_requested = 1 ORDER BY seq`, delegateID)
	if err != nil {
		return nil, fmt.Errorf("cancel requests of %s: %w", delegateID, err)
	}
	defer rows.Close()
	ids := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("cancel requests of %s: %w", delegateID, err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cancel requests of %s: %w", delegateID, err)
	}
	return ids, nil
}

func ptrTime(n int64) *time.Time {
	t := fromNanos(n)
	return &t
}

func nullTime(t *time.Time) any {
	if t == nil {
		return nil
	}
	return nanos(*t)
}
