package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// DelegateRegister inserts a delegate the engine checked.
func (s *Driver) DelegateRegister(ctx context.Context, p store.DelegateRegisterParams) (*errand.Delegate, error) {
	d := p.Delegate
	labels, err := jsonOrEmpty(d.Labels, len(d.Labels) == 0)
	if err != nil {
		return nil, fmt.Errorf("register delegate %s: %w", d.ID, err)
	}
	archs, err := jsonOrEmpty(d.Archs, len(d.Archs) == 0)
	if err != nil {
		return nil, fmt.Errorf("register delegate %s: %w", d.ID, err)
	}
	types, err := jsonOrEmpty(d.TaskTypes, len(d.TaskTypes) == 0)
	if err != nil {
		return nil, fmt.Errorf("register delegate %s: %w", d.ID, err)
	}
	var out *errand.Delegate
	err = s.write(ctx, func(w *wtx) error {
		now := nanos(p.Now)
		out, err = scanDelegate(w.queryRow(`INSERT INTO delegates (id, name, hostname, grp, labels, archs,
			capacity, task_types, dynamic, version, state, token_hash, created_at, last_heartbeat)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
			ON CONFLICT (id) DO NOTHING RETURNING `+delegateCols,
			d.ID, d.Name, d.Hostname, d.Group, labels, archs, d.Capacity, types, d.Dynamic,
			d.Version, errand.DelegateActive, p.TokenHash, now, now))
		if errors.Is(err, pgx.ErrNoRows) {
			return errand.Errorf(errand.CodeConflict, "delegate %s exists", d.ID)
		}
		if err != nil {
			return fmt.Errorf("register delegate %s: %w", d.ID, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DelegateGet returns one delegate.
func (s *Driver) DelegateGet(ctx context.Context, id string) (*errand.Delegate, error) {
	d, err := scanDelegate(s.pool.QueryRow(ctx, `SELECT `+delegateCols+` FROM delegates WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("delegate", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get delegate %s: %w", id, err)
	}
	return d, nil
}

// DelegateTokenHash returns the hash of a delegate's token.
func (s *Driver) DelegateTokenHash(ctx context.Context, id string) (string, error) {
	var h string
	err := s.pool.QueryRow(ctx, `SELECT token_hash FROM delegates WHERE id = $1`, id).Scan(&h)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", notFound("delegate", id)
	}
	if err != nil {
		return "", fmt.Errorf("token hash of delegate %s: %w", id, err)
	}
	return h, nil
}

// DelegateList returns delegates in registration order.
func (s *Driver) DelegateList(ctx context.Context, p store.DelegateListParams) ([]*errand.Delegate, error) {
	var (
		where []string
		args  []any
	)
	if p.Group != "" {
		args = append(args, p.Group)
		where = append(where, fmt.Sprintf("grp = $%d", len(args)))
	}
	if len(p.States) > 0 {
		states := make([]string, len(p.States))
		for i, st := range p.States {
			states[i] = string(st)
		}
		args = append(args, states)
		where = append(where, fmt.Sprintf("state = ANY($%d)", len(args)))
	}
	if p.After != "" {
		args = append(args, p.After)
		where = append(where, fmt.Sprintf("seq > coalesce((SELECT seq FROM delegates WHERE id = $%d), 9223372036854775807)", len(args)))
	}
	q := `SELECT ` + delegateCols + ` FROM delegates`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY seq"
	if p.Limit > 0 {
		args = append(args, p.Limit)
		q += fmt.Sprintf(" LIMIT $%d", len(args))
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list delegates: %w", err)
	}
	defer rows.Close()
	out := []*errand.Delegate{}
	for rows.Next() {
		d, err := scanDelegate(rows)
		if err != nil {
			return nil, fmt.Errorf("list delegates: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list delegates: %w", err)
	}
	return out, nil
}

// DelegateTouch records heartbeats of many delegates in one statement.
// Rows are locked in id order, as everywhere, so that touches of
// overlapping sets never deadlock.
func (s *Driver) DelegateTouch(ctx context.Context, p store.DelegateTouchParams) error {
	if len(p.IDs) == 0 {
		return nil
	}
	ids := slices.Clone(p.IDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	// The leases to renew, as parallel arrays of delegate and task ids, in
	// delegate order.
	var byDelegate, tasks []string
	for _, id := range ids {
		for _, t := range p.Running[id] {
			byDelegate = append(byDelegate, id)
			tasks = append(tasks, t)
		}
	}
	err := s.write(ctx, func(w *wtx) error {
		_, err := w.exec(`UPDATE delegates SET last_heartbeat = $1,
			state = CASE state WHEN 'lost' THEN 'active' ELSE state END
			WHERE seq IN (SELECT seq FROM delegates WHERE id = ANY($2) ORDER BY id FOR UPDATE)`, nanos(p.Now), ids)
		if err != nil || len(tasks) == 0 {
			return err
		}
		// Rows another transaction holds (a report, a sweep) are not
		// waited for: that one decides, and a lease renewed a moment
		// later is renewed by the next heartbeat.
		_, err = w.exec(`UPDATE tasks t SET lease_renewed = $1
			WHERE t.seq IN (SELECT t2.seq FROM tasks t2
				JOIN unnest($2::text[], $3::text[]) AS n(delegate_id, task_id)
					ON t2.id = n.task_id AND t2.delegate_id = n.delegate_id
				WHERE t2.state IN ('leased', 'running') ORDER BY t2.seq FOR UPDATE SKIP LOCKED)`,
			nanos(p.Now), byDelegate, tasks)
		if err != nil {
			return fmt.Errorf("renew leases: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("touch delegates: %w", err)
	}
	return nil
}

// DelegateUpdate changes the fields set in p.
func (s *Driver) DelegateUpdate(ctx context.Context, p store.DelegateUpdateParams) (*errand.Delegate, error) {
	if p.State != nil {
		switch *p.State {
		case errand.DelegateActive, errand.DelegateDraining, errand.DelegateLost:
		default:
			return nil, errand.Errorf(errand.CodeInvalid, "state: unknown delegate state %q", *p.State)
		}
	}
	var out *errand.Delegate
	err := s.write(ctx, func(w *wtx) error {
		old, err := scanDelegate(w.queryRow(`SELECT `+delegateCols+` FROM delegates WHERE id = $1 FOR UPDATE`, p.ID))
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("delegate", p.ID)
		}
		if err != nil {
			return fmt.Errorf("update delegate %s: %w", p.ID, err)
		}
		d := *old
		if p.State != nil {
			d.State = *p.State
		}
		if p.Overloaded != nil {
			d.Overloaded = *p.Overloaded
		}
		if p.DrainRequested != nil {
			d.DrainRequested = *p.DrainRequested
		}
		if _, err := w.exec(`UPDATE delegates SET state = $1, overloaded = $2, drain_requested = $3 WHERE id = $4`,
			d.State, d.Overloaded, d.DrainRequested, p.ID); err != nil {
			return fmt.Errorf("update delegate %s: %w", p.ID, err)
		}
		if d.DrainRequested && !old.DrainRequested {
			w.emit(store.Change{Kind: store.ChangeDrainRequested, DelegateID: p.ID})
		}
		out = &d
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
