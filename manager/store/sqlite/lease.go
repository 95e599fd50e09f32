package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// candidate is a queued task that acquire considers, at its place in the
// queue scan.
type candidate struct {
	pos int
	row *taskRow
}

// TaskLease leases up to p.Max queued tasks to a delegate, and records
// that the delegate is alive.
func (s *Driver) TaskLease(ctx context.Context, p store.TaskAcquireParams, step store.LeaseStep) ([]*errand.Task, error) {
	d := p.Delegate
	limit := p.Max
	now := nanos(p.Now)
	var out []*errand.Task
	err := s.write(ctx, func(w *wtx) error {
		out = nil
		res, err := w.exec(`UPDATE delegates SET last_heartbeat = ?,
			state = CASE state WHEN 'lost' THEN 'active' ELSE state END WHERE id = ?`, now, d.ID)
		if err != nil {
			return fmt.Errorf("acquire for %s: %w", d.ID, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return notFound("delegate", d.ID)
		}
		picked, err := pickQueued(w, d, limit)
		if err != nil {
			return fmt.Errorf("acquire for %s: %w", d.ID, err)
		}
		if len(picked) == 0 {
			return nil
		}
		if out, err = leaseTasks(w, d, picked, step, now); err != nil {
			return fmt.Errorf("acquire for %s: %w", d.ID, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []*errand.Task{}
	}
	return out, nil
}

// pickQueued walks the queue in order and keeps the first limit tasks the
// delegate may run.
func pickQueued(w *wtx, d *errand.Delegate, limit int) ([]candidate, error) {
	q := `SELECT ` + taskCols + ` FROM tasks WHERE state = 'queued'`
	var args []any
	if len(d.TaskTypes) > 0 && len(d.TaskTypes) <= 32 {
		q += ` AND type IN (?` + strings.Repeat(", ?", len(d.TaskTypes)-1) + `)`
		for _, t := range d.TaskTypes {
			args = append(args, t)
		}
	}
	q += ` ORDER BY priority DESC, queued_at, seq`
	rows, err := w.query(q, args...)
	if err != nil {
		return nil, err
	}
	var picked, withAffinity []candidate
	for pos := 0; len(picked) < limit && rows.Next(); pos++ {
		row, err := scanTask(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		if !d.Matches(&row.Task) {
			continue
		}
		c := candidate{pos: pos, row: row}
		if row.Affinity != "" {
			// Decided after the scan: it needs queries of its own.
			withAffinity = append(withAffinity, c)
			continue
		}
		picked = append(picked, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, c := range withAffinity {
		ok, err := affinityAllows(w, d, c.row.Affinity)
		if err != nil {
			return nil, err
		}
		if ok {
			picked = append(picked, c)
		}
	}
	if len(withAffinity) > 0 {
		// Back to queue order across both groups, then trim.
		sort.Slice(picked, func(i, j int) bool { return picked[i].pos < picked[j].pos })
	}
	if len(picked) > limit {
		picked = picked[:limit]
	}
	return picked, nil
}

// affinityAllows reports whether delegate d may run a task that follows
// task affID: only the delegate that holds or held it, or, when that
// delegate is lost or gone, a delegate of the same group. A task never
// leased constrains nothing.
func affinityAllows(w *wtx, d *errand.Delegate, affID string) (bool, error) {
	var holder, group string
	err := w.queryRow(`SELECT delegate_id, delegate_group FROM tasks WHERE id = ?`, affID).Scan(&holder, &group)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && holder == "") {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("affinity %s: %w", affID, err)
	}
	if holder == d.ID {
		return true, nil
	}
	var state errand.DelegateState
	err = w.queryRow(`SELECT state FROM delegates WHERE id = ?`, holder).Scan(&state)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return group == d.Group, nil
	case err != nil:
		return false, fmt.Errorf("affinity %s: %w", affID, err)
	case state == errand.DelegateLost:
		return group == d.Group, nil
	}
	return false, nil
}

// leaseTasks moves the picked queued tasks to leased, each under a new
// token, in one statement, and returns them with their leases and their
// dependencies' results.
func leaseTasks(w *wtx, d *errand.Delegate, picked []candidate, step store.LeaseStep, now int64) ([]*errand.Task, error) {
	type lease struct {
		attempt int
		token   string
		version int64
	}
	leases := make([]lease, len(picked))
	for i, c := range picked {
		tok, err := w.s.tokens.next()
		if err != nil {
			return nil, err
		}
		leases[i] = lease{attempt: c.row.Attempt + step.Attempts, token: tok, version: w.s.nextVersion()}
	}
	// One statement for all: a CASE on seq per column that differs between
	// the tasks, and each row must still be at the version read.
	var args []any
	byTask := func(val func(i int) any) string {
		var b strings.Builder
		b.WriteString("CASE seq")
		for i, c := range picked {
			b.WriteString(" WHEN ? THEN ?")
			args = append(args, c.row.Seq, val(i))
		}
		b.WriteString(" END")
		return b.String()
	}
	args = append(args, step.State, d.ID, d.Group, now)
	attempts := byTask(func(i int) any { return leases[i].attempt })
	tokens := byTask(func(i int) any { return leases[i].token })
	versions := byTask(func(i int) any { return leases[i].version })
	for _, c := range picked {
		args = append(args, c.row.Seq)
	}
	current := byTask(func(i int) any { return picked[i].row.Version })
	res, err := w.exec(`UPDATE tasks SET state = ?, delegate_id = ?, delegate_group = ?, lease_renewed = ?,
		error_code = '', error_reason = '', attempt = `+attempts+`, lease_token = `+tokens+`,
		version = `+versions+` WHERE seq IN (?`+strings.Repeat(", ?", len(picked)-1)+`) AND version = `+current,
		args...)
	if err != nil {
		return nil, fmt.Errorf("lease tasks: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || int(n) != len(picked) {
		return nil, fmt.Errorf("lease tasks: rows changed underneath (%d of %d, %v)", n, len(picked), err)
	}
	out := make([]*errand.Task, len(picked))
	for i, c := range picked {
		l := leases[i]
		t := c.row.Detached()
		t.State, t.Attempt, t.DelegateID, t.Error = step.State, l.attempt, d.ID, nil
		w.s.active.put(&taskRow{Task: *t, Seq: c.row.Seq, LeaseToken: l.token, HasDependents: c.row.HasDependents, Version: l.version})
		t.Lease = &errand.Lease{Token: l.token, DelegateID: d.ID}
		if len(t.DependsOn) > 0 {
			if t.Dependencies, err = dependencyResults(w, t.ID); err != nil {
				return nil, err
			}
		}
		out[i] = t
	}
	return out, nil
}

func dependencyResults(w *wtx, id string) ([]errand.DependencyResult, error) {
	rows, err := w.query(`SELECT t.id, t.type, t.state, t.result, t.error_code, t.error_reason
		FROM task_deps d JOIN tasks t ON t.id = d.dep_id WHERE d.task_id = ? ORDER BY d.position`, id)
	if err != nil {
		return nil, fmt.Errorf("dependencies of %s: %w", id, err)
	}
	defer rows.Close()
	var out []errand.DependencyResult
	for rows.Next() {
		var (
			r            errand.DependencyResult
			result       []byte
			code, reason string
		)
		if err := rows.Scan(&r.Task, &r.Type, &r.State, &result, &code, &reason); err != nil {
			return nil, fmt.Errorf("dependencies of %s: %w", id, err)
		}
		if len(result) > 0 {
			r.Result = json.RawMessage(result)
		}
		if code != "" {
			r.Error = &errand.Error{Code: code, Reason: reason}
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("dependencies of %s: %w", id, err)
	}
	return out, nil
}

func selectIDs(w *wtx, q string, args ...any) ([]string, error) {
	rows, err := w.query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// selectIDsWith runs q, whose rows are an id and one more column, and
// returns the ids and that column's values in row order.
func selectIDsWith[T any](w *wtx, q string, args ...any) ([]string, []T, error) {
	rows, err := w.query(q, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var (
		ids    []string
		values []T
	)
	for rows.Next() {
		var (
			id string
			v  T
		)
		if err := rows.Scan(&id, &v); err != nil {
			return nil, nil, err
		}
		ids, values = append(ids, id), append(values, v)
	}
	return ids, values, rows.Err()
}
