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

// appendSQL appends a chunk at the current end of an active task's log in
// one statement, when the lease is current: $1 task, $2 delegate, $3
// lease token, $4 the offset that must be the log's end, $5 the line
// count, $6 the chunk. The token is compared through its digest, so that
// how long the comparison takes tells nothing of the token.
const appendSQL = `WITH grown AS (
	UPDATE tasks SET log_lines = $4 + $5
	WHERE id = $1 AND delegate_id = $2 AND log_lines = $4 AND lease_token <> ''
		AND sha256(convert_to(lease_token, 'UTF8')) = sha256(convert_to($3::text, 'UTF8'))
		AND state IN ('leased', 'running') AND NOT log_sealed
	RETURNING id
)
INSERT INTO log_chunks (task_id, first_line, lines, body) SELECT id, $4, $5, $6 FROM grown`

// LogAppend appends lines at p.Offset under the task's lease.
//
// The common append, at the end of the log of a task its delegate holds,
// is one statement in one round trip. Anything else (a retry, an overlap,
// a gap, a stale lease) takes the careful path, which locks the task row
// and says what is wrong, so appends to one task take turns whichever
// manager receives them.
func (s *Driver) LogAppend(ctx context.Context, p store.LogAppendParams) (int64, error) {
	if p.Offset < 0 {
		return 0, errand.Errorf(errand.CodeInvalid, "offset: negative")
	}
	if len(p.Lines) > 0 {
		end := p.Offset + int64(len(p.Lines))
		appended := false
		err := s.write(ctx, func(w *wtx) error {
			tag, err := w.exec(appendSQL, p.TaskID, p.DelegateID, p.LeaseToken, p.Offset, len(p.Lines), store.EncodeLogChunk(p.Lines))
			if err != nil {
				return fmt.Errorf("append log of %s: %w", p.TaskID, err)
			}
			if appended = tag.RowsAffected() == 1; appended {
				w.emit(store.Change{Kind: store.ChangeLogAppended, TaskID: p.TaskID, LogLines: end})
			}
			return nil
		}, writeImplicit)
		if err != nil {
			return 0, err
		}
		if appended {
			return end, nil
		}
	}
	return s.logAppendChecked(ctx, p)
}

// logAppendChecked appends under a lock on the task row, after checking
// the lease and the offset one by one.
func (s *Driver) logAppendChecked(ctx context.Context, p store.LogAppendParams) (int64, error) {
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
		if !store.LeaseMatches(token, p.LeaseToken) {
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
		if _, err := w.exec(`INSERT INTO log_chunks (task_id, first_line, lines, body) VALUES ($1, $2, $3, $4)`,
			p.TaskID, lines, len(fresh), store.EncodeLogChunk(fresh)); err != nil {
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

// LogSeal records a sealed log's objects and drops its lines. Two
// managers sealing the same log at once take turns on the task row; the
// second finds it sealed.
func (s *Driver) LogSeal(ctx context.Context, p store.LogSealParams) error {
	objects := p.Objects
	if objects == nil {
		objects = []store.LogObject{}
	}
	b, err := json.Marshal(objects)
	if err != nil {
		return fmt.Errorf("seal log of %s: %w", p.TaskID, err)
	}
	// The common case, an ended task not sealed yet, in one statement;
	// the careful path below says what is wrong otherwise.
	var ended []string
	for _, st := range errand.States {
		if st.Terminal() {
			ended = append(ended, string(st))
		}
	}
	sealed := false
	err = s.write(ctx, func(w *wtx) error {
		err := w.queryRow(`WITH sealed AS (
				UPDATE tasks SET log_sealed = true, log_objects = $2
				WHERE id = $1 AND NOT log_sealed AND state = ANY($3::text[]) RETURNING id
			), dropped AS (
				DELETE FROM log_chunks WHERE task_id IN (SELECT id FROM sealed)
			)
			SELECT EXISTS (SELECT 1 FROM sealed)`, p.TaskID, string(b), ended).Scan(&sealed)
		if err != nil {
			return fmt.Errorf("seal log of %s: %w", p.TaskID, err)
		}
		return nil
	}, writeImplicit)
	if err != nil || sealed {
		return err
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
		if _, err := w.exec(`DELETE FROM log_chunks WHERE task_id = $1`, p.TaskID); err != nil {
			return fmt.Errorf("seal log of %s: %w", p.TaskID, err)
		}
		return nil
	})
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
