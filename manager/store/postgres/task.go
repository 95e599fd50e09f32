package postgres

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

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

// TaskGet returns one task.
func (s *Driver) TaskGet(ctx context.Context, id string) (*errand.Task, error) {
	row, err := scanTask(s.pool.QueryRow(ctx, `SELECT `+taskCols+` FROM tasks WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("task", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get task %s: %w", id, err)
	}
	return row.Detached(), nil
}

// TaskList returns tasks matching the filter in creation order, or
// newest first with p.Desc.
func (s *Driver) TaskList(ctx context.Context, p store.TaskListParams) ([]*errand.Task, error) {
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
		out = append(out, row.Detached())
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

// TaskCancelRequests lists a delegate's active tasks that a user cancelled.
func (s *Driver) TaskCancelRequests(ctx context.Context, delegateID string) ([]string, error) {
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
