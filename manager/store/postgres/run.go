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

// RunCreate inserts a run and its tasks in one transaction.
func (s *Store) RunCreate(ctx context.Context, p store.RunCreateParams) ([]*errand.Task, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	order, err := errand.BatchOrder(p.Tasks)
	if err != nil {
		return nil, err
	}
	setup, err := jsonOrEmpty(p.Run.SetupErrors, len(p.Run.SetupErrors) == 0)
	if err != nil {
		return nil, fmt.Errorf("create run %s: %w", p.Run.ID, err)
	}
	now := nanos(p.Now)
	var out []*errand.Task
	err = s.write(ctx, func(w *wtx) error {
		tag, err := w.exec(`INSERT INTO runs (id, created_at, filename, config, branch, event, plan, setup_errors, stage_count)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING`,
			p.Run.ID, now, p.Run.Filename, nullBytes(p.Run.Config), p.Run.Branch, p.Run.Event, nullBytes(p.Run.Plan), setup, p.Run.StageCount)
		if err != nil {
			return fmt.Errorf("create run %s: %w", p.Run.ID, err)
		}
		if tag.RowsAffected() == 0 {
			return errand.Errorf(errand.CodeConflict, "run %s exists", p.Run.ID)
		}
		// The tasks refer only to each other (p.Check), so every
		// dependency is decided within the batch.
		none := map[string]errand.State{}
		decided := make(map[string]errand.State, len(p.Tasks))
		statuses := make([]errand.Status, len(p.Tasks))
		for _, i := range order {
			t := p.Tasks[i]
			st, err := decide(t, none, decided)
			if err != nil {
				return fmt.Errorf("create run %s: task %s: %w", p.Run.ID, t.ID, err)
			}
			statuses[i] = st
			decided[t.ID] = st.State
		}
		out = make([]*errand.Task, len(p.Tasks))
		for i, t := range p.Tasks {
			row, err := insertTask(w, t, statuses[i], now)
			if errors.Is(err, errand.ErrConflict) {
				return errand.Errorf(errand.CodeConflict, "tasks[%d].id: task %s exists", i, t.ID)
			}
			if err != nil {
				return fmt.Errorf("create run %s: task %s: %w", p.Run.ID, t.ID, err)
			}
			out[i] = row
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	p.Run.CreatedAt = fromNanos(now)
	if out == nil {
		out = []*errand.Task{}
	}
	return out, nil
}

const runCols = `id, created_at, filename, config, branch, event, plan, setup_errors, cancelled_at, stage_count`

// runSummaryCols are runCols without the config and the plan.
const runSummaryCols = `id, created_at, filename, NULL, branch, event, NULL, setup_errors, cancelled_at, stage_count`

func scanRun(sc scanner) (*store.Run, error) {
	var (
		r         store.Run
		created   int64
		setup     string
		cancelled *int64
	)
	if err := sc.Scan(&r.ID, &created, &r.Filename, &r.Config, &r.Branch, &r.Event, &r.Plan, &setup, &cancelled, &r.StageCount); err != nil {
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
func (s *Store) RunGet(ctx context.Context, id string) (*store.Run, error) {
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
func (s *Store) RunList(ctx context.Context, p store.RunListParams) ([]*store.Run, error) {
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
func (s *Store) loadApprovals(ctx context.Context, runs []*store.Run) error {
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

// RunApprove records an approval and returns the stage's approver count.
func (s *Store) RunApprove(ctx context.Context, p store.RunApproveParams) (int, error) {
	if p.Stage == "" || p.Approver == "" || len(p.Approver) > store.MaxRunApprover {
		return 0, errand.Errorf(errand.CodeInvalid, "approve: a stage and an approver of 1 to %d characters are required", store.MaxRunApprover)
	}
	var count int
	err := s.write(ctx, func(w *wtx) error {
		var one int
		err := w.queryRow(`SELECT 1 FROM runs WHERE id = $1 FOR SHARE`, p.RunID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("run", p.RunID)
		}
		if err != nil {
			return fmt.Errorf("approve run %s: %w", p.RunID, err)
		}
		tag, err := w.exec(`INSERT INTO run_approvals (run_id, stage, approver, approved_at)
			VALUES ($1, $2, $3, $4) ON CONFLICT (run_id, stage, approver) DO NOTHING`,
			p.RunID, p.Stage, p.Approver, nanos(p.Now))
		if err != nil {
			return fmt.Errorf("approve run %s: %w", p.RunID, err)
		}
		if p.TaskID != "" && tag.RowsAffected() == 1 {
			if err := approveGate(w, p); err != nil {
				return err
			}
		}
		if err := w.queryRow(`SELECT count(*) FROM run_approvals WHERE run_id = $1 AND stage = $2`, p.RunID, p.Stage).Scan(&count); err != nil {
			return fmt.Errorf("approve run %s: %w", p.RunID, err)
		}
		return nil
	})
	return count, err
}

// approveGate counts a new approver on a stage's gate, and releases the
// stage when the gate succeeds.
func approveGate(w *wtx, p store.RunApproveParams) error {
	row, err := lockRow(w, p.TaskID)
	if err != nil {
		return err
	}
	if row.RunID != p.RunID || row.Approvals <= 0 {
		return errand.Errorf(errand.CodeInvalid, "approve: task %s is not an approval gate of run %s", p.TaskID, p.RunID)
	}
	next, err := errand.Transition(row.status(), errand.EventApprove)
	if err != nil {
		return fmt.Errorf("approve task %s: %w", p.TaskID, err)
	}
	_, err = applyTransition(w, row, next, transitionExtras{}, nanos(p.Now))
	return err
}

// RunCancel marks a run cancelled, keeping the first time.
func (s *Store) RunCancel(ctx context.Context, p store.RunCancelParams) (*store.Run, error) {
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
func (s *Store) RunTaskStats(ctx context.Context, p store.RunTaskStatsParams) (map[string]*store.RunTaskStats, error) {
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
