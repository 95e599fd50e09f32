package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Kinds of the identity objects of the API.
const (
	KindUser      = "user"
	KindUserList  = "user_list"
	KindToken     = "token"
	KindTokenList = "token_list"
	KindAuditList = "audit_list"
)

// User is a person or script that holds API tokens.
type User struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	// Role is viewer, operator or admin.
	Role       string     `json:"role"`
	CreatedAt  time.Time  `json:"created_at"`
	DisabledAt *time.Time `json:"disabled_at,omitempty"`
}

// UserRequest is the body of POST /api/v1/users.
type UserRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// UserList is a page of users in name order.
type UserList struct {
	Kind  string  `json:"kind"`
	Users []*User `json:"users"`
}

// Token is a user's API token as listed: never its secret.
type Token struct {
	Kind       string     `json:"kind"`
	ID         string     `json:"id"`
	User       string     `json:"user"`
	Name       string     `json:"name"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	// Secret is the bearer token itself, set only in the answer that
	// created it: it is shown once and never stored.
	Secret string `json:"secret,omitempty"`
}

// TokenRequest is the body of POST /api/v1/tokens.
type TokenRequest struct {
	// Name says what the token is for.
	Name string `json:"name"`
	// User owns the token: the caller when empty; another user's token
	// needs the admin role.
	User string `json:"user,omitempty"`
	// ExpiresIn is a Go duration ("720h"); empty for a token that does
	// not expire.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// TokenList lists tokens, oldest first.
type TokenList struct {
	Kind   string   `json:"kind"`
	Tokens []*Token `json:"tokens"`
}

// AuditEntry is one thing a user did.
type AuditEntry struct {
	ID     int64     `json:"id"`
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// AuditList is a page of the audit trail, newest first; Before pages on.
type AuditList struct {
	Kind    string        `json:"kind"`
	Entries []*AuditEntry `json:"entries"`
	// Before is the value of ?before= for the next page, 0 on the last.
	Before int64 `json:"before,omitempty"`
}

// UserTokenPrefix starts every user's API token (eu_<id>_<secret>),
// which tells it from the admin token and delegates' tokens.
const UserTokenPrefix = "eu_"

// UserToken reports whether the client's token is a user's API token.
func (c *HTTP) UserToken() bool { return strings.HasPrefix(c.token, UserTokenPrefix) }

// CreateUser creates a user.
func (c *HTTP) CreateUser(ctx context.Context, r *UserRequest) (*User, error) {
	var out User
	if err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/users", body: r, out: &out, policy: retryNotSent}); err != nil {
		return nil, fmt.Errorf("create user %s: %w", r.Name, err)
	}
	return &out, nil
}

// ListUsers lists users; disabled ones too with disabled.
func (c *HTTP) ListUsers(ctx context.Context, disabled bool) (*UserList, error) {
	q := url.Values{}
	if disabled {
		q.Set("disabled", "true")
	}
	var out UserList
	if err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/users", query: q, out: &out, policy: retryIdempotent}); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return &out, nil
}

// DeleteUser disables a user and revokes their tokens.
func (c *HTTP) DeleteUser(ctx context.Context, name string) (*User, error) {
	var out User
	if err := c.do(ctx, call{method: http.MethodDelete, path: "/api/v1/users/" + url.PathEscape(name), out: &out, policy: retryIdempotent}); err != nil {
		return nil, fmt.Errorf("delete user %s: %w", name, err)
	}
	return &out, nil
}

// CreateToken creates a token; the answer holds its secret, once.
func (c *HTTP) CreateToken(ctx context.Context, r *TokenRequest) (*Token, error) {
	var out Token
	if err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/tokens", body: r, out: &out, policy: retryNotSent}); err != nil {
		return nil, fmt.Errorf("create token %s: %w", r.Name, err)
	}
	return &out, nil
}

// ListTokens lists the tokens of user (the caller's when empty).
func (c *HTTP) ListTokens(ctx context.Context, user string, revoked bool) (*TokenList, error) {
	q := url.Values{}
	if user != "" {
		q.Set("user", user)
	}
	if revoked {
		q.Set("revoked", "true")
	}
	var out TokenList
	if err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/tokens", query: q, out: &out, policy: retryIdempotent}); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return &out, nil
}

// RevokeToken revokes a token.
func (c *HTTP) RevokeToken(ctx context.Context, id string) (*Token, error) {
	var out Token
	if err := c.do(ctx, call{method: http.MethodDelete, path: "/api/v1/tokens/" + url.PathEscape(id), out: &out, policy: retryIdempotent}); err != nil {
		return nil, fmt.Errorf("revoke token %s: %w", id, err)
	}
	return &out, nil
}

// ListAudit returns a page of the audit trail, newest first: entries
// older than before (0: from the newest), at most limit (0: 100).
func (c *HTTP) ListAudit(ctx context.Context, before int64, limit int) (*AuditList, error) {
	q := url.Values{}
	if before > 0 {
		q.Set("before", strconv.FormatInt(before, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out AuditList
	if err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/audit", query: q, out: &out, policy: retryIdempotent}); err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return &out, nil
}
