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
		res, err := w.exec(`INSERT INTO runs (id, created_at, filename, config, branch, event, plan, setup_errors, stage_count)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
			p.Run.ID, now, p.Run.Filename, nullBytes(p.Run.Config), p.Run.Branch, p.Run.Event, nullBytes(p.Run.Plan), setup, p.Run.StageCount)
		if err != nil {
			return fmt.Errorf("create run %s: %w", p.Run.ID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("create run %s: %w", p.Run.ID, err)
		} else if n == 0 {
			return errand.Errorf(errand.CodeConflict, "run %s exists", p.Run.ID)
		}
		// The tasks refer only to each other (p.Check), so every
		// dependency is decided within the batch.
		depended := map[string]bool{}
		for _, t := range p.Tasks {
			for _, d := range t.DependsOn {
				depended[d.Task] = true
			}
		}
		decided := make(map[string]errand.State, len(p.Tasks))
		none := map[string]errand.State{}
		out = make([]*errand.Task, len(p.Tasks))
		rows := make([][]any, len(p.Tasks))
		for _, i := range order {
			t := p.Tasks[i]
			task, args, err := prepareTask(w, t, none, decided, depended[t.ID], now)
			if err != nil {
				return fmt.Errorf("create run %s: task %s: %w", p.Run.ID, t.ID, err)
			}
			decided[t.ID] = task.State
			out[i], rows[i] = task, args
		}
		if err := insertTasks(w, p.Tasks, rows); err != nil {
			return err
		}
		inBatch := make(map[string]*errand.Task, len(p.Tasks))
		for _, t := range p.Tasks {
			inBatch[t.ID] = t
		}
		for _, t := range p.Tasks {
			if err := insertEdges(w, t, inBatch); err != nil {
				return fmt.Errorf("create run %s: task %s: %w", p.Run.ID, t.ID, err)
			}
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
		config    []byte
		plan      []byte
		setup     string
		cancelled sql.NullInt64
	)
	if err := sc.Scan(&r.ID, &created, &r.Filename, &config, &r.Branch, &r.Event, &plan, &setup, &cancelled, &r.StageCount); err != nil {
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
func (s *Store) RunGet(ctx context.Context, id string) (*store.Run, error) {
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
func (s *Store) loadApprovals(ctx context.Context, runs []*store.Run) error {
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

// RunApprove records an approval and returns the stage's approver count.
func (s *Store) RunApprove(ctx context.Context, p store.RunApproveParams) (int, error) {
	if p.Stage == "" || p.Approver == "" || len(p.Approver) > store.MaxRunApprover {
		return 0, errand.Errorf(errand.CodeInvalid, "approve: a stage and an approver of 1 to %d characters are required", store.MaxRunApprover)
	}
	var count int
	err := s.write(ctx, func(w *wtx) error {
		var one int
		err := w.queryRow(`SELECT 1 FROM runs WHERE id = ?`, p.RunID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("run", p.RunID)
		}
		if err != nil {
			return fmt.Errorf("approve run %s: %w", p.RunID, err)
		}
		res, err := w.exec(`INSERT INTO run_approvals (run_id, stage, approver, approved_at, seq)
			VALUES (?, ?, ?, ?, (SELECT coalesce(max(seq), 0) + 1 FROM run_approvals WHERE run_id = ?))
			ON CONFLICT (run_id, stage, approver) DO NOTHING`,
			p.RunID, p.Stage, p.Approver, nanos(p.Now), p.RunID)
		if err != nil {
			return fmt.Errorf("approve run %s: %w", p.RunID, err)
		}
		added, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("approve run %s: %w", p.RunID, err)
		}
		if p.TaskID != "" && added == 1 {
			if err := approveGate(w, p); err != nil {
				return err
			}
		}
		if err := w.queryRow(`SELECT count(*) FROM run_approvals WHERE run_id = ? AND stage = ?`, p.RunID, p.Stage).Scan(&count); err != nil {
			return fmt.Errorf("approve run %s: %w", p.RunID, err)
		}
		return nil
	})
	return count, err
}

// approveGate counts a new approver on a stage's gate, and releases the
// stage when the gate succeeds.
func approveGate(w *wtx, p store.RunApproveParams) error {
	row, err := getRow(w, p.TaskID)
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
func (s *Store) RunTaskStats(ctx context.Context, p store.RunTaskStatsParams) (map[string]*store.RunTaskStats, error) {
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
