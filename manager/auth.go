package manager

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/manager/store"
)

// BootstrapAdmin is the name the admin token acts under: its approvals,
// cancels and user changes are recorded as this user's.
const BootstrapAdmin = "admin"

// UserTokenPrefix starts every user token, which tells it from a
// delegate's token: eu_<token id>_<secret>.
const UserTokenPrefix = client.UserTokenPrefix

// tokenTouchEvery bounds how often a token's last use is written.
const tokenTouchEvery = time.Minute

// Bounds of the identity API.
const (
	maxUserListLimit  = 1000
	maxAuditListLimit = 1000
	maxTokenExpiry    = 10 * 365 * 24 * time.Hour
)

// principalKey carries a principal on a request's context: the web UI,
// calling the API in-process for a signed-in user, says who it calls for.
// No request from the network can carry it.
type principalKey struct{}

// WithUserPrincipal returns ctx carrying the principal of a user the
// caller has authenticated itself (the web UI's session): the API
// serves the in-process requests made with it as that user, with that
// role, whatever their bearer token. The name BootstrapAdmin with the
// admin role is the bootstrap admin.
func WithUserPrincipal(ctx context.Context, name string, role store.Role) context.Context {
	p := principal{user: name, role: role}
	if name == BootstrapAdmin && role == store.RoleAdmin {
		p = bootstrapAdmin
	}
	return context.WithValue(ctx, principalKey{}, p)
}

// roleNeeded is the least role a route of auth a needs; 0 for routes
// that users may not call.
func roleNeeded(a auth) store.Role {
	switch a {
	case authViewer, authDelegateOrViewer:
		return store.RoleViewer
	case authOperator:
		return store.RoleOperator
	case authAdmin, authDelegateOrAdmin:
		return store.RoleAdmin
	}
	return ""
}

// userPrincipal returns who a user token belongs to, or ok false when
// token is not a user token at all. A revoked or expired token, or one
// of a disabled user, is errand.CodeUnauthorized.
func (s *Server) userPrincipal(ctx context.Context, token string) (p principal, ok bool, err error) {
	rest, isUser := strings.CutPrefix(token, UserTokenPrefix)
	if !isUser {
		return principal{}, false, nil
	}
	bad := errand.Errorf(errand.CodeUnauthorized, "the token is not valid for this request")
	id, _, found := strings.Cut(rest, "_")
	if !found || id == "" || len(id) > maxIDLen {
		return principal{}, true, bad
	}
	t, err := s.store.TokenGet(ctx, id)
	if errors.Is(err, errand.ErrNotFound) {
		return principal{}, true, bad
	}
	if err != nil {
		return principal{}, true, fmt.Errorf("authenticate: %w", err)
	}
	if !equalHash(hashToken(token), t.Hash) {
		return principal{}, true, bad
	}
	now := s.now()
	switch {
	case t.RevokedAt != nil:
		return principal{}, true, errand.Errorf(errand.CodeUnauthorized, "the token %s was revoked", t.ID)
	case t.ExpiresAt != nil && !now.Before(*t.ExpiresAt):
		return principal{}, true, errand.Errorf(errand.CodeUnauthorized, "the token %s expired at %s", t.ID, t.ExpiresAt.UTC().Format(time.RFC3339))
	}
	u, err := s.store.UserGet(ctx, t.User)
	if err != nil {
		return principal{}, true, fmt.Errorf("authenticate: %w", err)
	}
	if u.DisabledAt != nil {
		return principal{}, true, errand.Errorf(errand.CodeUnauthorized, "the user %s is disabled", u.Name)
	}
	if t.LastUsedAt == nil || now.Sub(*t.LastUsedAt) >= tokenTouchEvery {
		if err := s.store.TokenTouch(ctx, store.TokenTouchParams{ID: t.ID, Now: now}); err != nil {
			s.log.WithError(err).WithField("token_id", t.ID).Debug("token last use not recorded")
		}
	}
	return principal{user: u.Name, role: u.Role, tokenID: t.ID}, true, nil
}

// checkRole refuses a principal whose role is below need.
func checkRole(p principal, need store.Role) error {
	if p.role.Rank() >= need.Rank() {
		return nil
	}
	if p.role == "" {
		return errand.Errorf(errand.CodeForbidden, "this needs a user token with the %s role", need)
	}
	return errand.Errorf(errand.CodeForbidden, "this needs the %s role; %s is %s", need, p.user, article(p.role))
}

