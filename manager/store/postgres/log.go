package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// LogAppend appends lines at p.Offset under the task's lease. The task
// row is locked for the append, so appends to one task take turns
// whichever manager receives them.
func (s *Store) LogAppend(ctx context.Context, p store.LogAppendParams) (int64, error) {
	if p.Offset < 0 {
		return 0, errand.Errorf(errand.CodeInvalid, "offset: negative")
	}
	var next int64
	err := s.write(ctx, func(w *wtx) error {
		var (
			state           errand.State
			token, delegate string
			lines           int64
			sealed          bool
		)
		err := w.queryRow(`SELECT state, lease_token, delegate_id, log_lines, log_sealed FROM tasks
			WHERE id = $1 FOR UPDATE`, p.TaskID).Scan(&state, &token, &delegate, &lines, &sealed)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("task", p.TaskID)
		}
		if err != nil {
			return fmt.Errorf("append log of %s: %w", p.TaskID, err)
		}
		if !leaseMatches(token, p.LeaseToken) {
			return errand.Errorf(errand.CodeLeaseLost, "task %s: lease is not current", p.TaskID)
		}
		if delegate != p.DelegateID {
			return errand.Errorf(errand.CodeForbidden, "task %s: leased to another delegate", p.TaskID)
		}
		if p.Offset > lines {
			return errand.Errorf(errand.CodeLogOffset, "task %s: append at %d leaves a gap: expected offset %d",
				p.TaskID, p.Offset, lines)
		}
		end := p.Offset + int64(len(p.Lines))
		if end <= lines {
			// Every line is stored already: a retry.
			next = lines
			return nil
		}
		if !state.Active() || sealed {
			return errand.Errorf(errand.CodeLeaseLost, "task %s: %s, its log is closed", p.TaskID, state)
		}
		fresh := p.Lines[lines-p.Offset:]
		text := make([][]byte, len(fresh))
		for i, l := range fresh {
			text[i] = []byte(l)
		}
		if _, err := w.exec(`INSERT INTO log_lines (task_id, line, text)
			SELECT $1, $2 + i - 1, x FROM unnest($3::bytea[]) WITH ORDINALITY AS u(x, i)`,
			p.TaskID, lines, text); err != nil {
			return fmt.Errorf("append log of %s: %w", p.TaskID, err)
		}
		if _, err := w.exec(`UPDATE tasks SET log_lines = $1 WHERE id = $2`, end, p.TaskID); err != nil {
			return fmt.Errorf("append log of %s: %w", p.TaskID, err)
		}
		next = end
		w.emit(store.Change{Kind: store.ChangeLogAppended, TaskID: p.TaskID, LogLines: end})
		return nil
	})
	if err != nil {
		return 0, err
	}
	return next, nil
}

// LogRead returns unsealed lines from p.Offset.
func (s *Store) LogRead(ctx context.Context, p store.LogReadParams) ([]string, error) {
	limit := p.Limit
	if limit <= 0 {
		limit = 10000
	}
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1)`, p.TaskID).Scan(&exists); err != nil {
		return nil, fmt.Errorf("read log of %s: %w", p.TaskID, err)
	}
	if !exists {
		return nil, notFound("task", p.TaskID)
	}
	rows, err := s.pool.Query(ctx, `SELECT text FROM log_lines WHERE task_id = $1 AND line >= $2
		ORDER BY line LIMIT $3`, p.TaskID, p.Offset, limit)
	if err != nil {
		return nil, fmt.Errorf("read log of %s: %w", p.TaskID, err)
	}
	defer rows.Close()
	lines := []string{}
	for rows.Next() {
		var l []byte
		if err := rows.Scan(&l); err != nil {
			return nil, fmt.Errorf("read log of %s: %w", p.TaskID, err)
		}
		lines = append(lines, string(l))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read log of %s: %w", p.TaskID, err)
	}
	return lines, nil
}

// LogSealList returns ended tasks whose logs are not sealed, oldest ended
// first.
func (s *Store) LogSealList(ctx context.Context, limit int) ([]string, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.pool.Query(ctx, `SELECT id FROM tasks
		WHERE NOT log_sealed AND finished_at IS NOT NULL
		ORDER BY finished_at, seq LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list logs to seal: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list logs to seal: %w", err)
	}
	if ids == nil {
		ids = []string{}
	}
	return ids, nil
}

// LogSeal records a sealed log's objects and drops its lines. Two
// managers sealing the same log at once take turns on the task row; the
// second finds it sealed.
func (s *Store) LogSeal(ctx context.Context, p store.LogSealParams) error {
	objects := p.Objects
	if objects == nil {
		objects = []store.LogObject{}
	}
	b, err := json.Marshal(objects)
	if err != nil {
		return fmt.Errorf("seal log of %s: %w", p.TaskID, err)
	}
	return s.write(ctx, func(w *wtx) error {
		var (
			state  errand.State
			sealed bool
		)
		err := w.queryRow(`SELECT state, log_sealed FROM tasks WHERE id = $1 FOR UPDATE`, p.TaskID).Scan(&state, &sealed)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("task", p.TaskID)
		}
		if err != nil {
			return fmt.Errorf("seal log of %s: %w", p.TaskID, err)
		}
		if sealed {
			return nil
		}
		if !state.Terminal() {
			return errand.Errorf(errand.CodeIllegalTransition, "task %s is %s: only an ended task's log is sealed", p.TaskID, state)
		}
		if _, err := w.exec(`UPDATE tasks SET log_sealed = true, log_objects = $1 WHERE id = $2`,
			string(b), p.TaskID); err != nil {
			return fmt.Errorf("seal log of %s: %w", p.TaskID, err)
		}
		if _, err := w.exec(`DELETE FROM log_lines WHERE task_id = $1`, p.TaskID); err != nil {
			return fmt.Errorf("seal log of %s: %w", p.TaskID, err)
		}
		return nil
	})
}

// LogObjects returns a sealed log's objects in line order.
func (s *Store) LogObjects(ctx context.Context, taskID string) ([]store.LogObject, bool, error) {
	var (
		sealed  bool
		objects string
	)
	err := s.pool.QueryRow(ctx, `SELECT log_sealed, log_objects FROM tasks WHERE id = $1`, taskID).Scan(&sealed, &objects)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, notFound("task", taskID)
	}
	if err != nil {
		return nil, false, fmt.Errorf("log objects of %s: %w", taskID, err)
	}
	if !sealed {
		return nil, false, nil
	}
	var out []store.LogObject
	if err := json.Unmarshal([]byte(objects), &out); err != nil {
		return nil, false, fmt.Errorf("log objects of %s: %w", taskID, err)
	}
	return out, true, nil
}
