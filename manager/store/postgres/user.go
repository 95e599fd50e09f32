package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

const (
	userCols  = `name, role, created_at, disabled_at`
	tokenCols = `id, user_name, name, hash, created_at, expires_at, last_used_at, revoked_at`
	auditCols = `id, at, actor, action, target, detail`
)

// UserCreate inserts a user.
func (s *Driver) UserCreate(ctx context.Context, p store.UserCreateParams) (*store.User, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	var out *store.User
	err := s.write(ctx, func(w *wtx) error {
		var err error
		out, err = scanUser(w.queryRow(`INSERT INTO users (name, role, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING RETURNING `+userCols,
			p.Name, string(p.Role), nanos(p.Now)))
		if errors.Is(err, pgx.ErrNoRows) {
			return errand.Errorf(errand.CodeConflict, "user %s exists", p.Name)
		}
		if err != nil {
			return fmt.Errorf("create user %s: %w", p.Name, err)
		}
		return nil
	})
	return out, err
}

// UserGet returns one user.
func (s *Driver) UserGet(ctx context.Context, name string) (*store.User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("user", name)
	}
	if err != nil {
		return nil, fmt.Errorf("get user %s: %w", name, err)
	}
	return u, nil
}

// UserList returns users in name order.
func (s *Driver) UserList(ctx context.Context, p store.UserListParams) ([]*store.User, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+userCols+` FROM users
		WHERE name > $1 AND ($2::boolean OR disabled_at IS NULL) ORDER BY name LIMIT $3`,
		p.After, p.Disabled, store.PageLimit(p.Limit, 100, 1000))
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	out := []*store.User{}
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out, nil
}

// UserDisable disables a user and revokes their tokens.
func (s *Driver) UserDisable(ctx context.Context, p store.UserDisableParams) (*store.User, error) {
	var out *store.User
	err := s.write(ctx, func(w *wtx) error {
		now := nanos(p.Now)
		if _, err := w.exec(`UPDATE users SET disabled_at = coalesce(disabled_at, $1::bigint) WHERE name = $2`, now, p.Name); err != nil {
			return fmt.Errorf("disable user %s: %w", p.Name, err)
		}
		if _, err := w.exec(`UPDATE user_tokens SET revoked_at = $1 WHERE user_name = $2 AND revoked_at IS NULL`, now, p.Name); err != nil {
			return fmt.Errorf("disable user %s: %w", p.Name, err)
		}
		var err error
		out, err = scanUser(w.queryRow(`SELECT `+userCols+` FROM users WHERE name = $1`, p.Name))
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("user", p.Name)
		}
		if err != nil {
			return fmt.Errorf("disable user %s: %w", p.Name, err)
		}
		return nil
	})
	return out, err
}

// TokenCreate inserts a token.
func (s *Driver) TokenCreate(ctx context.Context, p store.TokenCreateParams) (*store.Token, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	t := p.Token
	var out *store.Token
	err := s.write(ctx, func(w *wtx) error {
		var n int
		if err := w.queryRow(`SELECT count(*) FROM users WHERE name = $1 AND disabled_at IS NULL`, t.User).Scan(&n); err != nil {
			return fmt.Errorf("create token: %w", err)
		}
		if n == 0 {
			return notFound("user", t.User)
		}
		var err error
		out, err = scanToken(w.queryRow(`INSERT INTO user_tokens (id, user_name, name, hash, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING RETURNING `+tokenCols,
			t.ID, t.User, t.Name, t.Hash, nanos(p.Now), nullTime(t.ExpiresAt)))
		if errors.Is(err, pgx.ErrNoRows) {
			return errand.Errorf(errand.CodeConflict, "token %s exists", t.ID)
		}
		if err != nil {
			return fmt.Errorf("create token: %w", err)
		}
		return nil
	})
	return out, err
}

