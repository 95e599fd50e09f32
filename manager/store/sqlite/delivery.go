package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

const deliveryCols = `id, pipeline, kind, bucket, source, event, header_event, external_id, coalesce(dedupe_key, ''), target, secret_name,
	state, reason, run_id, attempts, status_code, replay_of, redelivery_of, created_at, updated_at, next_at`

const hookSecretCols = `pipeline, current_secret, previous_secret, previous_until, rotated_at`

// DeliveryCreate inserts a delivery, claims its replay keys and prunes
// its bucket.
func (s *Driver) DeliveryCreate(ctx context.Context, p store.DeliveryCreateParams) (*store.Delivery, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	var out *store.Delivery
	err := s.write(ctx, func(w *wtx) error {
		d := *p.Delivery
		d.CreatedAt, d.UpdatedAt = p.Now.UTC(), p.Now.UTC()
		var n int
		if err := w.queryRow(`SELECT count(*) FROM deliveries WHERE id = ? OR (? <> '' AND dedupe_key = ?)`, d.ID, d.DedupeKey, d.DedupeKey).Scan(&n); err != nil {
			return fmt.Errorf("create delivery %s: %w", d.ID, err)
		}
		if n > 0 {
			return errand.Errorf(errand.CodeConflict, "delivery %s (or one for the same key) exists", d.ID)
		}
		if len(p.ReplayKeys) > 0 {
			if _, err := w.exec(`DELETE FROM hook_replay_keys WHERE pipeline = ? AND claimed_at < ?`, d.Pipeline, nanos(p.Now.Add(-p.ReplayWindow))); err != nil {
				return fmt.Errorf("create delivery %s: %w", d.ID, err)
			}
			for _, k := range p.ReplayKeys {
				var holder string
				err := w.queryRow(`SELECT delivery_id FROM hook_replay_keys WHERE pipeline = ? AND replay_key = ?`, d.Pipeline, k).Scan(&holder)
				if errors.Is(err, sql.ErrNoRows) {
					continue
				}
				if err != nil {
					return fmt.Errorf("create delivery %s: %w", d.ID, err)
				}
				store.MarkReplay(&d, k, holder)
				break
			}
			if d.ReplayOf == "" {
				for _, k := range p.ReplayKeys {
					if _, err := w.exec(`INSERT INTO hook_replay_keys (pipeline, replay_key, delivery_id, claimed_at) VALUES (?, ?, ?, ?)`,
						d.Pipeline, k, d.ID, nanos(p.Now)); err != nil {
						return fmt.Errorf("create delivery %s: %w", d.ID, err)
					}
				}
			}
		}
		if _, err := w.exec(`INSERT INTO deliveries (id, pipeline, kind, bucket, source, event, header_event, external_id, dedupe_key,
			target, secret_name, state, reason, run_id, attempts, status_code, body, replay_of, redelivery_of, created_at, updated_at, next_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			d.ID, d.Pipeline, string(d.Kind), d.Bucket, d.Source, d.Event, d.HeaderEvent, d.ExternalID, nullString(d.DedupeKey),
			d.Target, d.SecretName, string(d.State), d.Reason, d.RunID, d.Attempts, d.StatusCode, nullBytes(d.Body), d.ReplayOf, d.RedeliveryOf,
			nanos(d.CreatedAt), nanos(d.UpdatedAt), nullNanos(d.NextAt)); err != nil {
			return fmt.Errorf("create delivery %s: %w", d.ID, err)
		}
		keep := store.PageLimit(p.Keep, 100, 1<<30)
		if _, err := w.exec(`DELETE FROM deliveries WHERE pipeline = ? AND bucket = ? AND id < (
			SELECT id FROM deliveries WHERE pipeline = ? AND bucket = ? ORDER BY id DESC LIMIT 1 OFFSET ?)`,
			d.Pipeline, d.Bucket, d.Pipeline, d.Bucket, keep-1); err != nil {
			return fmt.Errorf("prune deliveries of %s: %w", d.Pipeline, err)
		}
		out = &d
		return nil
	})
	return out, err
}

// DeliveryUpdate records an attempt or the end of a delivery.
func (s *Driver) DeliveryUpdate(ctx context.Context, p store.DeliveryUpdateParams) (*store.Delivery, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	var out *store.Delivery
	err := s.write(ctx, func(w *wtx) error {
		res, err := w.exec(`UPDATE deliveries SET state = ?, reason = ?, run_id = ?, attempts = ?, status_code = ?, next_at = ?, updated_at = ?
			WHERE id = ?`, string(p.State), p.Reason, p.RunID, p.Attempts, p.StatusCode, nullNanos(p.NextAt), nanos(p.Now), p.ID)
		if err != nil {
			return fmt.Errorf("update delivery %s: %w", p.ID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound("delivery", p.ID)
		}
		if p.ReleaseKeys {
			if _, err := w.exec(`DELETE FROM hook_replay_keys WHERE delivery_id = ?`, p.ID); err != nil {
				return fmt.Errorf("update delivery %s: %w", p.ID, err)
			}
		}
		out, err = scanDelivery(w.queryRow(`SELECT `+deliveryCols+` FROM deliveries WHERE id = ?`, p.ID))
		if err != nil {
			return fmt.Errorf("update delivery %s: %w", p.ID, err)
		}
		return nil
	})
	return out, err
}

// DeliveryGet returns one delivery with its body.
func (s *Driver) DeliveryGet(ctx context.Context, id string) (*store.Delivery, error) {
	var body []byte
	d, err := scanDelivery(s.rdb.QueryRowContext(ctx, `SELECT `+deliveryCols+`, body FROM deliveries WHERE id = ?`, id), &body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("delivery", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get delivery %s: %w", id, err)
	}
	d.Body = body
	return d, nil
}

// DeliveryList returns a pipeline's deliveries, newest first.
func (s *Driver) DeliveryList(ctx context.Context, p store.DeliveryListParams) ([]*store.Delivery, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+deliveryCols+` FROM deliveries
		WHERE pipeline = ? AND (? = '' OR kind = ?) AND (? = '' OR id < ?) ORDER BY id DESC LIMIT ?`,
		p.Pipeline, string(p.Kind), string(p.Kind), p.Before, p.Before, store.PageLimit(p.Limit, 100, 1000))
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	return collectDeliveries(rows)
}

// DeliveryClaim leases due pending deliveries.
func (s *Driver) DeliveryClaim(ctx context.Context, p store.DeliveryClaimParams) ([]*store.Delivery, error) {
	var out []*store.Delivery
	err := s.write(ctx, func(w *wtx) error {
		rows, err := w.query(`SELECT `+deliveryCols+` FROM deliveries WHERE state = 'pending' AND next_at IS NOT NULL AND next_at <= ?
			ORDER BY next_at, id LIMIT ?`, nanos(p.Now), store.PageLimit(p.Limit, 100, 1000))
		if err != nil {
			return fmt.Errorf("claim deliveries: %w", err)
		}
		if out, err = collectDeliveries(rows); err != nil {
			return err
		}
		until := p.Until.UTC()
		for _, d := range out {
			if _, err := w.exec(`UPDATE deliveries SET next_at = ? WHERE id = ?`, nanos(until), d.ID); err != nil {
				return fmt.Errorf("claim delivery %s: %w", d.ID, err)
			}
			d.NextAt = &until
		}
		return nil
	})
	return out, err
}

// HookSecretRotate makes a new current hook secret.
func (s *Driver) HookSecretRotate(ctx context.Context, p store.HookSecretRotateParams) (*store.HookSecrets, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	var out *store.HookSecrets
	err := s.write(ctx, func(w *wtx) error {
		var err error
		w.wrote = true
		out, err = scanHookSecrets(w.queryRow(`INSERT INTO hook_secrets (pipeline, current_secret, previous_secret, previous_until, rotated_at)
			VALUES (?, ?, '', NULL, ?)
			ON CONFLICT (pipeline) DO UPDATE SET previous_secret = hook_secrets.current_secret, current_secret = excluded.current_secret,
				previous_until = ?, rotated_at = excluded.rotated_at
			RETURNING `+hookSecretCols, p.Pipeline, p.Secret, nanos(p.Now), nullNanos(p.PreviousUntil)))
		if err != nil {
			return fmt.Errorf("rotate hook secret of %s: %w", p.Pipeline, err)
		}
		return nil
	})
	return out, err
}

// HookSecretGet returns a pipeline's hook secrets.
func (s *Driver) HookSecretGet(ctx context.Context, pipeline string) (*store.HookSecrets, error) {
	h, err := scanHookSecrets(s.rdb.QueryRowContext(ctx, `SELECT `+hookSecretCols+` FROM hook_secrets WHERE pipeline = ?`, pipeline))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("hook secret of pipeline", pipeline)
	}
	if err != nil {
		return nil, fmt.Errorf("get hook secret of %s: %w", pipeline, err)
	}
	return h, nil
}

// HookSecretEndPrevious drops a pipeline's previous hook secret.
func (s *Driver) HookSecretEndPrevious(ctx context.Context, pipeline string) (*store.HookSecrets, error) {
	var out *store.HookSecrets
	err := s.write(ctx, func(w *wtx) error {
		var err error
		w.wrote = true
		out, err = scanHookSecrets(w.queryRow(`UPDATE hook_secrets SET previous_secret = '', previous_until = NULL WHERE pipeline = ?
			RETURNING `+hookSecretCols, pipeline))
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("hook secret of pipeline", pipeline)
		}
		if err != nil {
			return fmt.Errorf("end previous hook secret of %s: %w", pipeline, err)
		}
		return nil
	})
	return out, err
}

func collectDeliveries(rows *sql.Rows) ([]*store.Delivery, error) {
	defer rows.Close()
	out := []*store.Delivery{}
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, fmt.Errorf("list deliveries: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	return out, nil
}

func scanDelivery(sc scanner, extra ...any) (*store.Delivery, error) {
	var d store.Delivery
	var kind, state string
	var created, updated int64
	var next sql.NullInt64
	dest := append([]any{&d.ID, &d.Pipeline, &kind, &d.Bucket, &d.Source, &d.Event, &d.HeaderEvent, &d.ExternalID, &d.DedupeKey, &d.Target, &d.SecretName,
		&state, &d.Reason, &d.RunID, &d.Attempts, &d.StatusCode, &d.ReplayOf, &d.RedeliveryOf, &created, &updated, &next}, extra...)
	if err := sc.Scan(dest...); err != nil {
		return nil, err
	}
	d.Kind, d.State = store.DeliveryKind(kind), store.DeliveryState(state)
	d.CreatedAt, d.UpdatedAt, d.NextAt = fromNanos(created), fromNanos(updated), fromNull(next)
	return &d, nil
}

func scanHookSecrets(sc scanner) (*store.HookSecrets, error) {
	var h store.HookSecrets
	var until sql.NullInt64
	var rotated int64
	if err := sc.Scan(&h.Pipeline, &h.Current, &h.Previous, &until, &rotated); err != nil {
		return nil, err
	}
	h.PreviousUntil, h.RotatedAt = fromNull(until), fromNanos(rotated)
	return &h, nil
}

// nullString is a nullable text column's value: NULL for "".
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}
