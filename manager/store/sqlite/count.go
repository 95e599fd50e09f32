package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// unendedStates and startedStates list the states of tasks that have not
// ended, and of tasks that started, in SQL.
const (
	unendedStates = `('pending', 'waiting', 'queued', 'leased', 'running')`
	startedStates = `('leased', 'running', 'succeeded', 'failed', 'timed_out')`
)

// ignoreTypes is the condition that leaves n task types out.
func ignoreTypes(n int) string {
	if n == 0 {
		return ""
	}
	return ` AND type NOT IN (?` + strings.Repeat(", ?", n-1) + `)`
}

// Count counts in one read transaction, so that the numbers agree with
// each other.
func (s *Driver) Count(ctx context.Context, p store.CountParams) (*store.Counts, error) {
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("count: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	c := &store.Counts{Tasks: map[errand.State]int64{}, Delegates: map[errand.DelegateState]int64{}}

	q, args := `SELECT state, count(*) FROM tasks WHERE state IN `+unendedStates+ignoreTypes(len(p.IgnoreTaskTypes)), []any{}
	for _, t := range p.IgnoreTaskTypes {
		args = append(args, t)
	}
	if err := countBy(ctx, tx, q+` GROUP BY state`, args, func(k string, n int64) { c.Tasks[errand.State(k)] = n }); err != nil {
		return nil, fmt.Errorf("count tasks: %w", err)
	}

	q, args = `SELECT state, count(*) FROM delegates`, nil
	if len(p.IgnoreDelegates) > 0 {
		q += ` WHERE id NOT IN (?` + strings.Repeat(", ?", len(p.IgnoreDelegates)-1) + `)`
		for _, id := range p.IgnoreDelegates {
			args = append(args, id)
		}
	}
	if err := countBy(ctx, tx, q+` GROUP BY state`, args, func(k string, n int64) { c.Delegates[errand.DelegateState(k)] = n }); err != nil {
		return nil, fmt.Errorf("count delegates: %w", err)
	}

	if err := tx.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(setup_errors <> ''), 0) FROM runs`).
		Scan(&c.Runs, &c.SetupErrorRuns); err != nil {
		return nil, fmt.Errorf("count runs: %w", err)
	}
	q = `SELECT count(*), coalesce(sum(started), 0) FROM (
		SELECT max(state IN ` + startedStates + ignoreTypes(len(p.IgnoreTaskTypes)) + `) AS started
		FROM tasks WHERE run_id IN (SELECT DISTINCT run_id FROM tasks WHERE run_id <> '' AND state IN ` + unendedStates + `)
		GROUP BY run_id)`
	args = args[:0]
	for _, t := range p.IgnoreTaskTypes {
		args = append(args, t)
	}
	var started int64
	if err := tx.QueryRowContext(ctx, q, args...).Scan(&c.QueuedRuns, &started); err != nil {
		return nil, fmt.Errorf("count active runs: %w", err)
	}
	c.QueuedRuns -= started
	c.RunningRuns = started
	return c, nil
}

// countBy runs a "SELECT key, count(*) … GROUP BY key" query.
func countBy(ctx context.Context, tx *sql.Tx, q string, args []any, put func(string, int64)) error {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			k string
			n int64
		)
		if err := rows.Scan(&k, &n); err != nil {
			return err
		}
		put(k, n)
	}
	return rows.Err()
}
