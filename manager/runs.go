package manager

import (
	"net/http"
	"strconv"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/manager/runs"
	"github.com/errandci/errand/manager/scheduler"
)

const (
	// TypeApproval is the task type of a stage's approval gate, a task no
	// delegate runs (see package runs).
	TypeApproval = runs.TypeApproval
	// InternalLabelPrefix starts the delegate labels reserved for the
	// manager: registration refuses them.
	InternalLabelPrefix = "errand."
	// DefaultApprover is who approves when the request does not say.
	DefaultApprover = runs.DefaultApprover
	// SecretEnvPrefix prefixes the manager's environment variables that
	// hold pipeline secrets: ERRAND_SECRET_DEPLOY_KEY is DEPLOY_KEY.
	SecretEnvPrefix = scheduler.EnvPrefix
)

// Defaults of the bounds of one run (Config.MaxRunStages, MaxStageSteps,
// MaxRunTasks), checked when it is submitted: a run past them is refused
// with 400 and never stored.
const (
	DefaultMaxRunStages  = runs.DefaultMaxRunStages
	DefaultMaxStageSteps = runs.DefaultMaxStageSteps
	DefaultMaxRunTasks   = runs.DefaultMaxRunTasks
)

// Bounds of the runs API.
const (
	maxRunListLimit     = 100
	defaultRunListLimit = 20
)

// createRun records the caller as the run's creator: a user's name, or
// BootstrapAdmin for the admin token.
func (s *Server) createRun(w http.ResponseWriter, r *http.Request, p principal) error {
	var req client.RunRequest
	if err := httphelper.DecodeJSON(r, &req, s.cfg.MaxBodyBytes); err != nil {
		return err
	}
	view, err := s.runs.Create(r.Context(), &req, p.user)
	if err != nil {
		return err
	}
	httphelper.WriteJSON(w, view, http.StatusCreated)
	return nil
}

func (s *Server) getRun(w http.ResponseWriter, r *http.Request, _ principal) error {
	view, err := s.runs.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	httphelper.WriteJSON(w, view, http.StatusOK)
	return nil
}

func (s *Server) listRuns(w http.ResponseWriter, r *http.Request, _ principal) error {
	q := r.URL.Query()
	limit := defaultRunListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxRunListLimit {
			return errand.Errorf(errand.CodeInvalid, "limit: must be an integer between 1 and %d", maxRunListLimit)
		}
		limit = n
	}
	out, err := s.runs.List(r.Context(), q.Get("after"), limit)
	if err != nil {
		return err
	}
	httphelper.WriteJSON(w, out, http.StatusOK)
	return nil
}

func (s *Server) cancelRun(w http.ResponseWriter, r *http.Request, p principal) error {
	if err := s.runs.Cancel(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	s.audit(r.Context(), p, "run.cancel", r.PathValue("id"), "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// approveStage approves as the caller: a user approves under their own
// name, once per stage; only the bootstrap admin token may name another
// approver (for scripts), and repeating such an approval counts once.
func (s *Server) approveStage(w http.ResponseWriter, r *http.Request, p principal) error {
	var req client.ApproveRequest
	if err := s.decodeOptional(r, &req); err != nil {
		return err
	}
	id, stage := r.PathValue("id"), r.PathValue("name")
	var err error
	if p.admin {
		err = s.runs.Approve(r.Context(), id, stage, req.Approver)
	} else {
		if req.Approver != "" && req.Approver != p.user {
			return errand.Errorf(errand.CodeForbidden, "approver: %s may approve only as themself; naming another approver needs the bootstrap admin token", p.user)
		}
		err = s.runs.ApproveOnce(r.Context(), id, stage, p.user)
	}
	if err != nil {
		return err
	}
	approver := req.Approver
	if approver == "" || !p.admin {
		approver = p.user
	}
	s.audit(r.Context(), p, "stage.approve", id, "stage "+stage+" as "+approver)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
