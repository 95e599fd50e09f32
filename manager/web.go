package manager

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/errandci/errand"
)

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request, _ principal) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
	return nil
}

// readyz answers 200 when the store answers, 503 otherwise (while its
// disk is full too) or while shutting down.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request, _ principal) error {
	select {
	case <-s.closing:
		return errand.Errorf(errand.CodeUnavailable, "shutting down")
	default:
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		s.log.WithError(err).WithField("operation_id", operationID(r.Context())).Warn("store does not answer")
		if errors.Is(err, errand.ErrStorageFull) {
			return errand.Errorf(errand.CodeUnavailable, "store cannot write: its disk is full")
		}
		return errand.Errorf(errand.CodeUnavailable, "store does not answer")
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ready\n"))
	return nil
}

// webRoot is a static page without data: it lists where things are.
func (s *Server) webRoot(w http.ResponseWriter, _ *http.Request, _ principal) error {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, err := fmt.Fprint(w, webRootPage)
	if err != nil {
		return fmt.Errorf("write page: %w", err)
	}
	return nil
}

const webRootPage = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Errand manager</title>
<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:2em auto}code{background:#eee;padding:0 .2em}</style>
</head>
<body>
<h1>Errand manager</h1>
<p>The API answers under <code>/api/v1</code> with the admin token as a bearer token.</p>
<ul>
<li><a href="/api/v1/tasks">/api/v1/tasks</a>: tasks</li>
<li><a href="/api/v1/delegates">/api/v1/delegates</a>: delegates</li>
<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="/healthz">/healthz</a> and <a href="/readyz">/readyz</a>: health</li>
</ul>
</body>
</html>
`
