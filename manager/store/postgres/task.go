package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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
		// Tasks outside the batch that the batch refers to, with the
		// path of their first reference.
		refPath := map[string]string{}
		var refs []string
		for i, t := range p.Tasks {
			for j, d := range t.DependsOn {
				if _, ok := inBatch[d.Task]; !ok {
					if _, seen := refPath[d.Task]; !seen {
						refPath[d.Task] = fmt.Sprintf("tasks[%d].depends_on[%d].task", i, j)
						refs = append(refs, d.Task)
					}
				}
			}
			if t.Affinity != "" {
				if _, ok := inBatch[t.Affinity]; !ok {
					if _, seen := refPath[t.Affinity]; !seen {
						refPath[t.Affinity] = fmt.Sprintf("tasks[%d].affinity", i)
						refs = append(refs, t.Affinity)
					}
				}
			}
		}
		outside, err := lockReferences(w, refs)
		if err != nil {
			return fmt.Errorf("create tasks: %w", err)
		}
		for _, ref := range refs {
			if _, ok := outside[ref]; !ok {
				return errand.Errorf(errand.CodeInvalid, "%s: unknown task %s", refPath[ref], ref)
			}
		}

		// Decide each task after the batch tasks it depends on, then
		// insert in the batch's own order, which listing keeps.
		decided := make(map[string]errand.State, len(p.Tasks))
		statuses := make([]errand.Status, len(p.Tasks))
		for _, i := range order {
			t := p.Tasks[i]
			st, err := decide(t, outside, decided)
			if err != nil {
				return fmt.Errorf("create task %s: %w", t.ID, err)
			}
			statuses[i] = st
			decided[t.ID] = st.State
		}
		// Every row and edge goes in one round trip.
		out = make([]*errand.Task, len(p.Tasks))
		b := &pgx.Batch{}
		for i, t := range p.Tasks {
			row, err := queueTask(w, b, i, t, statuses[i], now)
			if err != nil {
				return fmt.Errorf("create task %s: %w", t.ID, err)
			}
			out[i] = row
		}
		if err := w.sendBatch(b); err != nil {
			if errors.Is(err, errand.ErrConflict) {
				return err
			}
			return fmt.Errorf("create tasks: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// lockReferences reads the states of existing tasks that new tasks refer
// to, under a share lock: a dependency cannot end between this read and
// the commit, and one that is ending is read once it has ended, so a new
// task is never left pending on a dependency whose release it missed.
func lockReferences(w *wtx, ids []string) (map[string]errand.State, error) {
	out := make(map[string]errand.State, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	sorted := append([]string(nil), ids...)
	sort.Strings(sorted)
	rows, err := w.query(`SELECT id, state FROM tasks WHERE id = ANY($1) ORDER BY id FOR SHARE`, sorted)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id string
			st errand.State
		)
		if err := rows.Scan(&id, &st); err != nil {
			return nil, err
		}
		out[id] = st
	}
	return out, rows.Err()
}

const insertTaskSQL = `INSERT INTO tasks (id, type, data, selector, depends_on, affinity,
	priority, timeout, max_attempts, run_id, state, error_code, error_reason, created_at,
	queued_at, finished_at, approvals) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
	ON CONFLICT (id) DO NOTHING`

// decide returns the status a new task starts in: resolved at once when
// every dependency has already ended (in the database or earlier in the
// batch), pending otherwise.
func decide(t *errand.Task, outside, decided map[string]errand.State) (errand.Status, error) {
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
		return errand.Transition(st, ev)
	}
	return st, nil
}

// insertTask stores one task in the status decide gave it: errand.ErrConflict
// when its id exists.
func insertTask(w *wtx, t *errand.Task, st errand.Status, now int64) (*errand.Task, error) {
	b := &pgx.Batch{}
	out, err := queueTask(w, b, 0, t, st, now)
	if err != nil {
		return nil, err
	}
	if err := w.sendBatch(b); err != nil {
		return nil, err
	}
	return out, nil
}