// TokenGet returns one token with its hash.
func (s *Driver) TokenGet(ctx context.Context, id string) (*store.Token, error) {
	t, err := scanToken(s.pool.QueryRow(ctx, `SELECT `+tokenCols+` FROM user_tokens WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("token", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get token %s: %w", id, err)
	}
	return t, nil
}

// TokenList returns tokens, oldest first, without hashes.
func (s *Driver) TokenList(ctx context.Context, p store.TokenListParams) ([]*store.Token, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+tokenCols+` FROM user_tokens
		WHERE ($1::text = '' OR user_name = $2) AND ($3::boolean OR revoked_at IS NULL) ORDER BY created_at, id`,
		p.User, p.User, p.Revoked)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	out := []*store.Token{}
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		t.Hash = ""
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out, nil
}

// TokenRevoke revokes a token.
func (s *Driver) TokenRevoke(ctx context.Context, p store.TokenRevokeParams) (*store.Token, error) {
	var out *store.Token
	err := s.write(ctx, func(w *wtx) error {
		if _, err := w.exec(`UPDATE user_tokens SET revoked_at = coalesce(revoked_at, $1::bigint) WHERE id = $2`, nanos(p.Now), p.ID); err != nil {
			return fmt.Errorf("revoke token %s: %w", p.ID, err)
		}
		var err error
		out, err = scanToken(w.queryRow(`SELECT `+tokenCols+` FROM user_tokens WHERE id = $1`, p.ID))
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("token", p.ID)
		}
		if err != nil {
			return fmt.Errorf("revoke token %s: %w", p.ID, err)
		}
		out.Hash = ""
		return nil
	})
	return out, err
}

// TokenTouch records a token's use.
func (s *Driver) TokenTouch(ctx context.Context, p store.TokenTouchParams) error {
	return s.write(ctx, func(w *wtx) error {
		if _, err := w.exec(`UPDATE user_tokens SET last_used_at = $1 WHERE id = $2`, nanos(p.Now), p.ID); err != nil {
			return fmt.Errorf("touch token %s: %w", p.ID, err)
		}
		return nil
	})
}

// AuditAppend adds an audit entry.
func (s *Driver) AuditAppend(ctx context.Context, e store.AuditEntry) (*store.AuditEntry, error) {
	if err := e.Check(); err != nil {
		return nil, err
	}
	var out *store.AuditEntry
	err := s.write(ctx, func(w *wtx) error {
		var err error
		out, err = scanAudit(w.queryRow(`INSERT INTO audit (at, actor, action, target, detail)
			VALUES ($1, $2, $3, $4, $5) RETURNING `+auditCols, nanos(e.At), e.Actor, e.Action, e.Target, e.Detail))
		if err != nil {
			return fmt.Errorf("append audit: %w", err)
		}
		return nil
	})
	return out, err
}

// AuditList returns audit entries, newest first.
func (s *Driver) AuditList(ctx context.Context, p store.AuditListParams) ([]*store.AuditEntry, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+auditCols+` FROM audit
		WHERE ($1::bigint = 0 OR id < $2) ORDER BY id DESC LIMIT $3`, p.Before, p.Before, store.PageLimit(p.Limit, 100, 1000))
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	out := []*store.AuditEntry{}
	for rows.Next() {
		e, err := scanAudit(rows)
		if err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return out, nil
}

func scanUser(sc scanner) (*store.User, error) {
	var u store.User
	var role string
	var created int64
	var disabled *int64
	if err := sc.Scan(&u.Name, &role, &created, &disabled); err != nil {
		return nil, err
	}
	u.Role, u.CreatedAt, u.DisabledAt = store.Role(role), fromNanos(created), fromNull(disabled)
	return &u, nil
}

func scanToken(sc scanner) (*store.Token, error) {
	var t store.Token
	var created int64
	var expires, used, revoked *int64
	if err := sc.Scan(&t.ID, &t.User, &t.Name, &t.Hash, &created, &expires, &used, &revoked); err != nil {
		return nil, err
	}
	t.CreatedAt, t.ExpiresAt, t.LastUsedAt, t.RevokedAt = fromNanos(created), fromNull(expires), fromNull(used), fromNull(revoked)
	return &t, nil
}

func scanAudit(sc scanner) (*store.AuditEntry, error) {
	var e store.AuditEntry
	var at int64
	if err := sc.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.Target, &e.Detail); err != nil {
		return nil, err
	}
	e.At = fromNanos(at)
	return &e, nil
}
