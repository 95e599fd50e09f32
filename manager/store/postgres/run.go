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

const runCols = `id, created_at, filename, config, branch, event, plan, setup_errors, cancelled_at, stage_count, created_by`

// runSummaryCols are runCols without the config and the plan.
const runSummaryCols = `id, created_at, filename, NULL, branch, event, NULL, setup_errors, cancelled_at, stage_count, created_by`

func scanRun(sc scanner) (*store.Run, error) {
	var (
		r         store.Run
		created   int64
		setup     string
		cancelled *int64
	)
	if err := sc.Scan(&r.ID, &created, &r.Filename, &r.Config, &r.Branch, &r.Event, &r.Plan, &setup, &cancelled, &r.StageCount, &r.CreatedBy); err != nil {
		return nil, err
	}
	r.CreatedAt = fromNanos(created)
	if setup != "" {
		if err := json.Unmarshal([]byte(setup), &r.SetupErrors); err != nil {
			return nil, fmt.Errorf("run %s setup errors: %w", r.ID, err)
		}
	}
	r.CancelledAt = fromNull(cancelled)
	r.Approvals = map[string][]string{}
	return &r, nil
}

// RunGet returns one run with its approvals.
func (s *Driver) RunGet(ctx context.Context, id string) (*store.Run, error) {
	r, err := scanRun(s.pool.QueryRow(ctx, `SELECT `+runCols+` FROM runs WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("run", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get run %s: %w", id, err)
	}
	if err := s.loadApprovals(ctx, []*store.Run{r}); err != nil {
		return nil, err
	}
	return r, nil
}

// RunList returns runs, newest first.
func (s *Driver) RunList(ctx context.Context, p store.RunListParams) ([]*store.Run, error) {
	limit := p.Limit
	if limit <= 0 {
		limit = 100
	}
	cols := runCols
	if p.Summary {
		cols = runSummaryCols
	}
	q := `SELECT ` + cols + ` FROM runs`
	args := []any{}
	if p.After != "" {
		q += ` WHERE seq < coalesce((SELECT seq FROM runs WHERE id = $1), 0)`
		args = append(args, p.After)
	}
	q += fmt.Sprintf(` ORDER BY seq DESC LIMIT $%d`, len(args)+1)
	args = append(args, limit)
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	defer rows.Close()
	out := []*store.Run{}
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("list runs: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	rows.Close()
	if err := s.loadApprovals(ctx, out); err != nil {
		return nil, err
	}
	return out, nil
}

// loadApprovals fills the approvals of runs in one query.
func (s *Driver) loadApprovals(ctx context.Context, runs []*store.Run) error {
	if len(runs) == 0 {
		return nil
	}
	ids := make([]string, len(runs))
	byID := make(map[string]*store.Run, len(runs))
	for i, r := range runs {
		ids[i] = r.ID
		byID[r.ID] = r
	}
	rows, err := s.pool.Query(ctx, `SELECT run_id, stage, approver FROM run_approvals WHERE run_id = ANY($1) ORDER BY seq`, ids)
	if err != nil {
		return fmt.Errorf("approvals of runs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, stage, approver string
		if err := rows.Scan(&id, &stage, &approver); err != nil {
			return fmt.Errorf("approvals of runs: %w", err)
		}
		r := byID[id]
		r.Approvals[stage] = append(r.Approvals[stage], approver)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("approvals of runs: %w", err)
	}
	return nil
}

// RunCancel marks a run cancelled, keeping the first time.
func (s *Driver) RunCancel(ctx context.Context, p store.RunCancelParams) (*store.Run, error) {
	err := s.write(ctx, func(w *wtx) error {
		tag, err := w.exec(`UPDATE runs SET cancelled_at = coalesce(cancelled_at, $1) WHERE id = $2`, nanos(p.Now), p.RunID)
		if err != nil {
			return fmt.Errorf("cancel run %s: %w", p.RunID, err)
		}
		if tag.RowsAffected() == 0 {
			return notFound("run", p.RunID)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.RunGet(ctx, p.RunID)
}

// RunTaskStats counts the tasks of runs by state in one grouped query.
func (s *Driver) RunTaskStats(ctx context.Context, p store.RunTaskStatsParams) (map[string]*store.RunTaskStats, error) {
	out := map[string]*store.RunTaskStats{}
	if len(p.RunIDs) == 0 {
		return out, nil
	}
	ignore := p.TimesIgnoreTypes
	if ignore == nil {
		ignore = []string{}
	}
	rows, err := s.pool.Query(ctx, `SELECT run_id, state, count(*),
		min(started_at) FILTER (WHERE NOT type = ANY($2)), max(finished_at) FILTER (WHERE NOT type = ANY($2))
		FROM tasks WHERE run_id <> '' AND run_id = ANY($1)
		GROUP BY run_id, state`, p.RunIDs, ignore)
	if err != nil {
		return nil, fmt.Errorf("run task stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id, state       string
			n               int
			started, finish *int64
		)
		if err := rows.Scan(&id, &state, &n, &started, &finish); err != nil {
			return nil, fmt.Errorf("run task stats: %w", err)
		}
		store.AddRunTaskRow(out, id, errand.State(state), n, fromNull(started), fromNull(finish))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("run task stats: %w", err)
	}
	return out, nil
}
