package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/errandci/errand/manager/store"
)

// LogTail reads what an append checks, locking the task row so that
// appends to one task take turns whichever manager receives them.
func (w *wtx) LogTail(taskID string) (store.LogTail, error) {
	var t store.LogTail
	err := w.queryRow(`SELECT state, lease_token, delegate_id, log_lines, log_sealed FROM tasks
		WHERE id = $1 FOR UPDATE`, taskID).Scan(&t.State, &t.LeaseToken, &t.DelegateID, &t.Lines, &t.Sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, notFound("task", taskID)
	}
	if err != nil {
		return t, fmt.Errorf("append log of %s: %w", taskID, err)
	}
	return t, nil
}

// LogAdd stores a chunk at the end of the log and moves the end, in one
// round trip.
func (w *wtx) LogAdd(taskID string, first int64, lines []string) error {
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO log_chunks (task_id, first_line, lines, body) VALUES ($1, $2, $3, $4)`,
		taskID, first, len(lines), store.EncodeLogChunk(lines))
	b.Queue(`UPDATE tasks SET log_lines = $1 WHERE id = $2`, first+int64(len(lines)), taskID)
	return w.sendBatch(b)
}

// LogRead returns unsealed lines from p.Offset.
func (s *Driver) LogRead(ctx context.Context, p store.LogReadParams) ([]string, error) {
	limit := p.Limit
	if limit <= 0 {
		limit = 10000
	}
	// One round trip: the task's row joined to the chunks from the one
	// that holds p.Offset (chunks never overlap: it starts at the
	// greatest first line not past it). No row: no task; one row of
	// NULLs: no lines.
	rows, err := s.pool.Query(ctx, `SELECT c.first_line, c.lines, c.body
		FROM tasks t LEFT JOIN log_chunks c ON c.task_id = t.id
			AND c.first_line >= coalesce((SELECT max(first_line) FROM log_chunks
				WHERE task_id = $1 AND first_line <= $2), 0)
		WHERE t.id = $1
		ORDER BY c.first_line`, p.TaskID, p.Offset)
	if err != nil {
		return nil, fmt.Errorf("read log of %s: %w", p.TaskID, err)
	}
	defer rows.Close()
	var lines []string
	for len(lines) < limit && rows.Next() {
		var (
			first, n *int64
			body     []byte
		)
		if err := rows.Scan(&first, &n, &body); err != nil {
			return nil, fmt.Errorf("read log of %s: %w", p.TaskID, err)
		}
		if lines == nil {
			lines = []string{}
		}
		if first == nil {
			break
		}
		if lines, err = store.DecodeLogChunk(lines, body, max(p.Offset-*first, 0), limit); err != nil {
			return nil, fmt.Errorf("read log of %s, chunk at line %d: %w", p.TaskID, *first, err)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read log of %s: %w", p.TaskID, err)
	}
	if lines == nil {
		return nil, notFound("task", p.TaskID)
	}
	return lines, nil
}

// LogSealList returns ended tasks whose logs are not sealed, oldest ended
// first.
func (s *Driver) LogSealList(ctx context.Context, limit int) ([]string, error) {
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

// LogSeal records a sealed log's objects and drops its lines, in one
// round trip.
func (w *wtx) LogSeal(taskID string, objects []store.LogObject) error {
	b, err := json.Marshal(objects)
	if err != nil {
		return err
	}
	batch := &pgx.Batch{}
	batch.Queue(`UPDATE tasks SET log_sealed = true, log_objects = $1, log_bytes = $2, log_object_count = $3 WHERE id = $4`,
		string(b), store.LogObjectBytes(objects), len(objects), taskID)
	batch.Queue(`DELETE FROM log_chunks WHERE task_id = $1`, taskID)
	return w.sendBatch(batch)
}

// LogObjects returns a sealed log's objects in line order.
func (s *Driver) LogObjects(ctx context.Context, taskID string) ([]store.LogObject, bool, error) {
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
