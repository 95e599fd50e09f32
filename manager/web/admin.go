package web

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

// usersData is the data of the users page.
type usersData struct {
	CSRF  string
	Users []*client.User
	Roles []Role
}

func (h *Handler) usersPage(w http.ResponseWriter, r *http.Request, s *session) error {
	list, err := h.api(s).ListUsers(r.Context(), true)
	if err != nil {
		return fmt.Errorf("list users: %w", err)
	}
	h.render(w, r, s, "users", http.StatusOK, "Users", &usersData{CSRF: s.CSRF, Users: list.Users, Roles: []Role{RoleViewer, RoleOperator, RoleAdmin}})
	return nil
}

func (h *Handler) createUser(w http.ResponseWriter, r *http.Request, s *session) error {
	name := strings.TrimSpace(r.PostFormValue("name"))
	u, err := h.api(s).CreateUser(r.Context(), &client.UserRequest{Name: name, Role: r.PostFormValue("role")})
	if err != nil {
		return fmt.Errorf("create user %s: %w", name, err)
	}
	return redirect(w, r, Prefix+"users/"+url.PathEscape(u.Name))
}

// userData is the data of a user's page: the user, their tokens and,
// right after it was made, a new token's secret (shown once).
type userData struct {
	CSRF   string
	User   *client.User
	Tokens []*client.Token
	New    *client.Token
}

func (h *Handler) userPage(w http.ResponseWriter, r *http.Request, s *session) error {
	return h.showUser(w, r, s, r.PathValue("name"), nil)
}

func (h *Handler) showUser(w http.ResponseWriter, r *http.Request, s *session, name string, created *client.Token) error {
	users, err := h.api(s).ListUsers(r.Context(), true)
	if err != nil {
		return fmt.Errorf("list users: %w", err)
	}
	var u *client.User
	for _, x := range users.Users {
		if x.Name == name {
			u = x
		}
	}
	if u == nil {
		return errand.Errorf(errand.CodeNotFound, "There is no user %q.", name)
	}
	tokens, err := h.api(s).ListTokens(r.Context(), name, true)
	if err != nil {
		return fmt.Errorf("list tokens of %s: %w", name, err)
	}
	h.render(w, r, s, "user", http.StatusOK, "User "+u.Name, &userData{CSRF: s.CSRF, User: u, Tokens: tokens.Tokens, New: created})
	return nil
}

// createToken makes a token and answers with the user's page showing
// its secret: the only time it is shown (the page is not cached).
func (h *Handler) createToken(w http.ResponseWriter, r *http.Request, s *session) error {
	name := r.PathValue("name")
	t, err := h.api(s).CreateToken(r.Context(), &client.TokenRequest{Name: strings.TrimSpace(r.PostFormValue("name")), User: name,
		ExpiresIn: strings.TrimSpace(r.PostFormValue("expires_in"))})
	if err != nil {
		return notFoundAs(err, "user", name)
	}
	return h.showUser(w, r, s, name, t)
}

func (h *Handler) revokeToken(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	t, err := h.api(s).RevokeToken(r.Context(), id)
	if err != nil {
		return notFoundAs(err, "token", id)
	}
	return redirect(w, r, Prefix+"users/"+url.PathEscape(t.User))
}

// auditData is a page of the audit trail.
type auditData struct {
	Entries []*client.AuditEntry
	Before  int64
}

func (h *Handler) auditPage(w http.ResponseWriter, r *http.Request, s *session) error {
	var before int64
	if v := r.URL.Query().Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return errand.Errorf(errand.CodeInvalid, "before=%q is not an audit entry id", v)
		}
		before = n
	}
	list, err := h.api(s).ListAudit(r.Context(), before, 100)
	if err != nil {
		return fmt.Errorf("list audit: %w", err)
	}
	h.render(w, r, s, "audit", http.StatusOK, "Audit trail", &auditData{Entries: list.Entries, Before: list.Before})
	return nil
}
