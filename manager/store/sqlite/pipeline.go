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

const pipelineCols = `name, spec, created_at, updated_at, created_by, last_number`

func scanPipeline(sc scanner) (*store.Pipeline, error) {
	var (
		p                store.Pipeline
		created, updated int64
	)
	if err := sc.Scan(&p.Name, &p.Spec, &created, &updated, &p.CreatedBy, &p.LastNumber); err != nil {
		return nil, err
	}
	p.CreatedAt, p.UpdatedAt = fromNanos(created), fromNanos(updated)
	return &p, nil
}

// PipelineCreate inserts a pipeline. Its numbers go on from the highest
// its name has had.
func (s *Driver) PipelineCreate(ctx context.Context, p store.PipelineCreateParams) (*store.Pipeline, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	pl := p.Pipeline
	var out *store.Pipeline
	err := s.write(ctx, func(w *wtx) error {
		var n int
		if err := w.queryRow(`SELECT count(*) FROM pipelines WHERE name = ?`, pl.Name).Scan(&n); err != nil {
			return fmt.Errorf("create pipeline %s: %w", pl.Name, err)
		}
		if n > 0 {
			return errand.Errorf(errand.CodeConflict, "pipeline %s exists", pl.Name)
		}
		var err error
		out, err = scanPipeline(w.queryRow(`INSERT INTO pipelines (name, spec, created_at, updated_at, created_by, last_number)
			VALUES (?, ?, ?, ?, ?, (SELECT coalesce(max(number), 0) FROM run_origins WHERE pipeline = ?)) RETURNING `+pipelineCols,
			pl.Name, []byte(pl.Spec), nanos(p.Now), nanos(p.Now), pl.CreatedBy, pl.Name))
		w.wrote = true
		if err != nil {
			return fmt.Errorf("create pipeline %s: %w", pl.Name, err)
		}
		return nil
	})
	return out, err
}

