package manager

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/web"
)

// auth says which bearer token a route takes.
type auth int

const (
	authNone             auth = iota // no token
	authAdmin                        // the admin token, or a user with the admin role
	authRegistration                 // the registration token
	authDelegate                     // a delegate's own token
	authDelegateOrAdmin              // a delegate, or an admin
	authViewer                       // any user (viewer, operator, admin)
	authOperator                     // a user with the operator or admin role
	authDelegateOrViewer             // a delegate, or any user
	authSignature                    // no token: the handler checks the body's signature (webhook deliveries)
)

// principal is who a request's token belongs to.
type principal struct {
	// admin is set for the bootstrap admin token.
	admin      bool
	delegateID string
	// user and role name the user of a user token; the bootstrap admin
	// token is BootstrapAdmin with the admin role.
	user    string
	role    store.Role
	tokenID string
}

// bootstrapAdmin is the principal of the admin token.
var bootstrapAdmin = principal{admin: true, user: BootstrapAdmin, role: store.RoleAdmin}

// apiFunc is a route's handler. A returned error is written as a
// structured error response.
type apiFunc func(w http.ResponseWriter, r *http.Request, p principal) error

type ctxKey struct{}

// operationID returns the id of the request being served.
func operationID(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}

func (s *Server) registerRoutes() {
	h := s.handle
	h("POST", "/api/v1/delegates", authRegistration, s.registerDelegate)
	h("POST", "/api/v1/delegates/{id}/heartbeat", authDelegate, s.heartbeat)
	h("POST", "/api/v1/delegates/{id}/acquire", authDelegate, s.acquire)
	h("POST", "/api/v1/delegates/{id}/reports", authDelegate, s.sendReports)
	h("DELETE", "/api/v1/delegates/{id}", authDelegateOrAdmin, s.deregisterDelegate)
	h("GET", "/api/v1/delegates", authDelegateOrViewer, s.listDelegates)
	h("GET", "/api/v1/delegates/{id}", authViewer, s.getDelegate)
	h("POST", "/api/v1/delegates/{id}/drain", authAdmin, s.drainDelegate)

	h("POST", "/api/v1/tasks", authOperator, s.createTasks)
	h("GET", "/api/v1/tasks", authViewer, s.listTasks)
	h("GET", "/api/v1/tasks/{id}", authViewer, s.getTask)
	h("POST", "/api/v1/tasks/{id}/cancel", authOperator, s.cancelTask)
	h("POST", "/api/v1/tasks/{id}/status", authDelegate, s.reportStatus)
	h("POST", "/api/v1/tasks/{id}/logs", authDelegate, s.appendLogs)
	h("GET", "/api/v1/tasks/{id}/logs", authViewer, s.readLogs)

	h("POST", "/api/v1/runs", authOperator, s.createRun)
	h("GET", "/api/v1/runs", authViewer, s.listRuns)
	h("GET", "/api/v1/runs/{id}", authViewer, s.getRun)
	h("POST", "/api/v1/runs/{id}/cancel", authOperator, s.cancelRun)
	h("POST", "/api/v1/runs/{id}/stages/{name}/approve", authOperator, s.approveStage)
	s.registerPipelineRoutes()

	h("POST", "/api/v1/users", authAdmin, s.createUser)
	h("GET", "/api/v1/users", authAdmin, s.listUsers)
	h("GET", "/api/v1/users/{id}", authAdmin, s.getUser)
	h("DELETE", "/api/v1/users/{id}", authAdmin, s.deleteUser)
	h("POST", "/api/v1/tokens", authViewer, s.createToken)
	h("GET", "/api/v1/tokens", authViewer, s.listTokens)
	h("DELETE", "/api/v1/tokens/{id}", authViewer, s.revokeToken)
	h("GET", "/api/v1/audit", authAdmin, s.listAudit)
	s.registerArtifactRoutes()

	s.registerWebhookRoutes()

	h("GET", "/metrics", authAdmin, s.serveMetrics)
	h("GET", "/healthz", authNone, s.healthz)
	h("GET", "/readyz", authNone, s.readyz)
	ui := s.webUI()
	h("GET", "/{$}", authNone, serveWebRoot(ui))
	s.mux.Handle(web.Prefix, ui)
}

func (s *Server) handle(method, pattern string, a auth, fn apiFunc) {
	s.handleBody(method, pattern, a, s.cfg.MaxBodyBytes, fn)
}

// handleBody is handle with a body limit of its own: limit bytes, or
// none when negative (the handler bounds what it reads).
func (s *Server) handleBody(method, pattern string, a auth, limit int64, fn apiFunc) {
	s.routes = append(s.routes, Route{Method: method, Pattern: pattern})
	s.mux.HandleFunc(method+" "+pattern, func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(r, a)
		if err == nil {
			if method != http.MethodGet && method != http.MethodDelete && limit >= 0 {
				r.Body = http.MaxBytesReader(w, r.Body, limit)
			}
			err = fn(w, r, p)
		}
		if err != nil {
			s.fail(w, r, err)
		}
	})
}