func article(r store.Role) string {
	if r == store.RoleAdmin || r == store.RoleOperator {
		return "an " + string(r)
	}
	return "a " + string(r)
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

// newUserToken returns a new token id and its secret.
func newUserToken() (id, secret string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("new token: %w", err)
	}
	id = strings.ToLower(ulid.Make().String())
	return id, UserTokenPrefix + id + "_" + hex.EncodeToString(b), nil
}

// audit records what p did; a failure to record is logged, not the
// caller's: the action itself is done.
func (s *Server) audit(ctx context.Context, p principal, action, target, detail string) {
	actor := p.user
	if actor == "" {
		actor = BootstrapAdmin
	}
	if _, err := s.store.AuditAppend(context.WithoutCancel(ctx), store.AuditEntry{
		At: s.now(), Actor: actor, Action: action, Target: target, Detail: detail,
	}); err != nil {
		s.log.WithError(err).WithField("action", action).Error("audit entry not recorded")
	}
}

func apiUser(u *store.User) *client.User {
	return &client.User{Kind: client.KindUser, Name: u.Name, Role: string(u.Role), CreatedAt: u.CreatedAt, DisabledAt: u.DisabledAt}
}

func apiToken(t *store.Token) *client.Token {
	return &client.Token{Kind: client.KindToken, ID: t.ID, User: t.User, Name: t.Name, CreatedAt: t.CreatedAt,
		ExpiresAt: t.ExpiresAt, LastUsedAt: t.LastUsedAt, RevokedAt: t.RevokedAt}
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request, p principal) error {
	var req client.UserRequest
	if err := httphelper.DecodeJSON(r, &req, s.cfg.MaxBodyBytes); err != nil {
		return err
	}
	if req.Name == BootstrapAdmin {
		return errand.Errorf(errand.CodeInvalid, "name: %q is the bootstrap admin token's name", BootstrapAdmin)
	}
	u, err := s.store.UserCreate(r.Context(), store.UserCreateParams{Name: req.Name, Role: store.Role(req.Role), Now: s.now()})
	if err != nil {
		return err
	}
	s.audit(r.Context(), p, "user.create", u.Name, "role "+string(u.Role))
	httphelper.WriteJSON(w, apiUser(u), http.StatusCreated)
	return nil
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, _ principal) error {
	q := r.URL.Query()
	limit, err := queryLimit(q.Get("limit"), maxUserListLimit)
	if err != nil {
		return err
	}
	users, err := s.store.UserList(r.Context(), store.UserListParams{After: q.Get("after"), Limit: limit, Disabled: q.Get("disabled") == "true"})
	if err != nil {
		return err
	}
	out := &client.UserList{Kind: client.KindUserList, Users: []*client.User{}}
	for _, u := range users {
		out.Users = append(out.Users, apiUser(u))
	}
	httphelper.WriteJSON(w, out, http.StatusOK)
	return nil
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request, _ principal) error {
	u, err := s.store.UserGet(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	httphelper.WriteJSON(w, apiUser(u), http.StatusOK)
	return nil
}

// deleteUser disables a user: the name stays taken, so that the audit
// trail and approvals keep meaning who they name.
func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request, p principal) error {
	name := r.PathValue("id")
	if name == p.user {
		return errand.Errorf(errand.CodeConflict, "%s may not delete themself", name)
	}
	u, err := s.store.UserDisable(r.Context(), store.UserDisableParams{Name: name, Now: s.now()})
	if err != nil {
		return err
	}
	s.audit(r.Context(), p, "user.delete", u.Name, "disabled; tokens revoked")
	httphelper.WriteJSON(w, apiUser(u), http.StatusOK)
	return nil
}

