package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// acquireSQL leases up to $1 queued tasks that the delegate may run, in one
// statement: the queue is walked in order, tasks locked by another acquire
// are skipped rather than waited for, and the rows taken are leased under
// the tokens in $9, one each, renewed at $10 (now).
//
// The delegate's fields are $2 id, $3 group, $4 task types (NULL: any),
// $5 archs, $6 labels (JSON object); $7 is the leased state and $8 the
// attempt increment, both decided by the engine (store.LeaseStep).
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

// TaskLease leases up to p.Max queued tasks to a delegate, and records
// that the delegate is alive.
func (s *Driver) TaskLease(ctx context.Context, p store.TaskAcquireParams, step store.LeaseStep) ([]*errand.Task, error) {
	d := p.Delegate
	limit := p.Max
	var err error
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
		// The planner estimates that almost no queued task matches the
		// selector conditions (it has no statistics for the JSON
		// expressions), and then prefers reading every queued task and
		// sorting them to walking tasks_queue in order: a cost that
		// grows with the queue. Walking the index stops after the first
		// limit matches.
		b.Queue(`SET LOCAL enable_seqscan = off`)
		b.Queue(`SET LOCAL enable_bitmapscan = off`)
		b.Queue(acquireSQL, limit, d.ID, d.Group, types, archs, string(labels),
			step.State, step.Attempts, tokens, now).Query(func(rows pgx.Rows) error {
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

// prefixScanner scans one column into first, then the rest as a task.
type prefixScanner struct {
	rows  pgx.Rows
	first any
}

func (p prefixScanner) Scan(dest ...any) error {
	return p.rows.Scan(append([]any{p.first}, dest...)...)
}
