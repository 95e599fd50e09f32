package manager

import (
	"context"
	"net/http"
	"strconv"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/users"
)

// BootstrapAdmin is the name the admin token acts under: its approvals,
// cancels and user changes are recorded as this user's.
const BootstrapAdmin = users.BootstrapAdmin

// UserTokenPrefix starts every user token, which tells it from a
// delegate's token: eu_<token id>_<secret>.
const UserTokenPrefix = client.UserTokenPrefix

// Bounds of the identity API.
const (
	maxUserListLimit  = 1000
	maxAuditListLimit = 1000
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

// roleNeeded is the least role a route of auth a needs; "" for routes
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

// userPrincipal returns who a user token belongs to, or isUser false
// when token is not a user token at all (users.Service.Authenticate).
func (s *Server) userPrincipal(ctx context.Context, token string) (p principal, isUser bool, err error) {
	a, isUser, err := s.users.Authenticate(ctx, token)
	if err != nil || !isUser {
		return principal{}, isUser, err
	}
	return principal{user: a.Name, role: a.Role}, true, nil
}

// actor is the principal as the identity service knows it.
func (p principal) actor() users.Actor {
	return users.Actor{Name: p.user, Role: p.role, Bootstrap: p.admin}
}

// checkRole refuses a principal whose role is below need.
func checkRole(p principal, need store.Role) error {
	return users.CheckRole(p.actor(), need)
}

// audit records what p did.
func (s *Server) audit(ctx context.Context, p principal, action, target, detail string) {
	s.users.Audit(ctx, p.actor(), action, target, detail)
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
	u, err := s.users.CreateUser(r.Context(), p.actor(), req.Name, store.Role(req.Role))
	if err != nil {
		return err
	}
	httphelper.WriteJSON(w, apiUser(u), http.StatusCreated)
	return nil
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, _ principal) error {
	q := r.URL.Query()
	limit, err := queryLimit(q.Get("limit"), maxUserListLimit)
	if err != nil {
		return err
	}
	list, err := s.users.ListUsers(r.Context(), store.UserListParams{After: q.Get("after"), Limit: limit, Disabled: q.Get("disabled") == "true"})
	if err != nil {
		return err
	}
	out := &client.UserList{Kind: client.KindUserList, Users: []*client.User{}}
	for _, u := range list {
		out.Users = append(out.Users, apiUser(u))
	}
	httphelper.WriteJSON(w, out, http.StatusOK)
	return nil
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request, _ principal) error {
	u, err := s.users.GetUser(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	httphelper.WriteJSON(w, apiUser(u), http.StatusOK)
	return nil
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request, p principal) error {
	u, err := s.users.DeleteUser(r.Context(), p.actor(), r.PathValue("id"))
	if err != nil {
		return err
	}
	httphelper.WriteJSON(w, apiUser(u), http.StatusOK)
	return nil
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, p principal) error {
	var req client.TokenRequest
	if err := httphelper.DecodeJSON(r, &req, s.cfg.MaxBodyBytes); err != nil {
		return err
	}
	t, secret, err := s.users.CreateToken(r.Context(), p.actor(), &req)
	if err != nil {
		return err
	}
	out := apiToken(t)
	out.Secret = secret
	httphelper.WriteJSON(w, out, http.StatusCreated)
	return nil
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, p principal) error {
	q := r.URL.Query()
	tokens, err := s.users.ListTokens(r.Context(), p.actor(), q.Get("user"), q.Get("revoked") == "true")
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
	t, err := s.users.RevokeToken(r.Context(), p.actor(), r.PathValue("id"))
	if err != nil {
		return err
	}
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
	entries, err := s.users.AuditList(r.Context(), store.AuditListParams{Before: before, Limit: limit})
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
