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
	"github.com/errandci/errand/manager/store/engine"
)

// acquireSQL leases up to $1 queued tasks that the delegate may run, in one
// statement: the queue is walked in order, tasks locked by another acquire
// are skipped rather than waited for, and the rows taken are leased under
// the tokens in $9, one each, renewed at $10 (now).
//
// The delegate's fields are $2 id, $3 group, $4 task types (NULL: any),
// $5 archs, $6 labels (JSON object); $7 is the leased state and $8 the
// attempt increment, both decided by errand.Transition.
//
// Nothing is leased to a delegate that is not registered: the statement
// runs in one batch after the delegate's heartbeat is recorded, and the
// batch fails if there was none to record.
//
// A task with an affinity may go only to the delegate that holds or held
// its affinity task, or, when that delegate is lost or gone, to one of the
// same group; an affinity task never leased constrains nothing.
const acquireSQL = `WITH picked AS MATERIALIZED (
	SELECT t.seq FROM tasks t
	WHERE t.state = 'queued'
		AND EXISTS (SELECT 1 FROM delegates WHERE id = $2)
		AND ($4::text[] IS NULL OR t.type = ANY($4))
		AND (coalesce(t.selector->>'arch', '') = '' OR t.selector->>'arch' = ANY($5::text[]))
		AND (coalesce(t.selector->>'group', '') = '' OR t.selector->>'group' = $3)
		AND (t.selector->'labels' IS NULL OR t.selector->'labels' <@ $6::jsonb)
		AND (t.affinity = '' OR NOT EXISTS (
			SELECT 1 FROM tasks a
			LEFT JOIN delegates ad ON ad.id = a.delegate_id
			WHERE a.id = t.affinity AND a.delegate_id <> '' AND a.delegate_id <> $2
				AND NOT ((ad.id IS NULL OR ad.state = 'lost') AND a.delegate_group = $3)))
	ORDER BY t.priority DESC, t.queued_at, t.seq
	LIMIT $1
	FOR UPDATE OF t SKIP LOCKED
), numbered AS (
	SELECT seq, row_number() OVER (ORDER BY seq) AS n FROM picked
)
UPDATE tasks t SET state = $7, attempt = t.attempt + $8, delegate_id = $2, delegate_group = $3,
	lease_token = ($9::text[])[numbered.n], lease_renewed = $10, error_code = '', error_reason = ''
FROM numbered WHERE t.seq = numbered.seq
RETURNING ` + returningTaskCols

// qualifiedTaskCols is taskCols of tasks t, for queries that join.
const qualifiedTaskCols = returningTaskCols

// returningTaskCols is taskCols qualified for the UPDATE … FROM above.
const returningTaskCols = `t.seq, t.id, t.type, t.data, t.selector, t.depends_on, t.affinity,
	t.priority, t.timeout, t.max_attempts, t.run_id, t.state, t.attempt, t.cancel_requested,
	t.delegate_id, t.lease_token, t.result, t.error_code, t.error_reason, t.log_lines,
	t.has_dependents, t.created_at, t.queued_at, t.started_at, t.finished_at, t.approvals, t.approved`

