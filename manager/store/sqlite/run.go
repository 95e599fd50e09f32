package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

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
		config    []byte
		plan      []byte
		setup     string
		cancelled sql.NullInt64
	)
	if err := sc.Scan(&r.ID, &created, &r.Filename, &config, &r.Branch, &r.Event, &plan, &setup, &cancelled, &r.StageCount, &r.CreatedBy); err != nil {
		return nil, err
	}
	r.CreatedAt = fromNanos(created)
	r.Config, r.Plan = config, plan
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
	r, err := scanRun(s.rdb.QueryRowContext(ctx, `SELECT `+runCols+` FROM runs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
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
		q += ` WHERE seq < coalesce((SELECT seq FROM runs WHERE id = ?), 0)`
		args = append(args, p.After)
	}
	q += ` ORDER BY seq DESC LIMIT ?`
	args = append(args, limit)
	rows, err := s.rdb.QueryContext(ctx, q, args...)
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
	if err := s.loadApprovals(ctx, out); err != nil {
		return nil, err
	}
	return out, nil
}

// loadApprovals fills the approvals of runs.
func (s *Driver) loadApprovals(ctx context.Context, runs []*store.Run) error {
	for _, r := range runs {
		rows, err := s.rdb.QueryContext(ctx, `SELECT stage, approver FROM run_approvals WHERE run_id = ? ORDER BY seq`, r.ID)
		if err != nil {
			return fmt.Errorf("approvals of run %s: %w", r.ID, err)
		}
		for rows.Next() {
			var stage, approver string
			if err := rows.Scan(&stage, &approver); err != nil {
				rows.Close()
				return fmt.Errorf("approvals of run %s: %w", r.ID, err)
			}
			r.Approvals[stage] = append(r.Approvals[stage], approver)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("approvals of run %s: %w", r.ID, err)
		}
	}
	return nil
}

// RunCancel marks a run cancelled, keeping the first time.
func (s *Driver) RunCancel(ctx context.Context, p store.RunCancelParams) (*store.Run, error) {
	err := s.write(ctx, func(w *wtx) error {
		res, err := w.exec(`UPDATE runs SET cancelled_at = coalesce(cancelled_at, ?) WHERE id = ?`, nanos(p.Now), p.RunID)
		if err != nil {
			return fmt.Errorf("cancel run %s: %w", p.RunID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("cancel run %s: %w", p.RunID, err)
		} else if n == 0 {
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
	timed := `1`
	args := []any{}
	if n := len(p.TimesIgnoreTypes); n > 0 {
		timed = `type NOT IN (?` + strings.Repeat(", ?", n-1) + `)`
		for _, t := range p.TimesIgnoreTypes {
			args = append(args, t)
		}
	}
	for _, t := range p.TimesIgnoreTypes {
		args = append(args, t)
	}
	for _, id := range p.RunIDs {
		args = append(args, id)
	}
	q := `SELECT run_id, state, count(*),
		min(CASE WHEN ` + timed + ` THEN started_at END), max(CASE WHEN ` + timed + ` THEN finished_at END)
		FROM tasks WHERE run_id <> '' AND run_id IN (?` + strings.Repeat(", ?", len(p.RunIDs)-1) + `)
		GROUP BY run_id, state`
	rows, err := s.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("run task stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id, state       string
			n               int
			started, finish sql.NullInt64
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
