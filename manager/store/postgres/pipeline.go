package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

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
		var err error
		out, err = scanPipeline(w.queryRow(`INSERT INTO pipelines (name, spec, created_at, updated_at, created_by, last_number)
			VALUES ($1, $2, $3, $3, $4, (SELECT coalesce(max(number), 0) FROM run_origins WHERE pipeline = $1))
			ON CONFLICT (name) DO NOTHING RETURNING `+pipelineCols,
			pl.Name, []byte(pl.Spec), nanos(p.Now), pl.CreatedBy))
		if errors.Is(err, pgx.ErrNoRows) {
			return errand.Errorf(errand.CodeConflict, "pipeline %s exists", pl.Name)
		}
		if err != nil {
			return fmt.Errorf("create pipeline %s: %w", pl.Name, err)
		}
		return nil
	})
	return out, err
}

// PipelineGet returns one pipeline.
func (s *Driver) PipelineGet(ctx context.Context, name string) (*store.Pipeline, error) {
	p, err := scanPipeline(s.pool.QueryRow(ctx, `SELECT `+pipelineCols+` FROM pipelines WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("pipeline", name)
	}
	if err != nil {
		return nil, fmt.Errorf("get pipeline %s: %w", name, err)
	}
	return p, nil
}

// PipelineList returns pipelines in name order.
func (s *Driver) PipelineList(ctx context.Context, p store.PipelineListParams) ([]*store.Pipeline, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+pipelineCols+` FROM pipelines
		WHERE name > $1 AND left(name, $2) = $3 ORDER BY name LIMIT $4`,
		p.After, len(p.Prefix), p.Prefix, store.PageLimit(p.Limit, 100, 1000))
	if err != nil {
		return nil, fmt.Errorf("list pipelines: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*store.Pipeline, error) { return scanPipeline(r) })
	if err != nil {
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
		out, err = scanPipeline(w.queryRow(`UPDATE pipelines SET spec = $1, updated_at = $2 WHERE name = $3 RETURNING `+pipelineCols,
			[]byte(p.Spec), nanos(p.Now), p.Name))
		if errors.Is(err, pgx.ErrNoRows) {
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
		tag, err := w.exec(`DELETE FROM pipelines WHERE name = $1`, name)
		if err != nil {
			return fmt.Errorf("delete pipeline %s: %w", name, err)
		}
		if tag.RowsAffected() == 0 {
			return notFound("pipeline", name)
		}
		return nil
	})
}

// PipelineRunID returns the id of a numbered run.
func (s *Driver) PipelineRunID(ctx context.Context, pipeline string, number int64) (string, error) {
	var id string
	err := s.pool.QueryRow(ctx, `SELECT run_id FROM run_origins WHERE pipeline = $1 AND number = $2`, pipeline, number).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
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
		WHERE pipeline = $1 AND number IS NOT NULL`
	args := []any{p.Pipeline}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if p.Before > 0 {
		q += ` AND number < ` + arg(p.Before)
	}
	for _, f := range []struct{ col, v string }{{"trigger_kind", p.TriggerKind}, {"trigger_ref", p.Ref}, {"trigger_commit", p.Commit}} {
		if f.v != "" {
			q += ` AND ` + f.col + ` = ` + arg(f.v)
		}
	}
	q += ` ORDER BY number DESC LIMIT ` + arg(store.PageLimit(p.Limit, 100, 1000))
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list runs of pipeline %s: %w", p.Pipeline, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*store.Run, error) { return scanRun(r) })
	if err != nil {
		return nil, fmt.Errorf("list runs of pipeline %s: %w", p.Pipeline, err)
	}
	return out, nil
}

// RunUsers lists the runs that use tasks of run id.
func (s *Driver) RunUsers(ctx context.Context, id string) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT run_id FROM run_uses WHERE uses_run_id = $1 ORDER BY seq`, id)
	if err != nil {
		return nil, fmt.Errorf("users of run %s: %w", id, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("users of run %s: %w", id, err)
	}
	return out, nil
}

// RunOrigins returns the origins of runs.
func (s *Driver) RunOrigins(ctx context.Context, ids []string) (map[string]*store.RunOrigin, error) {
	out := map[string]*store.RunOrigin{}
	rows, err := s.pool.Query(ctx, `SELECT run_id, pipeline, coalesce(number, 0), trigger, variables, ext_str, restart_of, restart_from
		FROM run_origins WHERE run_id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("origins of runs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id   string
			o    store.RunOrigin
			text store.OriginText
		)
		if err := rows.Scan(&id, &o.Pipeline, &o.Number, &text.Trigger, &text.Variables, &text.ExtStr, &o.RestartOf, &o.RestartFrom); err != nil {
			return nil, fmt.Errorf("origins of runs: %w", err)
		}
		if err := o.DecodeText(text); err != nil {
			return nil, fmt.Errorf("origin of run %s: %w", id, err)
		}
		out[id] = &o
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("origins of runs: %w", err)
	}
	rows.Close()
	urows, err := s.pool.Query(ctx, `SELECT run_id, uses_run_id FROM run_uses WHERE run_id = ANY($1) ORDER BY seq`, ids)
	if err != nil {
		return nil, fmt.Errorf("origins of runs: %w", err)
	}
	defer urows.Close()
	for urows.Next() {
		var id, used string
		if err := urows.Scan(&id, &used); err != nil {
			return nil, fmt.Errorf("origins of runs: %w", err)
		}
		if o := out[id]; o != nil {
			o.Uses = append(o.Uses, used)
		}
	}
	if err := urows.Err(); err != nil {
		return nil, fmt.Errorf("origins of runs: %w", err)
	}
	return out, nil
}

// RunOriginInsert records a run's origin, taking the pipeline's next
// number when it has one: the update locks the pipeline's row until the
// run commits, so that concurrent runs take turns and a run that rolls
// back gives its number back.
func (w *wtx) RunOriginInsert(runID string, o *store.RunOrigin) error {
	text, err := o.EncodeText()
	if err != nil {
		return err
	}
	var number *int64
	if o.Pipeline != "" {
		var n int64
		err := w.queryRow(`UPDATE pipelines SET last_number = last_number + 1 WHERE name = $1 RETURNING last_number`, o.Pipeline).Scan(&n)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("pipeline", o.Pipeline)
		}
		if err != nil {
			return err
		}
		number = &n
	}
	if _, err := w.exec(`INSERT INTO run_origins (run_id, pipeline, number, trigger_kind, trigger_ref, trigger_commit, trigger, variables, ext_str, restart_of, restart_from)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`, runID, o.Pipeline, number, o.Trigger.Kind, o.Trigger.Ref, o.Trigger.Commit,
		text.Trigger, text.Variables, text.ExtStr, o.RestartOf, o.RestartFrom); err != nil {
		return err
	}
	if len(o.Uses) > 0 {
		if _, err := w.exec(`INSERT INTO run_uses (run_id, uses_run_id) SELECT $1, u FROM unnest($2::text[]) AS u ON CONFLICT DO NOTHING`, runID, o.Uses); err != nil {
			return err
		}
	}
	o.Number = 0
	if number != nil {
		o.Number = *number
	}
	return nil
}
