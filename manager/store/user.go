package store

import (
	"context"
	"time"

	"github.com/errandci/errand"
)

// UserStore persists users, their API tokens and the audit trail. Users
// are never removed, only disabled, so that the audit trail and the
// approvals that name them keep their meaning.
type UserStore interface {
	// UserCreate inserts a user; a name that exists (disabled or not) is
	// errand.ErrConflict.
	UserCreate(ctx context.Context, p UserCreateParams) (*User, error)
	// UserGet returns one user by name, errand.ErrNotFound if there is
	// none.
	UserGet(ctx context.Context, name string) (*User, error)
	// UserList returns users in name order.
	UserList(ctx context.Context, p UserListParams) ([]*User, error)
	// UserDisable disables a user and revokes every token of theirs in
	// the same transaction. Disabling twice keeps the first time.
	UserDisable(ctx context.Context, p UserDisableParams) (*User, error)

	// TokenCreate inserts a token of an enabled user (errand.ErrNotFound
	// for an unknown or disabled one); an id that exists is
	// errand.ErrConflict.
	TokenCreate(ctx context.Context, p TokenCreateParams) (*Token, error)
	// TokenGet returns one token with its hash, errand.ErrNotFound if
	// there is none.
	TokenGet(ctx context.Context, id string) (*Token, error)
	// TokenList returns tokens, oldest first, without their hashes.
	TokenList(ctx context.Context, p TokenListParams) ([]*Token, error)
	// TokenRevoke revokes a token; revoking twice keeps the first time.
	TokenRevoke(ctx context.Context, p TokenRevokeParams) (*Token, error)
	// TokenTouch records that a token was used at p.Now. Unknown ids are
	// ignored.
	TokenTouch(ctx context.Context, p TokenTouchParams) error

	// AuditAppend adds an entry to the audit trail and returns it with
	// its ID set.
	AuditAppend(ctx context.Context, e AuditEntry) (*AuditEntry, error)
	// AuditList returns entries newest first.
	AuditList(ctx context.Context, p AuditListParams) ([]*AuditEntry, error)
}

// Role is what a user may do.
type Role string

// Roles, each allowed what the one before it is, and more.
const (
	// RoleViewer reads runs, tasks, logs and delegates.
	RoleViewer Role = "viewer"
	// RoleOperator also submits, cancels, approves and restarts.
	RoleOperator Role = "operator"
	// RoleAdmin also manages users, tokens and delegates.
	RoleAdmin Role = "admin"
)

// Rank orders roles: 0 for an unknown one.
func (r Role) Rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Limits of users, tokens and audit entries.
const (
	// MaxUserName bounds a user's name (as approvers are bounded).
	MaxUserName = MaxRunApprover
	// MaxTokenName bounds a token's name.
	MaxTokenName = 128
	// MaxAuditField bounds each text field of an audit entry.
	MaxAuditField = 1024
)

// User is a person or a script that holds tokens.
type User struct {
	Name       string
	Role       Role
	CreatedAt  time.Time
	DisabledAt *time.Time
}

// Token is a user's API token. Only the hash of its secret is stored.
type Token struct {
	ID   string
	User string
	Name string
	// Hash is the hex SHA-256 of the secret; TokenList leaves it empty.
	Hash       string
	CreatedAt  time.Time
	ExpiresAt  *time.Time
	LastUsedAt *time.Time
	RevokedAt  *time.Time
}

// AuditEntry is one thing a user did.
type AuditEntry struct {
	// ID is set by the store, increasing.
	ID int64
	At time.Time
	// Actor is who did it: a user's name, or "admin" for the bootstrap
	// admin token.
	Actor string
	// Action says what was done (run.cancel, stage.approve, user.create…).
	Action string
	// Target is what it was done to (a run, a task, a user, a token).
	Target string
	// Detail says more, free text.
	Detail string
}

// UserCreateParams inserts a user.
type UserCreateParams struct {
	Name string
	Role Role
	Now  time.Time
}

// Check checks the user's fields.
func (p UserCreateParams) Check() error {
	if err := CheckUserName(p.Name); err != nil {
		return err
	}
	if p.Role.Rank() == 0 {
		return errand.Errorf(errand.CodeInvalid, "role: %q is not viewer, operator or admin", p.Role)
	}
	return nil
}

// CheckUserName checks a user's name: 1 to MaxUserName letters, digits,
// '.', '_', '-' or '@', starting with a letter or digit.
func CheckUserName(name string) error {
	if name == "" || len(name) > MaxUserName {
		return errand.Errorf(errand.CodeInvalid, "name: 1 to %d characters are required", MaxUserName)
	}
	for i, c := range name {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || (c != '.' && c != '_' && c != '-' && c != '@')) {
			return errand.Errorf(errand.CodeInvalid, "name: %q may hold letters, digits, '.', '_', '-' and '@', and starts with a letter or digit", name)
		}
	}
	return nil
}

// UserListParams pages UserList.
type UserListParams struct {
	// After returns users whose name sorts after it.
	After string
	Limit int // 0: 100
	// Disabled lists disabled users too.
	Disabled bool
}

// UserDisableParams disables a user.
type UserDisableParams struct {
	Name string
	Now  time.Time
}

// TokenCreateParams inserts a token. Token.ID, User, Name, Hash and
// ExpiresAt are set by the caller; CreatedAt from Now.
type TokenCreateParams struct {
	Token *Token
	Now   time.Time
}

// Check checks the token's fields.
func (p TokenCreateParams) Check() error {
	t := p.Token
	switch {
	case t == nil || t.ID == "":
		return errand.Errorf(errand.CodeInvalid, "token.id: required")
	case t.Hash == "":
		return errand.Errorf(errand.CodeInvalid, "token hash: required")
	case t.Name == "" || len(t.Name) > MaxTokenName:
		return errand.Errorf(errand.CodeInvalid, "name: 1 to %d characters are required", MaxTokenName)
	case t.ExpiresAt != nil && !t.ExpiresAt.After(p.Now):
		return errand.Errorf(errand.CodeInvalid, "expires: %s is not in the future", t.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return CheckUserName(t.User)
}

// TokenListParams filters TokenList. Zero fields do not filter.
type TokenListParams struct {
	User string
	// Revoked lists revoked tokens too.
	Revoked bool
}

// TokenRevokeParams revokes a token.
type TokenRevokeParams struct {
	ID  string
	Now time.Time
}

// TokenTouchParams records a token's use.
type TokenTouchParams struct {
	ID  string
	Now time.Time
}

// AuditListParams pages AuditList.
type AuditListParams struct {
	// Before returns entries older than the one with this ID; 0 starts
	// from the newest.
	Before int64
	Limit  int // 0: 100
}

// Check checks an entry's fields.
func (e AuditEntry) Check() error {
	if e.Actor == "" || e.Action == "" {
		return errand.Errorf(errand.CodeInvalid, "audit: actor and action are required")
	}
	for _, f := range []string{e.Actor, e.Action, e.Target, e.Detail} {
		if len(f) > MaxAuditField {
			return errand.Errorf(errand.CodeInvalid, "audit: a field is longer than %d bytes", MaxAuditField)
		}
	}
	return nil
}

// PageLimit is limit, or def when limit is not positive, bounded by max.
func PageLimit(limit, def, max int) int {
	if limit <= 0 {
		return def
	}
	return min(limit, max)
}
