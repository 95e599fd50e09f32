package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// taskInsertCols are the columns TaskCreate writes, in prepareTask's order.
const taskInsertCols = `id, type, data, selector, depends_on, affinity, priority, timeout,
	max_attempts, run_id, state, error_code, error_reason, has_dependents, created_at, queued_at,
	finished_at, approvals, approved, version`

// taskInsertWidth is the number of taskInsertCols.
const taskInsertWidth = 20

// insertChunk bounds the rows of one INSERT statement.
const insertChunk = 32

// insertTasks writes the rows of a batch, several to a statement, in batch
// order. An id that exists already is errand.ErrConflict.
func insertTasks(w *wtx, tasks []*store.TaskRow, rows [][]any) error {
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
func insertEdges(w *wtx, t *errand.Task, inBatch map[string]bool) error {
	for j, d := range t.DependsOn {
		cond := d.Condition
		if cond == "" {
			cond = errand.OnSuccess
		}
		if _, err := w.exec(`INSERT INTO task_deps (task_id, dep_id, condition, position) VALUES (?, ?, ?, ?)`,
			t.ID, d.Task, cond, j); err != nil {
			return err
		}
		if inBatch[d.Task] {
			continue
		}
		if _, err := w.exec(`UPDATE tasks SET has_dependents = 1, version = ? WHERE id = ? AND has_dependents = 0`,
			w.s.nextVersion(), d.Task); err != nil {
			return err
		}
	}
	return nil
}

// TaskGet returns one task.
func (s *Driver) TaskGet(ctx context.Context, id string) (*errand.Task, error) {
	row, err := scanTask(s.rdb.QueryRowContext(ctx, `SELECT `+taskCols+` FROM tasks WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
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
		out = append(out, row.Detached())
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

// TaskCancelRequests lists a delegate's active tasks that a user cancelled.
func (s *Driver) TaskCancelRequests(ctx context.Context, delegateID string) ([]string, error) {
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

func nullTime(t *time.Time) any {
	if t == nil {
		return nil
	}
	return nanos(*t)
}
