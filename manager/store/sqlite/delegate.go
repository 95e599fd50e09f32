package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

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
		var n int
		if err := w.queryRow(`SELECT count(*) FROM delegates WHERE id = ?`, d.ID).Scan(&n); err != nil {
			return fmt.Errorf("register delegate %s: %w", d.ID, err)
		}
		if n > 0 {
			return errand.Errorf(errand.CodeConflict, "delegate %s exists", d.ID)
		}
		now := nanos(p.Now)
		w.wrote = true
		out, err = scanDelegate(w.queryRow(`INSERT INTO delegates (id, name, hostname, grp, labels, archs,
			capacity, task_types, dynamic, version, state, token_hash, created_at, last_heartbeat)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING `+delegateCols,
			d.ID, d.Name, d.Hostname, d.Group, labels, archs, d.Capacity, types, boolInt(d.Dynamic),
			d.Version, errand.DelegateActive, p.TokenHash, now, now))
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
	d, err := scanDelegate(s.rdb.QueryRowContext(ctx, `SELECT `+delegateCols+` FROM delegates WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
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
	err := s.rdb.QueryRowContext(ctx, `SELECT token_hash FROM delegates WHERE id = ?`, id).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
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
		where = append(where, "grp = ?")
		args = append(args, p.Group)
	}
	if len(p.States) > 0 {
		where = append(where, "state IN (?"+strings.Repeat(", ?", len(p.States)-1)+")")
		for _, st := range p.States {
			args = append(args, st)
		}
	}
	if p.After != "" {
		where = append(where, "seq > coalesce((SELECT seq FROM delegates WHERE id = ?), 9223372036854775807)")
		args = append(args, p.After)
	}
	q := `SELECT ` + delegateCols + ` FROM delegates`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY seq"
	if p.Limit > 0 {
		q += " LIMIT ?"
		args = append(args, p.Limit)
	}
	rows, err := s.rdb.QueryContext(ctx, q, args...)
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

// DelegateTouch records heartbeats of many delegates in one transaction.
func (s *Driver) DelegateTouch(ctx context.Context, p store.DelegateTouchParams) error {
	if len(p.IDs) == 0 {
		return nil
	}
	now := nanos(p.Now)
	err := s.write(ctx, func(w *wtx) error {
		for _, id := range p.IDs {
			if _, err := w.exec(`UPDATE delegates SET last_heartbeat = ?,
				state = CASE state WHEN 'lost' THEN 'active' ELSE state END WHERE id = ?`, now, id); err != nil {
				return err
			}
			if running := p.Running[id]; len(running) > 0 {
				args := make([]any, 0, len(running)+2)
				args = append(args, now, id)
				for _, t := range running {
					args = append(args, t)
				}
				if _, err := w.exec(`UPDATE tasks SET lease_renewed = ? WHERE delegate_id = ?
					AND lease_token <> '' AND finished_at IS NULL
					AND id IN (?`+strings.Repeat(", ?", len(running)-1)+`)`, args...); err != nil {
					return fmt.Errorf("renew leases of %s: %w", id, err)
				}
			}
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
		old, err := scanDelegate(w.queryRow(`SELECT `+delegateCols+` FROM delegates WHERE id = ?`, p.ID))
		if errors.Is(err, sql.ErrNoRows) {
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
		if _, err := w.exec(`UPDATE delegates SET state = ?, overloaded = ?, drain_requested = ? WHERE id = ?`,
			d.State, boolInt(d.Overloaded), boolInt(d.DrainRequested), p.ID); err != nil {
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
