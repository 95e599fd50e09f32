package manager

import (
	"context"
	"errors"
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