// TaskAcquire leases up to p.Max queued tasks to a delegate, and records
// that the delegate is alive.
func (s *Driver) TaskAcquire(ctx context.Context, p store.TaskAcquireParams) ([]*errand.Task, error) {
	d := p.Delegate
	if d == nil || d.ID == "" {
		return nil, errand.Errorf(errand.CodeInvalid, "delegate: required")
	}
	limit := p.Max
	if limit <= 0 {
		limit = 1
	}
	// What a lease does to a queued task, as the state machine says.
	queued := errand.Status{State: errand.StateQueued, MaxAttempts: 1}
	leased, err := errand.Transition(queued, errand.EventLease)
	if err != nil {
		return nil, err
	}
	tokens := make([]string, limit)
	for i := range tokens {
		if tokens[i], err = newToken(); err != nil {
			return nil, err
		}
	}
	var types []string
	if len(d.TaskTypes) > 0 {
		types = d.TaskTypes
	}
	archs := d.Archs
	if archs == nil {
		archs = []string{}
	}
	labels := []byte("{}")
	if len(d.Labels) > 0 {
		if labels, err = json.Marshal(d.Labels); err != nil {
			return nil, fmt.Errorf("acquire for %s: %w", d.ID, err)
		}
	}
	now := nanos(p.Now)
	var out []*errand.Task
	err = s.write(ctx, func(w *wtx) error {
		out = nil
		// Heartbeat and lease in one round trip, one implicit
		// transaction.
		var got []*taskRow
		b := &pgx.Batch{}
		b.Queue(`UPDATE delegates SET last_heartbeat = $1,
			state = CASE state WHEN 'lost' THEN 'active' ELSE state END WHERE id = $2`, now, d.ID).
			Exec(func(tag pgconn.CommandTag) error {
				if tag.RowsAffected() == 0 {
					return notFound("delegate", d.ID)
				}
				return nil
			})
		b.Queue(acquireSQL, limit, d.ID, d.Group, types, archs, string(labels),
			leased.State, leased.Attempt-queued.Attempt, tokens, now).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				row, err := scanTask(rows)
				if err != nil {
					return err
				}
				got = append(got, row)
			}
			return rows.Err()
		})
		if err := w.sendBatch(b); err != nil {
			if errors.Is(err, errand.ErrNotFound) {
				return err
			}
			return fmt.Errorf("acquire for %s: %w", d.ID, err)
		}
		// RETURNING follows no order: back to the queue's.
		sort.Slice(got, func(i, j int) bool {
			a, b := got[i], got[j]
			if a.Priority != b.Priority {
				return a.Priority > b.Priority
			}
			if !a.QueuedAt.Equal(*b.QueuedAt) {
				return a.QueuedAt.Before(*b.QueuedAt)
			}
			return a.Seq < b.Seq
		})
		var withDeps []string
		for _, row := range got {
			t := row.Detached()
			t.Error = nil
			t.Lease = &errand.Lease{Token: row.LeaseToken, DelegateID: d.ID}
			out = append(out, t)
			if len(t.DependsOn) > 0 {
				withDeps = append(withDeps, t.ID)
			}
		}
		if len(withDeps) > 0 {
			// Results of ended dependencies no longer change: they
			// need not be read in the leasing transaction.
			return dependencyResults(w, withDeps, out)
		}
		return nil
	}, writeImplicit)
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []*errand.Task{}
	}
	return out, nil
}