// tokenOwner is the user a token request is about: the caller's own, or
// another's for an admin. The bootstrap admin has no tokens of its own.
func tokenOwner(p principal, user string) (string, error) {
	if user == "" {
		user = p.user
	}
	if p.admin && user == BootstrapAdmin {
		return "", errand.Errorf(errand.CodeInvalid, "user: required with the bootstrap admin token, which has no tokens of its own")
	}
	if user != p.user && p.role != store.RoleAdmin {
		return "", errand.Errorf(errand.CodeForbidden, "the tokens of another user need the admin role; %s is %s", p.user, article(p.role))
	}
	return user, nil
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, p principal) error {
	var req client.TokenRequest
	if err := httphelper.DecodeJSON(r, &req, s.cfg.MaxBodyBytes); err != nil {
		return err
	}
	user, err := tokenOwner(p, req.User)
	if err != nil {
		return err
	}
	now := s.now()
	var expires *time.Time
	if req.ExpiresIn != "" {
		d, err := time.ParseDuration(req.ExpiresIn)
		if err != nil || d <= 0 || d > maxTokenExpiry {
			return errand.Errorf(errand.CodeInvalid, "expires_in: %q must be a positive duration of at most %s (720h for 30 days)", req.ExpiresIn, maxTokenExpiry)
		}
		at := now.Add(d)
		expires = &at
	}
	id, secret, err := newUserToken()
	if err != nil {
		return err
	}
	t, err := s.store.TokenCreate(r.Context(), store.TokenCreateParams{
		Token: &store.Token{ID: id, User: user, Name: req.Name, Hash: hashToken(secret), ExpiresAt: expires}, Now: now})
	if err != nil {
		return err
	}
	s.audit(r.Context(), p, "token.create", t.ID, "user "+t.User+", name "+t.Name)
	out := apiToken(t)
	out.Secret = secret
	httphelper.WriteJSON(w, out, http.StatusCreated)
	return nil
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, p principal) error {
	q := r.URL.Query()
	user := q.Get("user")
	if !(p.role == store.RoleAdmin && user == "") {
		var err error
		if user, err = tokenOwner(p, user); err != nil {
			return err
		}
	}
	tokens, err := s.store.TokenList(r.Context(), store.TokenListParams{User: user, Revoked: q.Get("revoked") == "true"})
	if err != nil {
		return err
	}
	out := &client.TokenList{Kind: client.KindTokenList, Tokens: []*client.Token{}}
	for _, t := range tokens {
		out.Tokens = append(out.Tokens, apiToken(t))
	}
	httphelper.WriteJSON(w, out, http.StatusOK)
	return nil
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, p principal) error {
	id := r.PathValue("id")
	t, err := s.store.TokenGet(r.Context(), id)
	if err != nil {
		return err
	}
	if t.User != p.user && p.role != store.RoleAdmin {
		// Another user's token is not found, rather than forbidden: its
		// id says nothing to whom it does not belong.
		return errand.Errorf(errand.CodeNotFound, "token %s not found", id)
	}
	t, err = s.store.TokenRevoke(r.Context(), store.TokenRevokeParams{ID: id, Now: s.now()})
	if err != nil {
		return err
	}
	s.audit(r.Context(), p, "token.revoke", t.ID, "user "+t.User+", name "+t.Name)
	httphelper.WriteJSON(w, apiToken(t), http.StatusOK)
	return nil
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request, _ principal) error {
	q := r.URL.Query()
	limit, err := queryLimit(q.Get("limit"), maxAuditListLimit)
	if err != nil {
		return err
	}
	var before int64
	if v := q.Get("before"); v != "" {
		if before, err = strconv.ParseInt(v, 10, 64); err != nil || before < 1 {
			return errand.Errorf(errand.CodeInvalid, "before: must be an entry id")
		}
	}
	if limit == 0 {
		limit = 100
	}
	entries, err := s.store.AuditList(r.Context(), store.AuditListParams{Before: before, Limit: limit})
	if err != nil {
		return err
	}
	out := &client.AuditList{Kind: client.KindAuditList, Entries: []*client.AuditEntry{}}
	for _, e := range entries {
		out.Entries = append(out.Entries, &client.AuditEntry{ID: e.ID, At: e.At, Actor: e.Actor, Action: e.Action, Target: e.Target, Detail: e.Detail})
	}
	if len(entries) == limit {
		out.Before = entries[len(entries)-1].ID
	}
	httphelper.WriteJSON(w, out, http.StatusOK)
	return nil
}

// queryLimit parses a ?limit= of 1 to max; empty is 0 (the default).
func queryLimit(v string, max int) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		return 0, errand.Errorf(errand.CodeInvalid, "limit: must be an integer between 1 and %d", max)
	}
	return n, nil
}
