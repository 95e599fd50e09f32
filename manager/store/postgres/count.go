package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// unendedStates and startedStates list the states of tasks that have not
// ended, and of tasks that started, in SQL.
const (
	unendedStates = `('pending', 'waiting', 'queued', 'leased', 'running')`
	startedStates = `('leased', 'running', 'succeeded', 'failed', 'timed_out')`
)

// Count counts in one repeatable-read, read-only transaction, so that the
// numbers agree with each other.
func (s *Driver) Count(ctx context.Context, p store.CountParams) (*store.Counts, error) {
	c := &store.Counts{Tasks: map[errand.State]int64{}, Delegates: map[errand.DelegateState]int64{}}
	ignoreTypes, ignoreDelegates := p.IgnoreTaskTypes, p.IgnoreDelegates
	if ignoreTypes == nil {
		ignoreTypes = []string{}
	}
	if ignoreDelegates == nil {
		ignoreDelegates = []string{}
	}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := countBy(ctx, tx, `SELECT state, count(*) FROM tasks
			WHERE state IN `+unendedStates+` AND NOT (type = ANY($1)) GROUP BY state`, []any{ignoreTypes},
			func(k string, n int64) { c.Tasks[errand.State(k)] = n }); err != nil {
			return fmt.Errorf("count tasks: %w", err)
		}
		if err := countBy(ctx, tx, `SELECT state, count(*) FROM delegates WHERE NOT (id = ANY($1)) GROUP BY state`,
			[]any{ignoreDelegates}, func(k string, n int64) { c.Delegates[errand.DelegateState(k)] = n }); err != nil {
			return fmt.Errorf("count delegates: %w", err)
		}
		if err := tx.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE setup_errors <> '') FROM runs`).
			Scan(&c.Runs, &c.SetupErrorRuns); err != nil {
			return fmt.Errorf("count runs: %w", err)
		}
		var active, started int64
		if err := tx.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE started) FROM (
			SELECT bool_or(state IN `+startedStates+` AND NOT (type = ANY($1))) AS started
			FROM tasks WHERE run_id IN (SELECT DISTINCT run_id FROM tasks WHERE run_id <> '' AND state IN `+unendedStates+`)
			GROUP BY run_id) AS active`, ignoreTypes).Scan(&active, &started); err != nil {
			return fmt.Errorf("count active runs: %w", err)
		}
		c.QueuedRuns, c.RunningRuns = active-started, started
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("count: %w", err)
	}
	return c, nil
}

// countBy runs a "SELECT key, count(*) … GROUP BY key" query.
func countBy(ctx context.Context, tx pgx.Tx, q string, args []any, put func(string, int64)) error {
	rows, err := tx.Query(ctx, q, args...)
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