// queueTask queues the statements that store one task, the i-th of its
// batch, in the status decide gave it. An id that exists already fails
// the batch with errand.ErrConflict.
func queueTask(w *wtx, b *pgx.Batch, i int, t *errand.Task, st errand.Status, now int64) (*errand.Task, error) {
	maxAttempts := st.MaxAttempts
	var errCode, errReason string
	if st.Code != "" {
		errCode, errReason = st.Code, "a dependency did not meet its condition"
	}
	selector := "{}"
	if t.Selector.Arch != "" || t.Selector.Group != "" || len(t.Selector.Labels) > 0 {
		b, err := json.Marshal(t.Selector)
		if err != nil {
			return nil, err
		}
		selector = string(b)
	}
	deps, err := jsonOrEmpty(t.DependsOn, len(t.DependsOn) == 0)
	if err != nil {
		return nil, err
	}
	out := &errand.Task{Kind: errand.KindTask, ID: t.ID, Type: t.Type, Data: t.Data, Selector: t.Selector,
		DependsOn: t.DependsOn, Affinity: t.Affinity, Priority: t.Priority, Timeout: t.Timeout,
		MaxAttempts: maxAttempts, RunID: t.RunID, State: st.State, Approvals: t.Approvals, CreatedAt: fromNanos(now)}
	if errCode != "" {
		out.Error = &errand.Error{Code: errCode, Reason: errReason}
	}
	var queuedAt, finishedAt *int64
	switch {
	case st.State == errand.StateQueued:
		queuedAt = &now
		out.QueuedAt = ptrTime(now)
		w.emit(store.Change{Kind: store.ChangeTaskQueued, TaskID: t.ID, TaskType: t.Type})
	case st.State.Terminal():
		finishedAt = &now
		out.FinishedAt = ptrTime(now)
		w.emit(store.Change{Kind: store.ChangeTaskEnded, TaskID: t.ID})
	}
	b.Queue(insertTaskSQL, t.ID, t.Type, nullBytes(t.Data), selector, deps,
		t.Affinity, t.Priority, int64(t.Timeout), maxAttempts, t.RunID, st.State, errCode, errReason,
		now, queuedAt, finishedAt, t.Approvals).Exec(func(tag pgconn.CommandTag) error {
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
	return out, nil
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
	row, err := scanTask(s.pool.QueryRow(ctx, `SELECT `+taskCols+` FROM tasks WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
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
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if len(p.States) > 0 {
		states := make([]string, len(p.States))
		for i, st := range p.States {
			states[i] = string(st)
		}
		where = append(where, "state = ANY("+arg(states)+")")
	}
	if p.Type != "" {
		where = append(where, "type = "+arg(p.Type))
	}
	if p.RunID != "" {
		where = append(where, "run_id = "+arg(p.RunID))
	}
	order := "seq"
	if p.After != "" {
		id := arg(p.After)
		cmp := "seq > coalesce((SELECT seq FROM tasks WHERE id = " + id + "), 0)"
		if p.Desc {
			cmp = "seq < coalesce((SELECT seq FROM tasks WHERE id = " + id + "), 9223372036854775807)"
		}
		where = append(where, cmp)
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
	q += " ORDER BY " + order + " LIMIT " + arg(limit)
	rows, err := s.pool.Query(ctx, q, args...)
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

// lockRow reads a task inside a write transaction and locks it until the
// transaction ends.
func lockRow(w *wtx, id string) (*taskRow, error) {
	row, err := scanTask(w.queryRow(`SELECT `+taskCols+` FROM tasks WHERE id = $1 FOR UPDATE`, id))
	if errors.Is(err, pgx.ErrNoRows) {
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
	if out, err := s.reportDirect(ctx, p, ev); out != nil || err != nil {
		return out, err
	}
	var out *errand.Task
	err := s.write(ctx, func(w *wtx) error {
		row, err := lockRow(w, p.TaskID)
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

// reportSQL applies a report in one statement, conditional on everything
// the careful path checks: $1 task, $2 delegate, $3 lease token (compared
// through its digest, so that how long the comparison takes tells nothing
// of the token), $4 the states the report may leave, $5 the state it
// reaches, $6 result (NULL keeps the stored one), $7 and $8 the error, $9
// the time, $10 whether the task starts running, $11 whether it ends. A
// task that ends must have no dependents: releasing them takes the
// careful path's transaction.
const reportSQL = `UPDATE tasks SET state = $5, result = coalesce($6, result),
	error_code = $7, error_reason = $8,
	started_at = CASE WHEN $10::boolean THEN $9 ELSE started_at END,
	finished_at = CASE WHEN $11::boolean THEN $9 ELSE finished_at END
WHERE id = $1 AND delegate_id = $2 AND lease_token <> ''
	AND sha256(convert_to(lease_token, 'UTF8')) = sha256(convert_to($3::text, 'UTF8'))
	AND state = ANY($4::text[]) AND NOT ($11::boolean AND has_dependents)
RETURNING ` + taskCols

// reportDirect applies a report in one round trip when it is the common
// case: the lease is current, the state machine takes the report from the
// state the task is in, and no dependents wait on it. It returns no task
// and no error otherwise, and the caller takes the careful path, which
// tells the cases apart.
//
// The reports a delegate sends (start, succeed, fail, cancelled, timeout)
// lead to a state that depends on the task's state alone: the statement
// is conditional on the states from which errand.Transition, asked here,
// reaches that same status.
func (s *Store) reportDirect(ctx context.Context, p store.TaskReportParams, ev errand.Event) (*errand.Task, error) {
	var (
		from []string
		next errand.Status
	)
	for _, st := range []errand.State{errand.StateLeased, errand.StateRunning} {
		cur := errand.Status{State: st, Attempt: 1, MaxAttempts: 1}
		n, err := errand.Transition(cur, ev)
		if err != nil {
			continue
		}
		if n.Attempt != cur.Attempt || n.CancelRequested != cur.CancelRequested || (len(from) > 0 && n != next) {
			// The outcome depends on more than the state.
			return nil, nil
		}
		from, next = append(from, string(st)), n
	}
	if len(from) == 0 || next.State == errand.StateQueued {
		return nil, nil
	}
	ends := next.State.Terminal()
	// Errors and results a task keeps, as applyTransition decides them
	// for a task coming from an active state, which a lease leaves
	// without an error.
	errCode, errReason := store.OutcomeError(nil, next, p.Error)
	var result []byte
	if ends && len(p.Result) > 0 {
		result = p.Result
	}
	var out *errand.Task
	err := s.write(ctx, func(w *wtx) error {
		row, err := scanTask(w.queryRow(reportSQL, p.TaskID, p.DelegateID, p.LeaseToken, from, next.State,
			result, errCode, errReason, nanos(p.Now), next.State == errand.StateRunning, ends))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("report task %s: %w", p.TaskID, err)
		}
		out = row.task()
		if ends {
			w.emit(store.Change{Kind: store.ChangeTaskEnded, TaskID: row.ID})
		}
		return nil
	}, writeImplicit)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// transitionExtras carries what a transition stores beside the status.
type transitionExtras struct {
	result     json.RawMessage
	err        *errand.Error
	clearLease bool // the lease expired: its token no longer reports
}

// applyTransition persists next for a task read (and locked) as row, then
// resolves the dependents of a task that ended, in the same transaction.
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
	if _, err := w.exec(`UPDATE tasks SET state = $1, attempt = $2, cancel_requested = $3, result = $4,
		error_code = $5, error_reason = $6, lease_token = $7, queued_at = $8, started_at = $9,
		finished_at = $10, approved = $12 WHERE seq = $11`,
		next.State, next.Attempt, next.CancelRequested, nullBytes(result), errCode, errReason, token,
		nullTime(t.QueuedAt), nullTime(t.StartedAt), nullTime(t.FinishedAt), row.seq, next.Approved); err != nil {
		return nil, fmt.Errorf("update task %s: %w", row.ID, err)
	}
	t.State, t.Attempt, t.CancelRequested, t.Approved = next.State, next.Attempt, next.CancelRequested, next.Approved
	t.Result = result
	t.Error = nil
	if errCode != "" {
		t.Error = &errand.Error{Code: errCode, Reason: errReason}
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

// releaseDependents resolves the pending tasks that depend on a task that
// just ended, in the same transaction. applyTransition recurses through
// the dependents this ends in turn (skips).
//
// Each dependent is locked before its dependencies are read: two
// dependencies ending at once in two transactions then take turns on it,
// and the second reads the first's committed outcome, so a dependent is
// never left pending.
func releaseDependents(w *wtx, endedID string, now int64) error {
	rows, err := w.query(`SELECT DISTINCT d.task_id FROM task_deps d JOIN tasks t ON t.id = d.task_id
		WHERE d.dep_id = $1 AND t.state = 'pending' ORDER BY d.task_id`, endedID)
	if err != nil {
		return fmt.Errorf("dependents of %s: %w", endedID, err)
	}
	dependents, err := pgx.CollectRows(rows, pgx.RowTo[string])
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

// resolvePending decides a pending task from its dependencies' states.
func resolvePending(w *wtx, id string, now int64) error {
	row, err := lockRow(w, id)
	if err != nil {
		return err
	}
	if row.State != errand.StatePending {
		return nil
	}
	rows, err := w.query(`SELECT d.condition, t.state FROM task_deps d JOIN tasks t ON t.id = d.dep_id
		WHERE d.task_id = $1 ORDER BY d.position`, id)
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
		row, err := lockRow(w, p.TaskID)
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
	rows, err := s.pool.Query(ctx, `SELECT id FROM tasks WHERE delegate_id = $1
		AND state IN ('leased', 'running') AND cancel_requested ORDER BY seq`, delegateID)
	if err != nil {
		return nil, fmt.Errorf("cancel requests of %s: %w", delegateID, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("cancel requests of %s: %w", delegateID, err)
	}
	if ids == nil {
		ids = []string{}
	}
	return ids, nil
}
