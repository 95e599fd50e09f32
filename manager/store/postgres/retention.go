package postgres

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/errandci/errand/manager/store"
)

// RunDelete deletes an ended run and what no other run refers to.
func (s *Driver) RunDelete(ctx context.Context, p store.RunDeleteParams) (*store.RunDeleteResult, error) {
	var res *store.RunDeleteResult
	err := s.write(ctx, func(w *wtx) error {
		res = &store.RunDeleteResult{}
		// Deletions are serialised: two of them, each of a run the
		// other uses, must not each keep what the other still held.
		if _, err := w.exec(`SELECT pg_advisory_xact_lock(hashtext('errand-run-delete'))`); err != nil {
			return fmt.Errorf("delete run %s: %w", p.RunID, err)
		}
		var n int
		if err := w.queryRow(`SELECT count(*) FROM runs WHERE id = $1`, p.RunID).Scan(&n); err != nil {
			return fmt.Errorf("delete run %s: %w", p.RunID, err)
		}
		if n == 0 {
			return notFound("run", p.RunID)
		}
		if err := w.queryRow(`SELECT count(*) FROM tasks WHERE run_id = $1 AND state NOT IN `+store.EndedStatesSQL(), p.RunID).Scan(&n); err != nil {
			return fmt.Errorf("delete run %s: %w", p.RunID, err)
		}
		if n > 0 {
			return store.RunNotEnded(p.RunID, n)
		}
		candidates, err := w.strings(`SELECT uses_run_id FROM run_uses WHERE run_id = $1`, p.RunID)
		if err != nil {
			return fmt.Errorf("delete run %s: %w", p.RunID, err)
		}
		candidates = append([]string{p.RunID}, candidates...)
		for _, q := range []string{`DELETE FROM run_approvals WHERE run_id = $1`, `DELETE FROM run_origins WHERE run_id = $1`,
			`DELETE FROM run_uses WHERE run_id = $1`, `DELETE FROM runs WHERE id = $1`} {
			if _, err := w.exec(q, p.RunID); err != nil {
				return fmt.Errorf("delete run %s: %w", p.RunID, err)
			}
		}
		purge, err := w.unreferenced(candidates)
		if err != nil {
			return fmt.Errorf("delete run %s: %w", p.RunID, err)
		}
		var objects []store.ObjectDeletion
		for _, id := range purge {
			n, objs, err := w.purgeRunRecords(id, p.Now)
			if err != nil {
				return fmt.Errorf("delete the records of run %s: %w", id, err)
			}
			res.Tasks += n
			objects = append(objects, objs...)
		}
		if !slices.Contains(purge, p.RunID) {
			if err := w.queryRow(`SELECT count(*) FROM tasks WHERE run_id = $1`, p.RunID).Scan(&res.Kept); err != nil {
				return fmt.Errorf("delete run %s: %w", p.RunID, err)
			}
		}
		if err := w.queueDeletions(objects); err != nil {
			return fmt.Errorf("delete run %s: %w", p.RunID, err)
		}
		for _, o := range objects {
			res.Objects = append(res.Objects, o.Key)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// unreferenced returns the runs of ids whose records no run refers to
// any more: the run itself is gone, no run uses its tasks, and no task
// that stays depends on one of its tasks.
func (w *wtx) unreferenced(ids []string) ([]string, error) {
	var out []string
	for _, id := range ids {
		var held int
		if err := w.queryRow(`SELECT (SELECT count(*) FROM runs WHERE id = $1) + (SELECT count(*) FROM run_uses WHERE uses_run_id = $2)`, id, id).Scan(&held); err != nil {
			return nil, err
		}
		if held == 0 {
			out = append(out, id)
		}
	}
	for changed := true; changed; {
		changed = false
		for i, id := range out {
			users, err := w.strings(`SELECT DISTINCT u.run_id FROM task_deps d JOIN tasks t ON t.id = d.dep_id JOIN tasks u ON u.id = d.task_id
				WHERE t.run_id = $1 AND u.run_id <> $2`, id, id)
			if err != nil {
				return nil, err
			}
			if slices.ContainsFunc(users, func(u string) bool { return !slices.Contains(out, u) }) {
				out = slices.Delete(out, i, i+1)
				changed = true
				break
			}
		}
	}
	return out, nil
}

// purgeRunRecords deletes the tasks, log chunks and artifact records
// held for run id and returns how many tasks it deleted and the objects
// they named.
func (w *wtx) purgeRunRecords(id string, now time.Time) (int, []store.ObjectDeletion, error) {
	rows, err := w.query(`SELECT id, log_objects FROM tasks WHERE run_id = $1`, id)
	if err != nil {
		return 0, nil, err
	}
	var tasks []string
	var objects []store.ObjectDeletion
	for rows.Next() {
		var tid, logs string
		if err := rows.Scan(&tid, &logs); err != nil {
			rows.Close()
			return 0, nil, err
		}
		keys, err := store.LogObjectKeys(logs)
		if err != nil {
			rows.Close()
			return 0, nil, fmt.Errorf("task %s: %w", tid, err)
		}
		tasks = append(tasks, tid)
		for _, k := range keys {
			objects = append(objects, store.ObjectDeletion{Key: k, Kind: store.KindLogs, QueuedAt: now})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, nil, err
	}
	arts, err := w.strings(`SELECT object FROM artifacts WHERE run_id = $1 AND object <> ''`, id)
	if err != nil {
		return 0, nil, err
	}
	for _, k := range arts {
		objects = append(objects, store.ObjectDeletion{Key: k, Kind: store.KindArtifacts, QueuedAt: now})
	}
	for _, q := range []string{
		`DELETE FROM task_deps WHERE task_id IN (SELECT id FROM tasks WHERE run_id = $1)`,
		`DELETE FROM log_chunks WHERE task_id IN (SELECT id FROM tasks WHERE run_id = $1)`,
		`DELETE FROM artifacts WHERE run_id = $1`,
		`DELETE FROM tasks WHERE run_id = $1`,
	} {
		if _, err := w.exec(q, id); err != nil {
			return 0, nil, err
		}
	}
	return len(tasks), objects, nil
}

// queueDeletions records objects to delete.
func (w *wtx) queueDeletions(objects []store.ObjectDeletion) error {
	for _, o := range objects {
		if _, err := w.exec(`INSERT INTO object_deletions (key, kind, queued_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING`,
			o.Key, o.Kind, nanos(o.QueuedAt)); err != nil {
			return fmt.Errorf("queue deletion of %s: %w", o.Key, err)
		}
	}
	return nil
}

// strings runs a query of one text column.
func (w *wtx) strings(query string, args ...any) ([]string, error) {
	rows, err := w.query(query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// ArtifactExpire deletes expired artifact records and queues their
// objects.
func (s *Driver) ArtifactExpire(ctx context.Context, now time.Time, limit int) ([]*store.Artifact, error) {
	var out []*store.Artifact
	err := s.write(ctx, func(w *wtx) error {
		rows, err := w.query(`SELECT `+artifactCols+` FROM artifacts WHERE expires_at <= $1 ORDER BY expires_at, id LIMIT $2`,
			nanos(now), store.PageLimit(limit, 1000, 10000))
		if err != nil {
			return fmt.Errorf("expire artifacts: %w", err)
		}
		if out, err = collectArtifacts(rows); err != nil {
			return err
		}
		var objects []store.ObjectDeletion
		for _, a := range out {
			if _, err := w.exec(`DELETE FROM artifacts WHERE id = $1`, a.ID); err != nil {
				return fmt.Errorf("expire artifact %s: %w", a.ID, err)
			}
			if a.Object != "" {
				objects = append(objects, store.ObjectDeletion{Key: a.Object, Kind: store.KindArtifacts, QueuedAt: now})
			}
		}
		return w.queueDeletions(objects)
	})
	return out, err
}

// ObjectDeletionList returns queued object deletions, oldest first.
func (s *Driver) ObjectDeletionList(ctx context.Context, before time.Time, limit int) ([]store.ObjectDeletion, error) {
	rows, err := s.pool.Query(ctx, `SELECT key, kind, queued_at FROM object_deletions WHERE queued_at <= $1 ORDER BY queued_at, key LIMIT $2`,
		nanos(before), store.PageLimit(limit, 1000, 10000))
	if err != nil {
		return nil, fmt.Errorf("list object deletions: %w", err)
	}
	defer rows.Close()
	out := []store.ObjectDeletion{}
	for rows.Next() {
		var d store.ObjectDeletion
		var at int64
		if err := rows.Scan(&d.Key, &d.Kind, &at); err != nil {
			return nil, fmt.Errorf("list object deletions: %w", err)
		}
		d.QueuedAt = fromNanos(at)
		out = append(out, d)
	}
	return out, rows.Err()
}

// ObjectDeletionDone forgets deletions that are done.
func (s *Driver) ObjectDeletionDone(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	return s.write(ctx, func(w *wtx) error {
		for _, k := range keys {
			if _, err := w.exec(`DELETE FROM object_deletions WHERE key = $1`, k); err != nil {
				return fmt.Errorf("forget object deletion %s: %w", k, err)
			}
		}
		return nil
	})
}

// LockAcquire takes or renews a lock.
func (s *Driver) LockAcquire(ctx context.Context, p store.LockParams) (bool, error) {
	if err := p.Check(); err != nil {
		return false, err
	}
	var held bool
	err := s.write(ctx, func(w *wtx) error {
		res, err := w.exec(`INSERT INTO store_locks (name, holder, expires_at) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
			WHERE store_locks.holder = excluded.holder OR store_locks.expires_at <= $4`,
			p.Name, p.Holder, nanos(p.Now.Add(p.TTL)), nanos(p.Now))
		if err != nil {
			return fmt.Errorf("take lock %s: %w", p.Name, err)
		}
		held = res.RowsAffected() > 0
		return nil
	})
	return held, err
}

// LockRelease frees a lock its holder holds.
func (s *Driver) LockRelease(ctx context.Context, p store.LockParams) error {
	if err := p.Check(); err != nil {
		return err
	}
	return s.write(ctx, func(w *wtx) error {
		if _, err := w.exec(`DELETE FROM store_locks WHERE name = $1 AND holder = $2`, p.Name, p.Holder); err != nil {
			return fmt.Errorf("free lock %s: %w", p.Name, err)
		}
		return nil
	})
}

// StorageUsage counts the objects the records name, by kind.
func (s *Driver) StorageUsage(ctx context.Context) (store.StorageUsage, error) {
	var logs, arts store.Usage
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(sum(log_object_count), 0)::bigint, coalesce(sum(log_bytes), 0)::bigint FROM tasks WHERE log_sealed`).
		Scan(&logs.Objects, &logs.Bytes); err != nil {
		return nil, fmt.Errorf("log usage: %w", err)
	}
	if err := s.pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(size), 0)::bigint FROM artifacts WHERE object <> ''`).
		Scan(&arts.Objects, &arts.Bytes); err != nil {
		return nil, fmt.Errorf("artifact usage: %w", err)
	}
	return store.StorageUsage{store.KindLogs: logs, store.KindArtifacts: arts, store.KindCaches: {}}, nil
}
