// Package users is the manager's identity service: users with roles,
// their API tokens and the audit trail of what they did. It decides who
// a token belongs to and what a caller may do to users and tokens; the
// HTTP handlers only decode, call it and encode.
package users

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/store"
)

// BootstrapAdmin is the name the admin token acts under.
const BootstrapAdmin = "admin"

// touchEvery bounds how often a token's last use is written.
const touchEvery = time.Minute

// MaxTokenExpiry bounds how far in the future a token may expire.
const MaxTokenExpiry = 10 * 365 * 24 * time.Hour

// maxTokenIDLen bounds the id part of a presented token.
const maxTokenIDLen = 128

// Actor is who makes a request.
type Actor struct {
	Name string
	Role store.Role
	// Bootstrap is set for the admin token.
	Bootstrap bool
}

// Bootstrap is the actor of the admin token.
var Bootstrap = Actor{Name: BootstrapAdmin, Role: store.RoleAdmin, Bootstrap: true}

// Config configures the service.
type Config struct {
	Log logrus.FieldLogger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Service applies the identity rules over a store.
type Service struct {
	log   logrus.FieldLogger
	now   func() time.Time
	store store.UserStore
}

// New returns the service over st.
func New(cfg Config, st store.UserStore) (*Service, error) {
	if st == nil {
		return nil, errors.New("users: a store is required")
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{log: cfg.Log, now: cfg.Now, store: st}, nil
}

// Authenticate returns who a user token belongs to; ok is false when
// token is not a user token at all. A token that is unknown, revoked or
// expired, or whose user is disabled, is errand.CodeUnauthorized.
func (s *Service) Authenticate(ctx context.Context, token string) (a Actor, ok bool, err error) {
	rest, isUser := strings.CutPrefix(token, client.UserTokenPrefix)
	if !isUser {
		return Actor{}, false, nil
	}
	bad := errand.Errorf(errand.CodeUnauthorized, "the token is not valid for this request")
	id, _, found := strings.Cut(rest, "_")
	if !found || id == "" || len(id) > maxTokenIDLen {
		return Actor{}, true, bad
	}
	t, err := s.store.TokenGet(ctx, id)
	if errors.Is(err, errand.ErrNotFound) {
		return Actor{}, true, bad
	}
	if err != nil {
		return Actor{}, true, fmt.Errorf("authenticate: %w", err)
	}
	if !equalHash(hashToken(token), t.Hash) {
		return Actor{}, true, bad
	}
	u, err := s.live(ctx, t)
	if err != nil {
		return Actor{}, true, err
	}
	now := s.now()
	if t.LastUsedAt == nil || now.Sub(*t.LastUsedAt) >= touchEvery {
		if err := s.store.TokenTouch(ctx, store.TokenTouchParams{ID: t.ID, Now: now}); err != nil {
			s.log.WithError(err).WithField("token_id", t.ID).Debug("token last use not recorded")
		}
	}
	return Actor{Name: u.Name, Role: u.Role}, true, nil
}

// live returns the user of a token that is neither revoked nor expired
// and whose user is not disabled; otherwise errand.CodeUnauthorized
// saying which.
func (s *Service) live(ctx context.Context, t *store.Token) (*store.User, error) {
	switch {
	case t.RevokedAt != nil:
		return nil, errand.Errorf(errand.CodeUnauthorized, "the token %s was revoked", t.ID)
	case t.ExpiresAt != nil && !s.now().Before(*t.ExpiresAt):
		return nil, errand.Errorf(errand.CodeUnauthorized, "the token %s expired at %s", t.ID, t.ExpiresAt.UTC().Format(time.RFC3339))
	}
	u, err := s.store.UserGet(ctx, t.User)
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	if u.DisabledAt != nil {
		return nil, errand.Errorf(errand.CodeUnauthorized, "the user %s is disabled", u.Name)
	}
	return u, nil
}

// SessionValid says whether a session signed in with the token tokenID
// of user may go on: the token must still be the user's, live, and the
// user enabled, by the same rules as Authenticate.
func (s *Service) SessionValid(ctx context.Context, user, tokenID string) error {
	t, err := s.store.TokenGet(ctx, tokenID)
	if errors.Is(err, errand.ErrNotFound) || err == nil && t.User != user {
		return errand.Errorf(errand.CodeUnauthorized, "the token %s is not %s's", tokenID, user)
	}
	if err != nil {
		return fmt.Errorf("session of %s: %w", user, err)
	}
	_, err = s.live(ctx, t)
	return err
}

// CheckRole refuses an actor whose role is below need, naming it.
func CheckRole(a Actor, need store.Role) error {
	if a.Role.Rank() >= need.Rank() {
		return nil
	}
	if a.Role.Rank() == 0 {
		return errand.Errorf(errand.CodeForbidden, "this needs the %s role", need)
	}
	return errand.Errorf(errand.CodeForbidden, "this needs the %s role; %s is %s", need, a.Name, article(a.Role))
}

func article(r store.Role) string {
	if r == store.RoleAdmin || r == store.RoleOperator {
		return "an " + string(r)
	}
	return "a " + string(r)
}

// Audit records what a did; a failure to record is logged, not returned:
// the action itself is done.
func (s *Service) Audit(ctx context.Context, a Actor, action, target, detail string) {
	if _, err := s.store.AuditAppend(context.WithoutCancel(ctx), store.AuditEntry{
		At: s.now(), Actor: a.Name, Action: action, Target: target, Detail: detail,
	}); err != nil {
		s.log.WithError(err).WithField("action", action).Error("audit entry not recorded")
	}
}

// CreateUser creates a user; the bootstrap admin's name is refused.
func (s *Service) CreateUser(ctx context.Context, a Actor, name string, role store.Role) (*store.User, error) {
	if name == BootstrapAdmin {
		return nil, errand.Errorf(errand.CodeInvalid, "name: %q is the bootstrap admin token's name", BootstrapAdmin)
	}
	u, err := s.store.UserCreate(ctx, store.UserCreateParams{Name: name, Role: role, Now: s.now()})
	if err != nil {
		return nil, err
	}
	s.Audit(ctx, a, "user.create", u.Name, "role "+string(u.Role))
	return u, nil
}

// ListUsers lists users.
func (s *Service) ListUsers(ctx context.Context, p store.UserListParams) ([]*store.User, error) {
	return s.store.UserList(ctx, p)
}

// GetUser returns one user.
func (s *Service) GetUser(ctx context.Context, name string) (*store.User, error) {
	return s.store.UserGet(ctx, name)
}

// DeleteUser disables a user and revokes their tokens; the name stays
// taken, so that the audit trail and approvals keep meaning who they
// name. Deleting oneself is refused.
func (s *Service) DeleteUser(ctx context.Context, a Actor, name string) (*store.User, error) {
	if name == a.Name {
		return nil, errand.Errorf(errand.CodeConflict, "%s may not delete themself", name)
	}
	u, err := s.store.UserDisable(ctx, store.UserDisableParams{Name: name, Now: s.now()})
	if err != nil {
		return nil, err
	}
	s.Audit(ctx, a, "user.delete", u.Name, "disabled; tokens revoked")
	return u, nil
}

// owner is the user a token request is about: the actor's own, or
// another's for an admin. The bootstrap admin has no tokens of its own.
func owner(a Actor, user string) (string, error) {
	if user == "" {
		user = a.Name
	}
	if a.Bootstrap && user == BootstrapAdmin {
		return "", errand.Errorf(errand.CodeInvalid, "user: required with the bootstrap admin token, which has no tokens of its own")
	}
	if user != a.Name && a.Role != store.RoleAdmin {
		return "", errand.Errorf(errand.CodeForbidden, "the tokens of another user need the admin role; %s is %s", a.Name, article(a.Role))
	}
	return user, nil
}

// CreateToken creates a token for r.User (the actor when empty) and
// returns it with its secret, which is not kept.
func (s *Service) CreateToken(ctx context.Context, a Actor, r *client.TokenRequest) (*store.Token, string, error) {
	user, err := owner(a, r.User)
	if err != nil {
		return nil, "", err
	}
	now := s.now()
	var expires *time.Time
	if r.ExpiresIn != "" {
		d, err := time.ParseDuration(r.ExpiresIn)
		if err != nil || d <= 0 || d > MaxTokenExpiry {
			return nil, "", errand.Errorf(errand.CodeInvalid, "expires_in: %q must be a positive duration of at most %s (720h for 30 days)", r.ExpiresIn, MaxTokenExpiry)
		}
		at := now.Add(d)
		expires = &at
	}
	id, secret, err := newToken()
	if err != nil {
		return nil, "", err
	}
	t, err := s.store.TokenCreate(ctx, store.TokenCreateParams{
		Token: &store.Token{ID: id, User: user, Name: r.Name, Hash: hashToken(secret), ExpiresAt: expires}, Now: now})
	if err != nil {
		return nil, "", err
	}
	s.Audit(ctx, a, "token.create", t.ID, "user "+t.User+", name "+t.Name)
	return t, secret, nil
}

// ListTokens lists the tokens of user: the actor's own when empty, or
// everyone's for an admin.
func (s *Service) ListTokens(ctx context.Context, a Actor, user string, revoked bool) ([]*store.Token, error) {
	if !(a.Role == store.RoleAdmin && user == "") {
		var err error
		if user, err = owner(a, user); err != nil {
			return nil, err
		}
	}
	return s.store.TokenList(ctx, store.TokenListParams{User: user, Revoked: revoked})
}

// RevokeToken revokes a token of the actor's, or any for an admin.
// Another user's token is not found rather than forbidden: its id says
// nothing to whom it does not belong.
func (s *Service) RevokeToken(ctx context.Context, a Actor, id string) (*store.Token, error) {
	t, err := s.store.TokenGet(ctx, id)
	if err != nil {
		return nil, err
	}
	if t.User != a.Name && a.Role != store.RoleAdmin {
		return nil, errand.Errorf(errand.CodeNotFound, "token %s not found", id)
	}
	t, err = s.store.TokenRevoke(ctx, store.TokenRevokeParams{ID: id, Now: s.now()})
	if err != nil {
		return nil, err
	}
	s.Audit(ctx, a, "token.revoke", t.ID, "user "+t.User+", name "+t.Name)
	return t, nil
}

// AuditList returns a page of the audit trail, newest first.
func (s *Service) AuditList(ctx context.Context, p store.AuditListParams) ([]*store.AuditEntry, error) {
	return s.store.AuditList(ctx, p)
}

// hashToken is what the store keeps of a token: its hex SHA-256.
func hashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// equalHash compares two hex hashes in constant time.
func equalHash(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// newToken returns a new token id and the token: eu_<id>_<secret>.
func newToken() (id, token string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("new token: %w", err)
	}
	id = strings.ToLower(ulid.Make().String())
	return id, client.UserTokenPrefix + id + "_" + hex.EncodeToString(b), nil
}
