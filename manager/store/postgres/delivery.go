package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

const deliveryCols = `id, pipeline, kind, bucket, source, event, header_event, external_id, coalesce(dedupe_key, ''), target, secret_name,
	state, reason, run_id, attempts, status_code, replay_of, redelivery_of, created_at, updated_at, next_at`

const hookSecretCols = `pipeline, current_secret, previous_secret, previous_until, rotated_at`

// DeliveryCreate inserts a delivery, claims its replay keys and prunes
// its bucket. Deliveries of one pipeline are created one at a time (a
// transaction-scoped advisory lock), so that two copies of a delivery
// sent at once cannot both claim its keys.
func (s *Driver) DeliveryCreate(ctx context.Context, p store.DeliveryCreateParams) (*store.Delivery, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	var out *store.Delivery
	err := s.write(ctx, func(w *wtx) error {
		d := *p.Delivery
		d.CreatedAt, d.UpdatedAt = p.Now.UTC(), p.Now.UTC()
		if _, err := w.exec(`SELECT pg_advisory_xact_lock(hashtext('errand-deliveries:' || $1))`, d.Pipeline); err != nil {
			return fmt.Errorf("create delivery %s: %w", d.ID, err)
		}
		if len(p.ReplayKeys) > 0 {
			if _, err := w.exec(`DELETE FROM hook_replay_keys WHERE pipeline = $1 AND claimed_at < $2`, d.Pipeline, nanos(p.Now.Add(-p.ReplayWindow))); err != nil {
				return fmt.Errorf("create delivery %s: %w", d.ID, err)
			}
			for _, k := range p.ReplayKeys {
				var holder string
				err := w.queryRow(`SELECT delivery_id FROM hook_replay_keys WHERE pipeline = $1 AND replay_key = $2`, d.Pipeline, k).Scan(&holder)
				if errors.Is(err, pgx.ErrNoRows) {
					continue
				}
				if err != nil {
					return fmt.Errorf("create delivery %s: %w", d.ID, err)
				}
				store.MarkReplay(&d, k, holder)
				break
			}
		}
		var id string
		err := w.queryRow(`INSERT INTO deliveries (id, pipeline, kind, bucket, source, event, header_event, external_id, dedupe_key,
			target, secret_name, state, reason, run_id, attempts, status_code, body, replay_of, redelivery_of, created_at, updated_at, next_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)
			ON CONFLICT DO NOTHING RETURNING id`,
			d.ID, d.Pipeline, string(d.Kind), d.Bucket, d.Source, d.Event, d.HeaderEvent, d.ExternalID, nullString(d.DedupeKey),
			d.Target, d.SecretName, string(d.State), d.Reason, d.RunID, d.Attempts, d.StatusCode, nullBytes(d.Body), d.ReplayOf, d.RedeliveryOf,
			nanos(d.CreatedAt), nanos(d.UpdatedAt), nullTime(d.NextAt)).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return errand.Errorf(errand.CodeConflict, "delivery %s (or one for the same key) exists", d.ID)
		}
		if err != nil {
			return fmt.Errorf("create delivery %s: %w", d.ID, err)
		}
		if len(p.ReplayKeys) > 0 && d.ReplayOf == "" {
			for _, k := range p.ReplayKeys {
				if _, err := w.exec(`INSERT INTO hook_replay_keys (pipeline, replay_key, delivery_id, claimed_at) VALUES ($1, $2, $3, $4)`,
					d.Pipeline, k, d.ID, nanos(p.Now)); err != nil {
					return fmt.Errorf("create delivery %s: %w", d.ID, err)
				}
			}
		}
		keep := store.PageLimit(p.Keep, 100, 1<<30)
		if _, err := w.exec(`DELETE FROM deliveries WHERE pipeline = $1 AND bucket = $2 AND id < (
			SELECT id FROM deliveries WHERE pipeline = $1 AND bucket = $2 ORDER BY id DESC LIMIT 1 OFFSET $3)`,
			d.Pipeline, d.Bucket, keep-1); err != nil {
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
		var err error
		out, err = scanDelivery(w.queryRow(`UPDATE deliveries SET state = $1, reason = $2, run_id = $3, attempts = $4, status_code = $5,
			next_at = $6, updated_at = $7 WHERE id = $8 RETURNING `+deliveryCols,
			string(p.State), p.Reason, p.RunID, p.Attempts, p.StatusCode, nullTime(p.NextAt), nanos(p.Now), p.ID))
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("delivery", p.ID)
		}
		if err != nil {
			return fmt.Errorf("update delivery %s: %w", p.ID, err)
		}
		if p.ReleaseKeys {
			if _, err := w.exec(`DELETE FROM hook_replay_keys WHERE delivery_id = $1`, p.ID); err != nil {
				return fmt.Errorf("update delivery %s: %w", p.ID, err)
			}
		}
		return nil
	})
	return out, err
}

