package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/errandci/errand/manager/store"
)

// LogTail reads what an append checks.
func (w *wtx) LogTail(taskID string) (store.LogTail, error) {
	var (
		t      store.LogTail
		sealed int
	)
	err := w.queryRow(`SELECT state, lease_token, delegate_id, log_lines, log_sealed FROM tasks WHERE id = ?`,
		taskID).Scan(&t.State, &t.LeaseToken, &t.DelegateID, &t.Lines, &sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return t, notFound("task", taskID)
	}
	if err != nil {
		return t, fmt.Errorf("append log of %s: %w", taskID, err)
	}
	t.Sealed = sealed != 0
	return t, nil
}

// LogAdd stores a chunk at the end of the log, and keeps the cached row
// of the task current so that logging does not cost the next report a
// read.
func (w *wtx) LogAdd(taskID string, first int64, lines []string) error {
	if _, err := w.exec(`INSERT INTO log_chunks (task_id, first_line, lines, body) VALUES (?, ?, ?, ?)`,
		taskID, first, len(lines), store.EncodeLogChunk(lines)); err != nil {
		return err
	}
	end := first + int64(len(lines))
	var old int64
	if err := w.queryRow(`SELECT version FROM tasks WHERE id = ?`, taskID).Scan(&old); err != nil {
		return err
	}
	version := w.s.nextVersion()
	if _, err := w.exec(`UPDATE tasks SET log_lines = ?, version = ? WHERE id = ?`, end, version, taskID); err != nil {
		return err
	}
	if row, ok := w.s.active.get(taskID); ok && row.Version == old {
		fresh := *row
		fresh.LogLines, fresh.Version = end, version
		w.s.active.put(&fresh)
	}
	return nil
}

// LogRead returns unsealed lines from p.Offset.
func (s *Driver) LogRead(ctx context.Context, p store.LogReadParams) ([]string, error) {
	limit := p.Limit
	if limit <= 0 {
		limit = 10000
	}
	var n int
	if err := s.rdb.QueryRowContext(ctx, `SELECT count(*) FROM tasks WHERE id = ?`, p.TaskID).Scan(&n); err != nil {
		return nil, fmt.Errorf("read log of %s: %w", p.TaskID, err)
	}
	if n == 0 {
		return nil, notFound("task", p.TaskID)
	}
	// Chunks never overlap: the one that holds p.Offset starts at the
	// greatest first line not past it.
	rows, err := s.rdb.QueryContext(ctx, `SELECT first_line, lines, body FROM log_chunks
		WHERE task_id = ? AND first_line >= coalesce((SELECT max(first_line) FROM log_chunks
			WHERE task_id = ? AND first_line <= ?), 0)
		ORDER BY first_line`, p.TaskID, p.TaskID, p.Offset)
	if err != nil {
		return nil, fmt.Errorf("read log of %s: %w", p.TaskID, err)
	}
	defer rows.Close()
	lines := []string{}
	for len(lines) < limit && rows.Next() {
		var (
			first, n int64
			body     []byte
		)
		if err := rows.Scan(&first, &n, &body); err != nil {
			return nil, fmt.Errorf("read log of %s: %w", p.TaskID, err)
		}
		if lines, err = store.DecodeLogChunk(lines, body, max(p.Offset-first, 0), limit); err != nil {
			return nil, fmt.Errorf("read log of %s, chunk at line %d: %w", p.TaskID, first, err)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read log of %s: %w", p.TaskID, err)
	}
	return lines, nil
}

// LogSealList returns ended tasks whose logs are not sealed, oldest ended
// first.
func (s *Driver) LogSealList(ctx context.Context, limit int) ([]string, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.rdb.QueryContext(ctx, `SELECT id FROM tasks
		WHERE log_sealed = 0 AND finished_at IS NOT NULL
		ORDER BY finished_at, seq LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("list logs to seal: %w", err)
	}
	defer rows.Close()
	ids := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("list logs to seal: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list logs to seal: %w", err)
	}
	return ids, nil
}

// LogSeal records a sealed log's objects and drops its lines.
func (w *wtx) LogSeal(taskID string, objects []store.LogObject) error {
	b, err := json.Marshal(objects)
	if err != nil {
		return err
	}
	if _, err := w.exec(`UPDATE tasks SET log_sealed = 1, log_objects = ?, log_bytes = ?, log_object_count = ?, version = ? WHERE id = ?`,
		string(b), store.LogObjectBytes(objects), len(objects), w.s.nextVersion(), taskID); err != nil {
		return err
	}
	_, err = w.exec(`DELETE FROM log_chunks WHERE task_id = ?`, taskID)
	return err
}

// LogObjects returns a sealed log's objects in line order.
func (s *Driver) LogObjects(ctx context.Context, taskID string) ([]store.LogObject, bool, error) {
	var (
		sealed  int
		objects string
	)
	err := s.rdb.QueryRowContext(ctx, `SELECT log_sealed, log_objects FROM tasks WHERE id = ?`, taskID).Scan(&sealed, &objects)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, notFound("task", taskID)
	}
	if err != nil {
		return nil, false, fmt.Errorf("log objects of %s: %w", taskID, err)
	}
	if sealed == 0 {
		return nil, false, nil
	}
	var out []store.LogObject
	if err := json.Unmarshal([]byte(objects), &out); err != nil {
		return nil, false, fmt.Errorf("log objects of %s: %w", taskID, err)
	}
	return out, true, nil
}
