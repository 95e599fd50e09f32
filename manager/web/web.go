// Package web is the manager's web UI: server-rendered pages over the
// manager's own API, signed in with a token turned into a session
// cookie, with a strict Content-Security-Policy and a CSRF token on every
// form. The pages work without scripts; small scripts served from the
// manager (never a CDN) add live updates and the log viewer.
package web

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Prefix is the path under which every page but the root lives.
const Prefix = "/ui/"

// ContentSecurityPolicy is sent with every page: scripts, styles and
// connections only from the manager itself, no inline script or style,
// no framing.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Config is what the UI needs from the manager.
type Config struct {
	// API is the manager's API handler; the UI calls it in-process on
	// behalf of the signed-in principal.
	API http.Handler
	// SessionKey signs session cookies and CSRF tokens; managers that
	// share it (replicas) accept each other's sessions.
	SessionKey []byte
	// SignIn returns the principal a token belongs to. An error with
	// code unauthorized (a wrong, revoked or expired token, a disabled
	// user) is shown to the browser as is; any other is logged.
	SignIn func(ctx context.Context, token string) (Principal, error)
	// APIToken returns the bearer token the UI calls the API with for p.
	APIToken func(p Principal) string
	// APIContext, when set, returns the context of an in-process API
	// request made for p, so that the API serves it as p (its role
	// checks apply and what it does is recorded as p).
	APIContext func(ctx context.Context, p Principal) context.Context
	// Check, when set, is asked on every request of a session whether
	// its principal may still act (its token not revoked or expired,
	// its user not disabled); an error ends the session.
	Check func(ctx context.Context, p Principal) error
	// SessionTTL is how long a session lasts (default 12h).
	SessionTTL time.Duration
	Log        *logrus.Logger
	Now        func() time.Time
}

// Handler serves the UI: GET / and everything under Prefix.
type Handler struct {
	cfg   Config
	mux   *http.ServeMux
	pages map[string]*template.Template
	// routes lists "METHOD pattern" of every page, for tests.
	routes []string
}

// New returns the UI's handler.
func New(cfg Config) (*Handler, error) {
	if cfg.API == nil || len(cfg.SessionKey) < 16 || cfg.SignIn == nil || cfg.APIToken == nil {
		return nil, errors.New("web: an API handler, a session key of 16 bytes or more, SignIn and APIToken are required")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux(), pages: pages}
	h.register()
	return h, nil
}

// Routes returns "METHOD pattern" of every page and form the UI serves.
func (h *Handler) Routes() []string { return append([]string(nil), h.routes...) }

func (h *Handler) register() {
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	files := http.StripPrefix(Prefix+"static/", http.FileServer(http.FS(static)))
	h.mux.Handle("GET "+Prefix+"static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	}))
	h.routes = append(h.routes, "GET "+Prefix+"static/")

	h.page("GET /{$}", h.runsPage)
	h.public("POST "+Prefix+"login", h.signIn)
	h.form("POST "+Prefix+"logout", RoleViewer, h.signOut)
	h.page("GET "+Prefix+"runs/new", h.newRunPage)
	h.form("POST "+Prefix+"runs", RoleOperator, h.submitRun)
	h.page("GET "+Prefix+"runs/{id}", h.runPage)
	h.form("POST "+Prefix+"runs/{id}/cancel", RoleOperator, h.cancelRun)
	h.form("POST "+Prefix+"runs/{id}/stages/{name}/approve", RoleOperator, h.approveStage)
	h.form("POST "+Prefix+"runs/{id}/restart", RoleOperator, h.restartRun)
	h.page("GET "+Prefix+"pipelines", h.pipelinesPage)
	h.page("GET "+Prefix+"pipelines/{name}", h.pipelinePage)
	h.page("GET "+Prefix+"tasks", h.tasksPage)
	h.page("GET "+Prefix+"tasks/{id}", h.taskPage)
	h.form("POST "+Prefix+"tasks/{id}/cancel", RoleOperator, h.cancelTask)
	h.page("GET "+Prefix+"tasks/{id}/logs", h.taskLogs)
	h.page("GET "+Prefix+"tasks/{id}/raw", h.rawLog)
	h.page("GET "+Prefix+"delegates", h.delegatesPage)
	h.form("POST "+Prefix+"delegates/{id}/drain", RoleAdmin, h.drainDelegate)
	h.adminPage("GET "+Prefix+"users", h.usersPage)
	h.form("POST "+Prefix+"users", RoleAdmin, h.createUser)
	h.adminPage("GET "+Prefix+"users/{name}", h.userPage)
	h.form("POST "+Prefix+"users/{name}/tokens", RoleAdmin, h.createToken)
	h.form("POST "+Prefix+"tokens/{id}/revoke", RoleAdmin, h.revokeToken)
	h.adminPage("GET "+Prefix+"audit", h.auditPage)
	h.public("GET "+Prefix, h.notFound)
}

// ServeHTTP serves a page with the UI's security headers.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", ContentSecurityPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "same-origin")
	h.mux.ServeHTTP(w, r)
}