// serveHTTP wraps the mux: an operation id per request, metrics, and JSON
// errors for paths and methods that match no route.
func (s *Server) serveHTTP() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		op := ulid.Make().String()
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, op))
		w.Header().Set(httphelper.OperationIDHeader, op)
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK, logError: func(err error) {
			s.log.WithFields(logrus.Fields{"operation_id": op, "method": r.Method, "path": r.URL.Path}).WithError(err).Error("request failed")
		}}
		_, pattern := s.mux.Handler(r)
		if pattern == "" {
			s.noRoute(sw, r)
			pattern = "unmatched"
		} else {
			s.mux.ServeHTTP(sw, r)
		}
		s.metrics.httpDuration.WithLabelValues(r.Method, pattern, statusClass(sw.status)).Observe(time.Since(start).Seconds())
	})
}

// noRoute writes the mux's 404 or 405 as a structured error.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	probe := &probeWriter{header: http.Header{}}
	s.mux.ServeHTTP(probe, r)
	if allow := probe.header.Get("Allow"); allow != "" {
		w.Header().Set("Allow", allow)
	}
	if probe.status == http.StatusMethodNotAllowed {
		s.fail(w, r, errand.Errorf(errand.CodeMethodNotAllowed, "%s is not allowed on %s", r.Method, r.URL.Path))
		return
	}
	s.fail(w, r, errand.Errorf(errand.CodeNotFound, "no route for %s %s", r.Method, r.URL.Path))
}

// fail writes err as a structured error; an internal error is logged with
// the operation id and shown to the caller only as that id.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	op := operationID(r.Context())
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		err = errand.Errorf(errand.CodeTooLarge, "request body is larger than %d bytes", mbe.Limit)
	}
	code := errand.ErrorCode(err)
	if code == errand.CodeInternal {
		entry := s.log.WithFields(logrus.Fields{"operation_id": op, "method": r.Method, "path": r.URL.Path}).WithError(err)
		if r.Context().Err() != nil {
			entry.Debug("request ended by the caller")
		} else {
			entry.Error("request failed")
		}
	}
	httphelper.WriteErrorOp(w, err, op)
}

// authenticate checks the bearer token against what the route takes: the
// admin token acts as a user with the admin role, a user token as its
// user, with the role the route needs (403 naming it otherwise).
func (s *Server) authenticate(r *http.Request, a auth) (principal, error) {
	if a == authNone || a == authSignature {
		return principal{}, nil
	}
	if p, ok := r.Context().Value(principalKey{}).(principal); ok {
		if need := roleNeeded(a); need != "" {
			return p, checkRole(p, need)
		}
		return principal{}, errand.Errorf(errand.CodeUnauthorized, "the token is not valid for this request")
	}
	token, ok := bearer(r)
	if !ok {
		return principal{}, errand.Errorf(errand.CodeUnauthorized, "an Authorization: Bearer token is required")
	}
	if a == authRegistration {
		if equalToken(token, s.cfg.RegistrationToken) {
			return principal{}, nil
		}
		return principal{}, errand.Errorf(errand.CodeUnauthorized, "the token is not valid for this request")
	}
	if need := roleNeeded(a); need != "" {
		if equalToken(token, s.cfg.AdminToken) {
			return bootstrapAdmin, nil
		}
		p, isUser, err := s.userPrincipal(r.Context(), token)
		if err != nil {
			return principal{}, err
		}
		if isUser {
			return p, checkRole(p, need)
		}
	}
	switch a {
	case authDelegate, authDelegateOrAdmin, authDelegateOrViewer:
		id, err := s.sched.DelegateForToken(r.Context(), token, validID)
		if err != nil {
			return principal{}, err
		}
		if id != "" {
			return principal{delegateID: id}, nil
		}
	}
	return principal{}, errand.Errorf(errand.CodeUnauthorized, "the token is not valid for this request")
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// equalToken compares in constant time; hashing first keeps the time
// independent of the lengths too.
func equalToken(got, want string) bool {
	if want == "" {
		return false
	}
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// ownDelegate refuses a delegate acting on another delegate's id.
func ownDelegate(p principal, id string) error {
	if p.role == store.RoleAdmin || p.delegateID == id {
		return nil
	}
	return errand.Errorf(errand.CodeForbidden, "the token belongs to another delegate")
}

type statusWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	logError    func(error)
}

// LogError logs an internal error met while writing the response, under
// the request's operation id (httphelper.ErrorLogger).
func (w *statusWriter) LogError(err error) { w.logError(err) }

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wroteHeader = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush on the real writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush flushes the real writer, for streamed responses.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

type probeWriter struct {
	header http.Header
	status int
}

func (p *probeWriter) Header() http.Header         { return p.header }
func (p *probeWriter) Write(b []byte) (int, error) { return len(b), nil }
func (p *probeWriter) WriteHeader(code int)        { p.status = code }

func statusClass(code int) string {
	return strconv.Itoa(code)
}