// dependencyResults sets the Dependencies of the leased tasks in ids.
func dependencyResults(w *wtx, ids []string, tasks []*errand.Task) error {
	byID := make(map[string]*errand.Task, len(tasks))
	for _, t := range tasks {
		byID[t.ID] = t
	}
	rows, err := w.query(`SELECT d.task_id, t.id, t.type, t.state, t.result, t.error_code, t.error_reason
		FROM task_deps d JOIN tasks t ON t.id = d.dep_id WHERE d.task_id = ANY($1)
		ORDER BY d.task_id, d.position`, ids)
	if err != nil {
		return fmt.Errorf("dependencies: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			of, code, reason string
			r                errand.DependencyResult
			result           []byte
		)
		if err := rows.Scan(&of, &r.Task, &r.Type, &r.State, &result, &code, &reason); err != nil {
			return fmt.Errorf("dependencies of %s: %w", of, err)
		}
		if len(result) > 0 {
			r.Result = json.RawMessage(result)
		}
		if code != "" {
			r.Error = &errand.Error{Code: code, Reason: reason}
		}
		if t := byID[of]; t != nil {
			t.Dependencies = append(t.Dependencies, r)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("dependencies: %w", err)
	}
	return nil
}

// TaskSweep expires silent delegates' leases and running tasks' timeouts.
// Several managers may sweep at once: each expiry is a conditional write
// on a locked row, so the second sweeper finds it done and skips it.
func (s *Driver) TaskSweep(ctx context.Context, p store.TaskSweepParams) (store.TaskSweepResult, error) {
	var res store.TaskSweepResult
	now := nanos(p.Now)
	err := s.write(ctx, func(w *wtx) error {
		res = store.TaskSweepResult{}
		if p.LeaseTTL > 0 {
			rows, err := w.query(`UPDATE delegates SET state = 'lost'
				WHERE seq IN (SELECT seq FROM delegates WHERE state <> 'lost' AND last_heartbeat < $1
					ORDER BY seq FOR UPDATE SKIP LOCKED)
				RETURNING seq, id`, now-int64(p.LeaseTTL))
			if err != nil {
				return fmt.Errorf("sweep delegates: %w", err)
			}
			type lostDelegate struct {
				seq int64
				id  string
			}
			var lost []lostDelegate
			for rows.Next() {
				var l lostDelegate
				if err := rows.Scan(&l.seq, &l.id); err != nil {
					rows.Close()
					return fmt.Errorf("sweep delegates: %w", err)
				}
				lost = append(lost, l)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("sweep delegates: %w", err)
			}
			sort.Slice(lost, func(i, j int) bool { return lost[i].seq < lost[j].seq })
			for _, l := range lost {
				res.LostDelegates = append(res.LostDelegates, l.id)
				if err := expireLeases(w, l.id, now, &res); err != nil {
					return err
				}
			}
		}
		if p.LeaseTTL > 0 {
			if err := expireUnrenewed(w, p.Now, p.LeaseTTL, &res); err != nil {
				return err
			}
		}
		if err := failAffinityLost(w, now, now-int64(p.LeaseTTL+p.AffinityGrace), &res); err != nil {
			return err
		}
		rows, err := w.query(`SELECT `+taskCols+` FROM tasks WHERE state = 'running'
			AND timeout > 0 AND started_at + timeout + $1 < $2 ORDER BY seq FOR UPDATE SKIP LOCKED`,
			int64(p.TimeoutGrace), now)
		if err != nil {
			return fmt.Errorf("sweep timeouts: %w", err)
		}
		late, err := collectTasks(rows)
		if err != nil {
			return fmt.Errorf("sweep timeouts: %w", err)
		}
		for _, row := range late {
			next, err := errand.Transition(row.Status(), errand.EventTimeout)
			if err != nil {
				return fmt.Errorf("time out task %s: %w", row.ID, err)
			}
			if _, err := engine.Apply(w, row, next, engine.Extras{}, fromNanos(now)); err != nil {
				return err
			}
			res.TimedOut = append(res.TimedOut, row.ID)
		}
		return nil
	})
	if err != nil {
		return store.TaskSweepResult{}, err
	}
	return res, nil
}

func collectTasks(rows pgx.Rows) ([]*taskRow, error) {
	defer rows.Close()
	var out []*taskRow
	for rows.Next() {
		row, err := scanTask(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

// expireLeases applies lease_expired to every active task of a delegate.
func expireLeases(w *wtx, delegateID string, now int64, res *store.TaskSweepResult) error {
	rows, err := w.query(`SELECT `+taskCols+` FROM tasks WHERE delegate_id = $1
		AND state IN ('leased', 'running') ORDER BY seq FOR UPDATE`, delegateID)
	if err != nil {
		return fmt.Errorf("tasks of delegate %s: %w", delegateID, err)
	}
	active, err := collectTasks(rows)
	if err != nil {
		return fmt.Errorf("tasks of delegate %s: %w", delegateID, err)
	}
	for _, row := range active {
		if err := expireLease(w, row, now, res); err != nil {
			return err
		}
	}
	return nil
}

// expireLease applies lease_expired to one active task, read locked.
func expireLease(w *wtx, row *taskRow, now int64, res *store.TaskSweepResult) error {
	next, err := errand.Transition(row.Status(), errand.EventLeaseExpired)
	if err != nil {
		return fmt.Errorf("expire lease of %s: %w", row.ID, err)
	}
	if _, err := engine.Apply(w, row, next, engine.Extras{ClearLease: true}, fromNanos(now)); err != nil {
		return err
	}
	if res == nil {
		return nil
	}
	switch next.State {
	case errand.StateQueued:
		res.Requeued = append(res.Requeued, row.ID)
	case errand.StateCancelled:
		res.Cancelled = append(res.Cancelled, row.ID)
	default:
		res.Failed = append(res.Failed, row.ID)
	}
	return nil
}

// expireUnrenewed applies lease_expired to the active tasks whose leases
// were not renewed for longer than ttl, though their delegates live.
// Rows another sweeper holds are skipped: it expires them.
func expireUnrenewed(w *wtx, now time.Time, ttl time.Duration, res *store.TaskSweepResult) error {
	rows, err := w.query(`SELECT lease_renewed, `+taskCols+` FROM tasks WHERE state IN ('leased', 'running')
		AND lease_renewed < $1 ORDER BY seq FOR UPDATE SKIP LOCKED`, nanos(now.Add(-ttl)))
	if err != nil {
		return fmt.Errorf("sweep leases: %w", err)
	}
	var late []*taskRow
	for rows.Next() {
		var renewed int64
		row, err := scanTask(prefixScanner{rows: rows, first: &renewed})
		if err != nil {
			rows.Close()
			return fmt.Errorf("sweep leases: %w", err)
		}
		if (errand.LeaseCheck{Renewed: time.Unix(0, renewed)}).Ended(now, ttl) {
			late = append(late, row)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sweep leases: %w", err)
	}
	for _, row := range late {
		if err := expireLease(w, row, nanos(now), res); err != nil {
			return err
		}
	}
	return nil
}

// prefixScanner scans one column into first, then the rest as a task.
type prefixScanner struct {
	rows  pgx.Rows
	first any
}

func (p prefixScanner) Scan(dest ...any) error {
	return p.rows.Scan(append([]any{p.first}, dest...)...)
}

// TaskRelease ends at once the leases of a delegate's active tasks that
// its complete statement does not name.
func (s *Driver) TaskRelease(ctx context.Context, p store.TaskReleaseParams) (store.TaskSweepResult, error) {
	var res store.TaskSweepResult
	if p.DelegateID == "" {
		return res, errand.Errorf(errand.CodeInvalid, "delegate: required")
	}
	held := make(map[string]bool, len(p.Held))
	for _, id := range p.Held {
		held[id] = true
	}
	err := s.write(ctx, func(w *wtx) error {
		res = store.TaskSweepResult{}
		rows, err := w.query(`SELECT `+taskCols+` FROM tasks WHERE delegate_id = $1
			AND state IN ('leased', 'running') ORDER BY seq FOR UPDATE`, p.DelegateID)
		if err != nil {
			return fmt.Errorf("tasks of delegate %s: %w", p.DelegateID, err)
		}
		active, err := collectTasks(rows)
		if err != nil {
			return fmt.Errorf("tasks of delegate %s: %w", p.DelegateID, err)
		}
		for _, row := range active {
			if !(errand.LeaseCheck{Named: held[row.ID], Complete: true}).Ended(p.Now, 0) {
				continue
			}
			if err := expireLease(w, row, nanos(p.Now), &res); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return store.TaskSweepResult{}, fmt.Errorf("release leases of delegate %s: %w", p.DelegateID, err)
	}
	return res, nil
}

// failAffinityLost fails the queued tasks whose affinity task's delegate is
// gone, or lost since before lostBefore, when no active delegate of its
// group may run them instead.
func failAffinityLost(w *wtx, now, lostBefore int64, res *store.TaskSweepResult) error {
	rows, err := w.query(`SELECT a.delegate_group, `+qualifiedTaskCols+` FROM tasks t
		JOIN tasks a ON a.id = t.affinity AND a.delegate_id <> ''
		LEFT JOIN delegates ad ON ad.id = a.delegate_id
		WHERE t.state = 'queued' AND t.affinity <> ''
			AND (ad.id IS NULL OR (ad.state = 'lost' AND ad.last_heartbeat < $1))
		ORDER BY t.seq FOR UPDATE OF t SKIP LOCKED`, lostBefore)
	if err != nil {
		return fmt.Errorf("sweep affinities: %w", err)
	}
	type orphan struct {
		group string
		row   *taskRow
	}
	var orphans []orphan
	for rows.Next() {
		var o orphan
		row, err := scanTask(prefixScanner{rows: rows, first: &o.group})
		if err != nil {
			rows.Close()
			return fmt.Errorf("sweep affinities: %w", err)
		}
		o.row = row
		orphans = append(orphans, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(orphans) == 0 {
		return err
	}
	live := map[string][]*errand.Delegate{}
	for _, o := range orphans {
		if _, ok := live[o.group]; ok {
			continue
		}
		drows, err := w.query(`SELECT `+delegateCols+` FROM delegates WHERE grp = $1 AND state = 'active' ORDER BY seq`, o.group)
		if err != nil {
			return fmt.Errorf("sweep affinities: %w", err)
		}
		var ds []*errand.Delegate
		for drows.Next() {
			d, err := scanDelegate(drows)
			if err != nil {
				drows.Close()
				return fmt.Errorf("sweep affinities: %w", err)
			}
			ds = append(ds, d)
		}
		drows.Close()
		if err := drows.Err(); err != nil {
			return fmt.Errorf("sweep affinities: %w", err)
		}
		live[o.group] = ds
	}
	for _, o := range orphans {
		if store.StandIn(&o.row.Task, live[o.group]) {
			continue
		}
		next, err := errand.Transition(o.row.Status(), errand.EventAffinityLost)
		if err != nil {
			return fmt.Errorf("fail task %s: %w", o.row.ID, err)
		}
		if _, err := engine.Apply(w, o.row, next, engine.Extras{}, fromNanos(now)); err != nil {
			return err
		}
		res.AffinityLost = append(res.AffinityLost, o.row.ID)
	}
	return nil
}