// pageFunc serves one page for a signed-in session.
type pageFunc func(w http.ResponseWriter, r *http.Request, s *session) error

func (h *Handler) public(pattern string, fn func(w http.ResponseWriter, r *http.Request) error) {
	h.routes = append(h.routes, pattern)
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			h.fail(w, r, nil, err)
		}
	})
}

// page registers a GET page: without a session the sign-in page is
// shown in its place (the root) or the browser is sent there.
func (h *Handler) page(pattern string, fn pageFunc) {
	h.routes = append(h.routes, pattern)
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		s, ok := h.session(r)
		if !ok {
			if r.URL.Path == "/" {
				h.signInPage(w, r, "", http.StatusOK)
				return
			}
			if strings.HasSuffix(r.URL.Path, "/logs") || strings.HasSuffix(r.URL.Path, "/raw") {
				h.fail(w, r, nil, errand.Errorf(errand.CodeUnauthorized, "sign in first"))
				return
			}
			http.Redirect(w, r, "/?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if err := fn(w, r, s); err != nil {
			h.fail(w, r, s, err)
		}
	})
}

// adminPage registers a GET page only admins may see: others get 403
// naming the role it needs.
func (h *Handler) adminPage(pattern string, fn pageFunc) {
	h.page(pattern, func(w http.ResponseWriter, r *http.Request, s *session) error {
		if !s.Principal.May(RoleAdmin) {
			return errand.Errorf(errand.CodeForbidden, "this needs the %s role; %s has the %s role", RoleAdmin, s.Principal.Name, s.Principal.Role)
		}
		return fn(w, r, s)
	})
}

// form registers a POST form: it needs a session whose principal has at
// least role and the session's CSRF token, and answers with a redirect
// (303) to the page to show next.
func (h *Handler) form(pattern string, role Role, fn pageFunc) {
	h.routes = append(h.routes, pattern)
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 4<<20)
		s, ok := h.session(r)
		if !ok {
			h.fail(w, r, nil, errand.Errorf(errand.CodeForbidden, "you are not signed in, or your session has ended: sign in again"))
			return
		}
		if !h.validCSRF(s, r.PostFormValue(csrfField)) {
			h.fail(w, r, s, errand.Errorf(errand.CodeForbidden, "the form has no valid CSRF token: reload the page and send it again"))
			return
		}
		if !s.Principal.May(role) {
			h.fail(w, r, s, errand.Errorf(errand.CodeForbidden, "this needs the %s role; %s has the %s role", role, s.Principal.Name, s.Principal.Role))
			return
		}
		if err := fn(w, r, s); err != nil {
			h.fail(w, r, s, err)
		}
	})
}

// api returns a client of the manager's API acting for s.
func (h *Handler) api(s *session) *client.HTTP {
	api := h.cfg.API
	if h.cfg.APIContext != nil {
		p := s.Principal
		api = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.cfg.API.ServeHTTP(w, r.WithContext(h.cfg.APIContext(r.Context(), p)))
		})
	}
	return client.New("http://manager", h.cfg.APIToken(s.Principal), client.WithHandler(api), client.WithRetry(0))
}

// errorPage is the data of the error page.
type errorPage struct {
	Status  int
	Title   string
	Message string
}

// fail renders err as an error page with the status its code maps to;
// internal errors are logged and shown as their operation id only.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, s *session, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		err = errand.Errorf(errand.CodeTooLarge, "the form is larger than %d bytes", mbe.Limit)
	}
	code := errand.ErrorCode(err)
	status := httphelper.Status(code)
	msg := err.Error()
	var ee *errand.Error
	if errors.As(err, &ee) {
		msg = ee.Reason
	}
	title := http.StatusText(status)
	if code == errand.CodeInternal {
		h.cfg.Log.WithFields(logrus.Fields{"method": r.Method, "path": r.URL.Path}).WithError(err).Error("web page failed")
		msg = "The manager could not answer; its log says why."
	}
	if status == http.StatusNotFound {
		title = "Not found"
	}
	h.render(w, r, s, "error", status, title, &errorPage{Status: status, Title: title, Message: msg})
}

func (h *Handler) notFound(w http.ResponseWriter, r *http.Request) error {
	s, _ := h.session(r)
	h.render(w, r, s, "error", http.StatusNotFound, "Not found",
		&errorPage{Status: http.StatusNotFound, Title: "Not found", Message: "There is no page at " + r.URL.Path + "."})
	return nil
}

// redirect answers a form with 303 to path.
func redirect(w http.ResponseWriter, r *http.Request, path string) error {
	http.Redirect(w, r, path, http.StatusSeeOther)
	return nil
}

// notFoundAs turns the API's not_found into a page that names what is
// missing.
func notFoundAs(err error, what, id string) error {
	if errand.ErrorCode(err) == errand.CodeNotFound {
		return errand.Errorf(errand.CodeNotFound, "There is no %s %q.", what, id)
	}
	return fmt.Errorf("%s %s: %w", what, id, err)
}
