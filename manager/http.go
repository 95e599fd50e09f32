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
	"github.com/errandci/errand/manager/web"
)

// auth says which bearer token a route takes.
type auth int

const (
	authNone         auth = iota // no token
	authAdmin                    // the admin token
	authRegistration             // the registration token
	authDelegate                 // a delegate's own token
	authDelegateOrAdmin
)

// principal is who a request's token belongs to.
type principal struct {
	admin      bool
	delegateID string
}

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
	h("DELETE", "/api/v1/delegates/{id}", authDelegateOrAdmin, s.deregisterDelegate)
	h("GET", "/api/v1/delegates", authDelegateOrAdmin, s.listDelegates)
	h("GET", "/api/v1/delegates/{id}", authAdmin, s.getDelegate)
	h("POST", "/api/v1/delegates/{id}/drain", authAdmin, s.drainDelegate)

	h("POST", "/api/v1/tasks", authAdmin, s.createTasks)
	h("GET", "/api/v1/tasks", authAdmin, s.listTasks)
	h("GET", "/api/v1/tasks/{id}", authAdmin, s.getTask)
	h("POST", "/api/v1/tasks/{id}/cancel", authAdmin, s.cancelTask)
	h("POST", "/api/v1/tasks/{id}/status", authDelegate, s.reportStatus)
	h("POST", "/api/v1/tasks/{id}/logs", authDelegate, s.appendLogs)
	h("GET", "/api/v1/tasks/{id}/logs", authAdmin, s.readLogs)

	h("POST", "/api/v1/runs", authAdmin, s.createRun)
	h("GET", "/api/v1/runs", authAdmin, s.listRuns)
	h("GET", "/api/v1/runs/{id}", authAdmin, s.getRun)
	h("POST", "/api/v1/runs/{id}/cancel", authAdmin, s.cancelRun)
	h("POST", "/api/v1/runs/{id}/stages/{name}/approve", authAdmin, s.approveStage)

	h("GET", "/metrics", authAdmin, s.serveMetrics)
	h("GET", "/healthz", authNone, s.healthz)
	h("GET", "/readyz", authNone, s.readyz)
	ui := s.webUI()
	h("GET", "/{$}", authNone, serveWebRoot(ui))
	s.mux.Handle(web.Prefix, ui)
}

func (s *Server) handle(method, pattern string, a auth, fn apiFunc) {
	s.routes = append(s.routes, Route{Method: method, Pattern: pattern})
	s.mux.HandleFunc(method+" "+pattern, func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(r, a)
		if err == nil {
			if method != http.MethodGet && method != http.MethodDelete {
				r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
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

// authenticate checks the bearer token against what the route takes.
func (s *Server) authenticate(r *http.Request, a auth) (principal, error) {
	if a == authNone {
		return principal{}, nil
	}
	token, ok := bearer(r)
	if !ok {
		return principal{}, errand.Errorf(errand.CodeUnauthorized, "an Authorization: Bearer token is required")
	}
	switch a {
	case authAdmin:
		if equalToken(token, s.cfg.AdminToken) {
			return principal{admin: true}, nil
		}
	case authRegistration:
		if equalToken(token, s.cfg.RegistrationToken) {
			return principal{}, nil
		}
	case authDelegate, authDelegateOrAdmin:
		if a == authDelegateOrAdmin && equalToken(token, s.cfg.AdminToken) {
			return principal{admin: true}, nil
		}
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
	if p.admin || p.delegateID == id {
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