// DeliveryGet returns one delivery with its body.
func (s *Driver) DeliveryGet(ctx context.Context, id string) (*store.Delivery, error) {
	var body []byte
	d, err := scanDelivery(s.pool.QueryRow(ctx, `SELECT `+deliveryCols+`, body FROM deliveries WHERE id = $1`, id), &body)
	if errors.Is(err, pgx.ErrNoRows) {
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
	rows, err := s.pool.Query(ctx, `SELECT `+deliveryCols+` FROM deliveries
		WHERE pipeline = $1 AND ($2 = '' OR kind = $2) AND ($3 = '' OR id < $3) ORDER BY id DESC LIMIT $4`,
		p.Pipeline, string(p.Kind), p.Before, store.PageLimit(p.Limit, 100, 1000))
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	return collectDeliveries(rows)
}

// DeliveryClaim leases due pending deliveries; rows another transaction
// is claiming are skipped.
func (s *Driver) DeliveryClaim(ctx context.Context, p store.DeliveryClaimParams) ([]*store.Delivery, error) {
	var out []*store.Delivery
	err := s.write(ctx, func(w *wtx) error {
		rows, err := w.query(`UPDATE deliveries SET next_at = $1 WHERE id IN (
			SELECT id FROM deliveries WHERE state = 'pending' AND next_at IS NOT NULL AND next_at <= $2
			ORDER BY next_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING `+deliveryCols,
			nanos(p.Until), nanos(p.Now), store.PageLimit(p.Limit, 100, 1000))
		if err != nil {
			return fmt.Errorf("claim deliveries: %w", err)
		}
		out, err = collectDeliveries(rows)
		return err
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
		out, err = scanHookSecrets(w.queryRow(`INSERT INTO hook_secrets (pipeline, current_secret, previous_secret, previous_until, rotated_at)
			VALUES ($1, $2, '', NULL, $3)
			ON CONFLICT (pipeline) DO UPDATE SET previous_secret = hook_secrets.current_secret, current_secret = excluded.current_secret,
				previous_until = $4, rotated_at = excluded.rotated_at
			RETURNING `+hookSecretCols, p.Pipeline, p.Secret, nanos(p.Now), nullTime(p.PreviousUntil)))
		if err != nil {
			return fmt.Errorf("rotate hook secret of %s: %w", p.Pipeline, err)
		}
		return nil
	})
	return out, err
}

// HookSecretGet returns a pipeline's hook secrets.
func (s *Driver) HookSecretGet(ctx context.Context, pipeline string) (*store.HookSecrets, error) {
	h, err := scanHookSecrets(s.pool.QueryRow(ctx, `SELECT `+hookSecretCols+` FROM hook_secrets WHERE pipeline = $1`, pipeline))
	if errors.Is(err, pgx.ErrNoRows) {
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
		out, err = scanHookSecrets(w.queryRow(`UPDATE hook_secrets SET previous_secret = '', previous_until = NULL WHERE pipeline = $1
			RETURNING `+hookSecretCols, pipeline))
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("hook secret of pipeline", pipeline)
		}
		if err != nil {
			return fmt.Errorf("end previous hook secret of %s: %w", pipeline, err)
		}
		return nil
	})
	return out, err
}

func collectDeliveries(rows pgx.Rows) ([]*store.Delivery, error) {
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
	var next *int64
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
	var until *int64
	var rotated int64
	if err := sc.Scan(&h.Pipeline, &h.Current, &h.Previous, &until, &rotated); err != nil {
		return nil, err
	}
	h.PreviousUntil, h.RotatedAt = fromNull(until), fromNanos(rotated)
	return &h, nil
}

// nullString is a nullable text column's value: NULL for "".
func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
