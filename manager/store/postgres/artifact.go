package postgres

import (
	"context"
	"errors"
	"fmt"
	"github.com/jackc/pgx/v5"
	"time"

	"github.com/errandci/errand/manager/store"
)

const artifactCols = `id, run_id, task_id, stage, step, path, size, sha256, content_type, mode, link_target, object, created_at, expires_at`

// ArtifactsCommit replaces a task's artifacts by those of one upload.
func (s *Driver) ArtifactsCommit(ctx context.Context, p store.ArtifactsCommitParams) ([]*store.Artifact, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	var replaced []*store.Artifact
	err := s.write(ctx, func(w *wtx) error {
		rows, err := w.query(`SELECT `+artifactCols+` FROM artifacts WHERE task_id = $1 ORDER BY id`, p.TaskID)
		if err != nil {
			return fmt.Errorf("commit artifacts of %s: %w", p.TaskID, err)
		}
		if replaced, err = collectArtifacts(rows); err != nil {
			return err
		}
		if p.MaxRunBytes > 0 {
			var others int64
			if err := w.queryRow(`SELECT coalesce(sum(size), 0)::bigint FROM artifacts WHERE run_id = $1 AND task_id <> $2`, p.RunID, p.TaskID).Scan(&others); err != nil {
				return fmt.Errorf("commit artifacts of %s: %w", p.TaskID, err)
			}
			if err := p.RunTooLarge(others); err != nil {
				return err
			}
		}
		if _, err := w.exec(`DELETE FROM artifacts WHERE task_id = $1`, p.TaskID); err != nil {
			return fmt.Errorf("commit artifacts of %s: %w", p.TaskID, err)
		}
		for _, a := range p.Artifacts {
			if _, err := w.exec(`INSERT INTO artifacts (`+artifactCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
				a.ID, a.RunID, a.TaskID, a.Stage, a.Step, a.Path, a.Size, a.SHA256, a.ContentType, a.Mode, a.LinkTarget, a.Object,
				nanos(a.CreatedAt), nanos(a.ExpiresAt)); err != nil {
				return fmt.Errorf("commit artifact %s of %s: %w", a.Path, p.TaskID, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return replaced, nil
}

// ArtifactList returns a run's artifacts in id order.
func (s *Driver) ArtifactList(ctx context.Context, p store.ArtifactListParams) ([]*store.Artifact, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+artifactCols+` FROM artifacts
		WHERE run_id = $1 AND ($2 = '' OR stage = $2) AND ($3 = '' OR task_id = $3) AND id > $4 ORDER BY id LIMIT $5`,
		p.RunID, p.Stage, p.TaskID, p.After, store.PageLimit(p.Limit, 1000, 10000))
	if err != nil {
		return nil, fmt.Errorf("list artifacts: %w", err)
	}
	return collectArtifacts(rows)
}

// ArtifactGet returns the artifact of a task at path.
func (s *Driver) ArtifactGet(ctx context.Context, taskID, path string) (*store.Artifact, error) {
	a, err := scanArtifact(s.pool.QueryRow(ctx, `SELECT `+artifactCols+` FROM artifacts WHERE task_id = $1 AND path = $2`, taskID, path))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("artifact", taskID+"/"+path)
	}
	if err != nil {
		return nil, fmt.Errorf("get artifact %s of %s: %w", path, taskID, err)
	}
	return a, nil
}

// ArtifactRunBytes sums the sizes of a run's artifacts.
func (s *Driver) ArtifactRunBytes(ctx context.Context, runID string) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(sum(size), 0)::bigint FROM artifacts WHERE run_id = $1`, runID).Scan(&n); err != nil {
		return 0, fmt.Errorf("artifact bytes of run %s: %w", runID, err)
	}
	return n, nil
}

// ArtifactListExpired returns artifacts expired at now.
func (s *Driver) ArtifactListExpired(ctx context.Context, now time.Time, limit int) ([]*store.Artifact, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+artifactCols+` FROM artifacts WHERE expires_at <= $1 ORDER BY expires_at, id LIMIT $2`,
		nanos(now), store.PageLimit(limit, 1000, 10000))
	if err != nil {
		return nil, fmt.Errorf("list expired artifacts: %w", err)
	}
	return collectArtifacts(rows)
}

// ArtifactDelete deletes artifacts by id.
func (s *Driver) ArtifactDelete(ctx context.Context, ids []string) ([]*store.Artifact, error) {
	var out []*store.Artifact
	err := s.write(ctx, func(w *wtx) error {
		out = nil
		for _, id := range ids {
			a, err := scanArtifact(w.queryRow(`SELECT `+artifactCols+` FROM artifacts WHERE id = $1`, id))
			if errors.Is(err, pgx.ErrNoRows) {
				continue
			}
			if err != nil {
				return fmt.Errorf("delete artifact %s: %w", id, err)
			}
			if _, err := w.exec(`DELETE FROM artifacts WHERE id = $1`, id); err != nil {
				return fmt.Errorf("delete artifact %s: %w", id, err)
			}
			out = append(out, a)
		}
		return nil
	})
	return out, err
}

// ArtifactDeleteRun deletes a run's artifacts.
func (s *Driver) ArtifactDeleteRun(ctx context.Context, runID string) ([]*store.Artifact, error) {
	var out []*store.Artifact
	err := s.write(ctx, func(w *wtx) error {
		rows, err := w.query(`SELECT `+artifactCols+` FROM artifacts WHERE run_id = $1 ORDER BY id`, runID)
		if err != nil {
			return fmt.Errorf("delete artifacts of run %s: %w", runID, err)
		}
		if out, err = collectArtifacts(rows); err != nil {
			return err
		}
		if _, err := w.exec(`DELETE FROM artifacts WHERE run_id = $1`, runID); err != nil {
			return fmt.Errorf("delete artifacts of run %s: %w", runID, err)
		}
		return nil
	})
	return out, err
}

// ArtifactUsage counts the artifacts and their bytes.
func (s *Driver) ArtifactUsage(ctx context.Context) (store.ArtifactUsage, error) {
	var u store.ArtifactUsage
	if err := s.pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(size), 0)::bigint FROM artifacts`).Scan(&u.Count, &u.Bytes); err != nil {
		return u, fmt.Errorf("artifact usage: %w", err)
	}
	return u, nil
}

func collectArtifacts(rows pgx.Rows) ([]*store.Artifact, error) {
	defer rows.Close()
	out := []*store.Artifact{}
	for rows.Next() {
		a, err := scanArtifact(rows)
		if err != nil {
			return nil, fmt.Errorf("list artifacts: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list artifacts: %w", err)
	}
	return out, nil
}

func scanArtifact(sc scanner) (*store.Artifact, error) {
	var a store.Artifact
	var created, expires int64
	if err := sc.Scan(&a.ID, &a.RunID, &a.TaskID, &a.Stage, &a.Step, &a.Path, &a.Size, &a.SHA256, &a.ContentType, &a.Mode,
		&a.LinkTarget, &a.Object, &created, &expires); err != nil {
		return nil, err
	}
	a.CreatedAt, a.ExpiresAt = fromNanos(created), fromNanos(expires)
	return &a, nil
}
