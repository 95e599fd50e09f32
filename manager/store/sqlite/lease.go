package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/engine"
)

// candidate is a queued task that acquire considers, at its place in the
// queue scan.
type candidate struct {
	pos int
	row *taskRow
}

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
		if out, err = leaseTasks(w, d, picked, now); err != nil {
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
func leaseTasks(w *wtx, d *errand.Delegate, picked []candidate, now int64) ([]*errand.Task, error) {
	type lease struct {
		next    errand.Status
		token   string
		version int64
	}
	leases := make([]lease, len(picked))
	for i, c := range picked {
		next, err := errand.Transition(c.row.Status(), errand.EventLease)
		if err != nil {
			return nil, fmt.Errorf("lease task %s: %w", c.row.ID, err)
		}
		if next.State != errand.StateLeased {
			// The statement below writes what the machine decides for a
			// queued task; it must not decide anything else.
			return nil, fmt.Errorf("lease task %s: state machine says %s", c.row.ID, next.State)
		}
		tok, err := w.s.tokens.next()
		if err != nil {
			return nil, err
		}
		leases[i] = lease{next: next, token: tok, version: w.s.nextVersion()}
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
	args = append(args, d.ID, d.Group, now)
	attempts := byTask(func(i int) any { return leases[i].next.Attempt })
	tokens := byTask(func(i int) any { return leases[i].token })
	versions := byTask(func(i int) any { return leases[i].version })
	for _, c := range picked {
		args = append(args, c.row.Seq)
	}
	current := byTask(func(i int) any { return picked[i].row.Version })
	res, err := w.exec(`UPDATE tasks SET state = 'leased', delegate_id = ?, delegate_group = ?, lease_renewed = ?,
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
		t.State, t.Attempt, t.DelegateID, t.Error = l.next.State, l.next.Attempt, d.ID, nil
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

// TaskSweep expires silent delegates' leases and running tasks' timeouts.
func (s *Driver) TaskSweep(ctx context.Context, p store.TaskSweepParams) (store.TaskSweepResult, error) {
	var res store.TaskSweepResult
	now := nanos(p.Now)
	err := s.write(ctx, func(w *wtx) error {
		res = store.TaskSweepResult{}
		if p.LeaseTTL > 0 {
			lost, err := selectIDs(w, `SELECT id FROM delegates WHERE state <> 'lost' AND last_heartbeat < ? ORDER BY seq`,
				now-int64(p.LeaseTTL))
			if err != nil {
				return fmt.Errorf("sweep delegates: %w", err)
			}
			for _, id := range lost {
				if _, err := w.exec(`UPDATE delegates SET state = 'lost' WHERE id = ?`, id); err != nil {
					return fmt.Errorf("sweep delegate %s: %w", id, err)
				}
				res.LostDelegates = append(res.LostDelegates, id)
				if err := expireLeases(w, id, now, &res); err != nil {
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
		late, err := selectIDs(w, `SELECT id FROM tasks WHERE lease_token <> '' AND finished_at IS NULL AND state = 'running'
			AND timeout > 0 AND started_at + timeout + ? < ? ORDER BY seq`, int64(p.TimeoutGrace), now)
		if err != nil {
			return fmt.Errorf("sweep timeouts: %w", err)
		}
		for _, id := range late {
			row, err := getRow(w, id)
			if err != nil {
				return err
			}
			next, err := errand.Transition(row.Status(), errand.EventTimeout)
			if err != nil {
				return fmt.Errorf("time out task %s: %w", id, err)
			}
			if _, err := engine.Apply(w, row, next, engine.Extras{}, fromNanos(now)); err != nil {
				return err
			}
			res.TimedOut = append(res.TimedOut, id)
		}
		return nil
	})
	if err != nil {
		return store.TaskSweepResult{}, err
	}
	return res, nil
}

// expireLeases applies lease_expired to every active task of a delegate.
func expireLeases(w *wtx, delegateID string, now int64, res *store.TaskSweepResult) error {
	ids, err := selectIDs(w, `SELECT id FROM tasks WHERE delegate_id = ? AND lease_token <> '' AND finished_at IS NULL
		AND (state = 'leased' OR state = 'running') ORDER BY seq`, delegateID)
	if err != nil {
		return fmt.Errorf("tasks of delegate %s: %w", delegateID, err)
	}
	for _, id := range ids {
		if err := expireLease(w, id, now, res); err != nil {
			return err
		}
	}
	return nil
}

// expireLease applies lease_expired to one active task.
func expireLease(w *wtx, id string, now int64, res *store.TaskSweepResult) error {
	row, err := getRow(w, id)
	if err != nil {
		return err
	}
	next, err := errand.Transition(row.Status(), errand.EventLeaseExpired)
	if err != nil {
		return fmt.Errorf("expire lease of %s: %w", id, err)
	}
	if _, err := engine.Apply(w, row, next, engine.Extras{ClearLease: true}, fromNanos(now)); err != nil {
		return err
	}
	if res == nil {
		return nil
	}
	switch next.State {
	case errand.StateQueued:
		res.Requeued = append(res.Requeued, id)
	case errand.StateCancelled:
		res.Cancelled = append(res.Cancelled, id)
	default:
		res.Failed = append(res.Failed, id)
	}
	return nil
}

// expireUnrenewed applies lease_expired to the active tasks whose leases
// were not renewed for longer than ttl, though their delegates live.
func expireUnrenewed(w *wtx, now time.Time, ttl time.Duration, res *store.TaskSweepResult) error {
	rows, err := w.query(`SELECT id, lease_renewed FROM tasks WHERE lease_token <> '' AND finished_at IS NULL
		AND lease_renewed < ? ORDER BY +seq`, nanos(now.Add(-ttl)))
	if err != nil {
		return fmt.Errorf("sweep leases: %w", err)
	}
	var ids []string
	for rows.Next() {
		var (
			id      string
			renewed int64
		)
		if err := rows.Scan(&id, &renewed); err != nil {
			rows.Close()
			return fmt.Errorf("sweep leases: %w", err)
		}
		if (errand.LeaseCheck{Renewed: time.Unix(0, renewed)}).Ended(now, ttl) {
			ids = append(ids, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sweep leases: %w", err)
	}
	for _, id := range ids {
		if err := expireLease(w, id, nanos(now), res); err != nil {
			return err
		}
	}
	return nil
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
		ids, err := selectIDs(w, `SELECT id FROM tasks WHERE delegate_id = ? AND lease_token <> '' AND finished_at IS NULL
			ORDER BY seq`, p.DelegateID)
		if err != nil {
			return fmt.Errorf("tasks of delegate %s: %w", p.DelegateID, err)
		}
		for _, id := range ids {
			if !(errand.LeaseCheck{Named: held[id], Complete: true}).Ended(p.Now, 0) {
				continue
			}
			if err := expireLease(w, id, nanos(p.Now), &res); err != nil {
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
// lost or gone when no live delegate of its group may run them instead.
func failAffinityLost(w *wtx, now, lostBefore int64, res *store.TaskSweepResult) error {
	rows, err := w.query(`SELECT t.id, a.delegate_group FROM tasks t
		JOIN tasks a ON a.id = t.affinity AND a.delegate_id <> ''
		LEFT JOIN delegates ad ON ad.id = a.delegate_id
		WHERE t.state = 'queued' AND t.affinity <> ''
			AND (ad.id IS NULL OR (ad.state = 'lost' AND ad.last_heartbeat < ?))
		ORDER BY +t.seq`, lostBefore)
	if err != nil {
		return fmt.Errorf("sweep affinities: %w", err)
	}
	type orphan struct{ id, group string }
	var orphans []orphan
	for rows.Next() {
		var o orphan
		if err := rows.Scan(&o.id, &o.group); err != nil {
			rows.Close()
			return fmt.Errorf("sweep affinities: %w", err)
		}
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
		drows, err := w.query(`SELECT `+delegateCols+` FROM delegates WHERE grp = ? AND state = 'active' ORDER BY seq`, o.group)
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
		row, err := getRow(w, o.id)
		if err != nil {
			return err
		}
		if store.StandIn(&row.Task, live[o.group]) {
			continue
		}
		next, err := errand.Transition(row.Status(), errand.EventAffinityLost)
		if err != nil {
			return fmt.Errorf("fail task %s: %w", o.id, err)
		}
		if _, err := engine.Apply(w, row, next, engine.Extras{}, fromNanos(now)); err != nil {
			return err
		}
		res.AffinityLost = append(res.AffinityLost, o.id)
	}
	return nil
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