// PipelineGet returns one pipeline.
func (s *Driver) PipelineGet(ctx context.Context, name string) (*store.Pipeline, error) {
	p, err := scanPipeline(s.rdb.QueryRowContext(ctx, `SELECT `+pipelineCols+` FROM pipelines WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("pipeline", name)
	}
	if err != nil {
		return nil, fmt.Errorf("get pipeline %s: %w", name, err)
	}
	return p, nil
}

// PipelineList returns pipelines in name order.
func (s *Driver) PipelineList(ctx context.Context, p store.PipelineListParams) ([]*store.Pipeline, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+pipelineCols+` FROM pipelines
		WHERE name > ? AND substr(name, 1, ?) = ? ORDER BY name LIMIT ?`,
		p.After, len(p.Prefix), p.Prefix, store.PageLimit(p.Limit, 100, 1000))
	if err != nil {
		return nil, fmt.Errorf("list pipelines: %w", err)
	}
	defer rows.Close()
	out := []*store.Pipeline{}
	for rows.Next() {
		pl, err := scanPipeline(rows)
		if err != nil {
			return nil, fmt.Errorf("list pipelines: %w", err)
		}
		out = append(out, pl)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list pipelines: %w", err)
	}
	return out, nil
}

// PipelineUpdate replaces a pipeline's spec.
func (s *Driver) PipelineUpdate(ctx context.Context, p store.PipelineUpdateParams) (*store.Pipeline, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	var out *store.Pipeline
	err := s.write(ctx, func(w *wtx) error {
		var err error
		out, err = scanPipeline(w.queryRow(`UPDATE pipelines SET spec = ?, updated_at = ? WHERE name = ? RETURNING `+pipelineCols,
			[]byte(p.Spec), nanos(p.Now), p.Name))
		w.wrote = true
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("pipeline", p.Name)
		}
		if err != nil {
			return fmt.Errorf("update pipeline %s: %w", p.Name, err)
		}
		return nil
	})
	return out, err
}

// PipelineDelete removes a pipeline.
func (s *Driver) PipelineDelete(ctx context.Context, name string) error {
	return s.write(ctx, func(w *wtx) error {
		res, err := w.exec(`DELETE FROM pipelines WHERE name = ?`, name)
		if err != nil {
			return fmt.Errorf("delete pipeline %s: %w", name, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("delete pipeline %s: %w", name, err)
		} else if n == 0 {
			return notFound("pipeline", name)
		}
		return nil
	})
}

// PipelineRunID returns the id of a numbered run.
func (s *Driver) PipelineRunID(ctx context.Context, pipeline string, number int64) (string, error) {
	var id string
	err := s.rdb.QueryRowContext(ctx, `SELECT run_id FROM run_origins WHERE pipeline = ? AND number = ?`, pipeline, number).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", notFound("run", fmt.Sprintf("%s#%d", pipeline, number))
	}
	if err != nil {
		return "", fmt.Errorf("get run %s#%d: %w", pipeline, number, err)
	}
	return id, nil
}

// PipelineRunList returns the runs of a pipeline, highest number first.
func (s *Driver) PipelineRunList(ctx context.Context, p store.PipelineRunListParams) ([]*store.Run, error) {
	q := `SELECT ` + runSummaryCols + ` FROM run_origins JOIN runs ON runs.id = run_origins.run_id
		WHERE pipeline = ? AND number IS NOT NULL`
	args := []any{p.Pipeline}
	if p.Before > 0 {
		q += ` AND number < ?`
		args = append(args, p.Before)
	}
	for _, f := range []struct{ col, v string }{{"trigger_kind", p.TriggerKind}, {"trigger_ref", p.Ref}, {"trigger_commit", p.Commit}} {
		if f.v != "" {
			q += ` AND ` + f.col + ` = ?`
			args = append(args, f.v)
		}
	}
	q += ` ORDER BY number DESC LIMIT ?`
	args = append(args, store.PageLimit(p.Limit, 100, 1000))
	rows, err := s.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list runs of pipeline %s: %w", p.Pipeline, err)
	}
	defer rows.Close()
	out := []*store.Run{}
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("list runs of pipeline %s: %w", p.Pipeline, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list runs of pipeline %s: %w", p.Pipeline, err)
	}
	return out, nil
}

// RunUsers lists the runs that use tasks of run id.
func (s *Driver) RunUsers(ctx context.Context, id string) ([]string, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT run_id FROM run_uses WHERE uses_run_id = ? ORDER BY rowid`, id)
	if err != nil {
		return nil, fmt.Errorf("users of run %s: %w", id, err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			return nil, fmt.Errorf("users of run %s: %w", id, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("users of run %s: %w", id, err)
	}
	return out, nil
}

// RunOrigins returns the origins of runs.
func (s *Driver) RunOrigins(ctx context.Context, ids []string) (map[string]*store.RunOrigin, error) {
	out := map[string]*store.RunOrigin{}
	for len(ids) > 0 {
		n := min(len(ids), 500)
		chunk := ids[:n]
		ids = ids[n:]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		in := `(?` + strings.Repeat(", ?", len(chunk)-1) + `)`
		rows, err := s.rdb.QueryContext(ctx, `SELECT run_id, pipeline, coalesce(number, 0), trigger, variables, ext_str, restart_of, restart_from
			FROM run_origins WHERE run_id IN `+in, args...)
		if err != nil {
			return nil, fmt.Errorf("origins of runs: %w", err)
		}
		for rows.Next() {
			var (
				id   string
				o    store.RunOrigin
				text store.OriginText
			)
			if err := rows.Scan(&id, &o.Pipeline, &o.Number, &text.Trigger, &text.Variables, &text.ExtStr, &o.RestartOf, &o.RestartFrom); err != nil {
				rows.Close()
				return nil, fmt.Errorf("origins of runs: %w", err)
			}
			if err := o.DecodeText(text); err != nil {
				rows.Close()
				return nil, fmt.Errorf("origin of run %s: %w", id, err)
			}
			out[id] = &o
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("origins of runs: %w", err)
		}
		urows, err := s.rdb.QueryContext(ctx, `SELECT run_id, uses_run_id FROM run_uses WHERE run_id IN `+in+` ORDER BY rowid`, args...)
		if err != nil {
			return nil, fmt.Errorf("origins of runs: %w", err)
		}
		for urows.Next() {
			var id, used string
			if err := urows.Scan(&id, &used); err != nil {
				urows.Close()
				return nil, fmt.Errorf("origins of runs: %w", err)
			}
			if o := out[id]; o != nil {
				o.Uses = append(o.Uses, used)
			}
		}
		urows.Close()
		if err := urows.Err(); err != nil {
			return nil, fmt.Errorf("origins of runs: %w", err)
		}
	}
	return out, nil
}

// RunOriginInsert records a run's origin, taking the pipeline's next
// number when it has one.
func (w *wtx) RunOriginInsert(runID string, o *store.RunOrigin) error {
	text, err := o.EncodeText()
	if err != nil {
		return err
	}
	var number sql.NullInt64
	if o.Pipeline != "" {
		err := w.queryRow(`UPDATE pipelines SET last_number = last_number + 1 WHERE name = ? RETURNING last_number`, o.Pipeline).Scan(&number)
		w.wrote = true
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("pipeline", o.Pipeline)
		}
		if err != nil {
			return err
		}
	}
	if _, err := w.exec(`INSERT INTO run_origins (run_id, pipeline, number, trigger_kind, trigger_ref, trigger_commit, trigger, variables, ext_str, restart_of, restart_from)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, runID, o.Pipeline, number, o.Trigger.Kind, o.Trigger.Ref, o.Trigger.Commit,
		text.Trigger, text.Variables, text.ExtStr, o.RestartOf, o.RestartFrom); err != nil {
		return err
	}
	for _, used := range o.Uses {
		if _, err := w.exec(`INSERT INTO run_uses (run_id, uses_run_id) VALUES (?, ?) ON CONFLICT DO NOTHING`, runID, used); err != nil {
			return err
		}
	}
	o.Number = number.Int64
	return nil
}
