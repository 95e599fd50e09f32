package web

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/errandci/errand"
)

// Role is what a principal may do: the bootstrap admin and users with
// any role sign in the same way, with a token.
type Role string

// Roles.
const (
	RoleViewer   Role = "viewer"
	RoleOperator Role = "operator"
	RoleAdmin    Role = "admin"
)

// Principal is who a session belongs to.
type Principal struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
	// TokenID names the user token the session was started with, so
	// that Config.Check can end the session when it is revoked; empty
	// for the bootstrap admin.
	TokenID string `json:"token_id,omitempty"`
}

// rank orders the roles: each may do what the ones below it may.
var rank = map[Role]int{RoleViewer: 1, RoleOperator: 2, RoleAdmin: 3}

// May says whether p's role is at least role.
func (p Principal) May(role Role) bool { return rank[p.Role] > 0 && rank[p.Role] >= rank[role] }

// CanOperate says whether p may submit, cancel and approve.
func (p Principal) CanOperate() bool { return p.May(RoleOperator) }

// CanAdminister says whether p may drain delegates and manage users,
// tokens and the audit trail.
func (p Principal) CanAdminister() bool { return p.May(RoleAdmin) }

// Cookie and form field names.
const (
	sessionCookie = "errand_session"
	loginCookie   = "errand_login"
	csrfField     = "csrf"
)

// session is a signed-in browser: the principal, until when, and the
// random id its CSRF token is derived from. It lives in its cookie,
// signed with the session key, so that replicas sharing the key share
// sessions and the manager keeps no session state.
type session struct {
	ID        string    `json:"sid"`
	Principal Principal `json:"p"`
	Expires   time.Time `json:"exp"`
	// CSRF is the token every form of the session carries (not stored).
	CSRF string `json:"-"`
}

func (h *Handler) sign(data []byte, purpose string) []byte {
	m := hmac.New(sha256.New, h.cfg.SessionKey)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write(data)
	return m.Sum(nil)
}

var b64 = base64.RawURLEncoding

// session returns the request's valid session.
func (h *Handler) session(r *http.Request) (*session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, false
	}
	payload, mac, ok := strings.Cut(c.Value, ".")
	if !ok {
		return nil, false
	}
	data, err1 := b64.DecodeString(payload)
	got, err2 := b64.DecodeString(mac)
	if err1 != nil || err2 != nil || !hmac.Equal(got, h.sign(data, "session")) {
		return nil, false
	}
	var s session
	if json.Unmarshal(data, &s) != nil || s.ID == "" || !h.cfg.Now().Before(s.Expires) {
		return nil, false
	}
	if h.cfg.Check != nil {
		if err := h.cfg.Check(r.Context(), s.Principal); err != nil {
			h.cfg.Log.WithError(err).WithField("user", s.Principal.Name).Debug("session ended")
			return nil, false
		}
	}
	s.CSRF = b64.EncodeToString(h.sign([]byte(s.ID), "csrf"))
	return &s, true
}

func (h *Handler) validCSRF(s *session, token string) bool {
	return token != "" && hmac.Equal([]byte(token), []byte(s.CSRF))
}

func randomID() string {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported systems
	}
	return b64.EncodeToString(b)
}

// signInPage shows the sign-in form. The form's CSRF token is a random
// value also set as a cookie (double submit): no session exists yet.
func (h *Handler) signInPage(w http.ResponseWriter, r *http.Request, problem string, status int) {
	token := randomID()
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: token, Path: Prefix + "login", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	next := r.URL.Query().Get("next")
	if r.Method == http.MethodPost {
		next = r.PostFormValue("next")
	}
	h.render(w, r, nil, "signin", status, "Sign in", &signInData{CSRF: token, Problem: problem, Next: safeNext(next)})
}

type signInData struct {
	CSRF    string
	Problem string
	Next    string
}

// safeNext keeps a page to return to only when it is one of the UI's.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || u.IsAbs() || u.Host != "" || strings.HasPrefix(next, "//") || strings.Contains(next, "\\") {
		return "/"
	}
	if clean := path.Clean(u.Path); clean != u.Path && clean+"/" != u.Path || !strings.HasPrefix(u.Path, Prefix) {
		return "/"
	}
	return u.RequestURI()
}

// signIn turns a good token into a session cookie.
func (h *Handler) signIn(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	c, err := r.Cookie(loginCookie)
	if err != nil || r.PostFormValue(csrfField) == "" || !hmac.Equal([]byte(c.Value), []byte(r.PostFormValue(csrfField))) {
		h.signInPage(w, r, "The sign-in form had expired. Please try again.", http.StatusForbidden)
		return nil
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	if token == "" {
		h.signInPage(w, r, "Enter a token.", http.StatusUnauthorized)
		return nil
	}
	p, err := h.cfg.SignIn(r.Context(), token)
	if err != nil {
		if errand.ErrorCode(err) != errand.CodeUnauthorized {
			return fmt.Errorf("sign in: %w", err)
		}
		reason := "it is not valid"
		var e *errand.Error
		if errors.As(err, &e) && e.Reason != "" {
			reason = e.Reason
		}
		h.signInPage(w, r, "That token is not valid ("+reason+"): no session was started. Check the token and try again.", http.StatusUnauthorized)
		return nil
	}
	s := session{ID: randomID(), Principal: p, Expires: h.cfg.Now().Add(h.cfg.SessionTTL)}
	data, err := json.Marshal(&s)
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: b64.EncodeToString(data) + "." + b64.EncodeToString(h.sign(data, "session")),
		Path: "/", HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode, Expires: s.Expires})
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: Prefix + "login", MaxAge: -1})
	return redirect(w, r, safeNext(r.PostFormValue("next")))
}

func (h *Handler) signOut(w http.ResponseWriter, r *http.Request, _ *session) error {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	return redirect(w, r, "/")
}
