package manager

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/manager/store"
)

// Bounds of what a delegate may ask for.
const (
	maxNameLen = 128
	// maxHostnameLen is the longest DNS name.
	maxHostnameLen = 253
	maxCapacity    = 1024
	maxAcquire     = 100
	// maxHeld bounds the tasks a heartbeat names: a full delegate's
	// running tasks and the outcomes it has yet to report.
	maxHeld        = 4096
	defaultAcquire = 1
)

func delegateHref(id string) string { return "/api/v1/delegates/" + id }

func decorateDelegate(d *errand.Delegate) *errand.Delegate {
	d.Kind = errand.KindDelegate
	d.Href = delegateHref(d.ID)
	return d
}

func validateRegister(req *client.RegisterRequest) error {
	var problems []string
	if strings.TrimSpace(req.Name) == "" {
		problems = append(problems, "name: required")
	} else if len(req.Name) > maxNameLen {
		problems = append(problems, fmt.Sprintf("name: longer than %d characters", maxNameLen))
	}
	if req.Capacity < 0 || req.Capacity > maxCapacity {
		problems = append(problems, fmt.Sprintf("capacity: must be between 0 and %d", maxCapacity))
	}
	for i, t := range req.TaskTypes {
		if t == "" || len(t) > errand.MaxTaskTypeLen || errand.TextProblem(t) != "" {
			problems = append(problems, fmt.Sprintf("task_types[%d]: must be 1 to %d characters of text without control characters", i, errand.MaxTaskTypeLen))
		}
	}
	text := func(field, v string, maxLen int) {
		if len(v) > maxLen {
			problems = append(problems, fmt.Sprintf("%s: longer than %d characters", field, maxLen))
		} else if p := errand.TextProblem(v); p != "" {
			problems = append(problems, fmt.Sprintf("%s: %s", field, p))
		}
	}
	text("name", req.Name, maxNameLen)
	text("hostname", req.Hostname, maxHostnameLen)
	text("group", req.Group, maxNameLen)
	text("version", req.Version, maxNameLen)
	for i, a := range req.Archs {
		if a == "" {
			problems = append(problems, fmt.Sprintf("archs[%d]: empty architecture", i))
		}
		text(fmt.Sprintf("archs[%d]", i), a, maxNameLen)
	}
	problems = append(problems, errand.LabelProblems("labels", req.Labels)...)
	for k := range req.Labels {
		if strings.HasPrefix(k, InternalLabelPrefix) {
			problems = append(problems, fmt.Sprintf("labels: %q: labels starting with %q are reserved", k, InternalLabelPrefix))
		}
	}
	return invalid("delegate registration", problems)
}

// invalid returns nil for no problems, or one invalid error listing all.
func invalid(what string, problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	return errand.Errorf(errand.CodeInvalid, "%s is invalid: %s", what, strings.Join(problems, "; "))
}

func (s *Server) registerDelegate(w http.ResponseWriter, r *http.Request, _ principal) error {
	var req client.RegisterRequest
	if err := httphelper.DecodeJSON(r, &req, s.cfg.MaxBodyBytes); err != nil {
		return err
	}
	if err := validateRegister(&req); err != nil {
		return err
	}
	d, token, err := s.sched.Register(r.Context(), &errand.Delegate{
		Name: req.Name, Hostname: req.Hostname, Group: req.Group,
		Labels: req.Labels, Archs: req.Archs, Capacity: req.Capacity,
		TaskTypes: req.TaskTypes, Dynamic: req.Dynamic, Version: req.Version,
	})
	if err != nil {
		return err
	}
	httphelper.WriteJSON(w, &client.Registration{
		Delegate:          *decorateDelegate(new(*d)),
		Token:             token,
		HeartbeatInterval: errand.Duration(s.cfg.HeartbeatInterval),
		ManagerID:         s.cfg.ID,
	}, http.StatusCreated)
	return nil
}

// decodeOptional decodes a body that may be empty.
func (s *Server) decodeOptional(r *http.Request, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	err := httphelper.DecodeJSON(r, v, s.cfg.MaxBodyBytes)
	if err != nil && r.ContentLength < 0 && strings.Contains(err.Error(), "body is empty") {
		return nil
	}
	return err
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request, p principal) error {
	id := r.PathValue("id")
	if err := ownDelegate(p, id); err != nil {
		return err
	}
	var req client.HeartbeatRequest
	if err := s.decodeOptional(r, &req); err != nil {
		return err
	}
	if len(req.Running) > maxHeld {
		return errand.Errorf(errand.CodeInvalid, "running: more than %d tasks", maxHeld)
	}
	for i, t := range req.Running {
		if t == "" || len(t) > maxIDLen {
			return errand.Errorf(errand.CodeInvalid, "running[%d]: must be a task id of 1 to %d characters", i, maxIDLen)
		}
	}
	ans, err := s.sched.Heartbeat(r.Context(), id, scheduler.Heartbeat{
		Running: req.Running, Resumed: req.Resumed, Draining: req.Draining, Overloaded: req.Overloaded,
	})
	if err != nil {
		return err
	}
	if ans.Quiet() {
		writeEncoded(w, s.quiet.heartbeat)
		return nil
	}
	httphelper.WriteJSON(w, &client.HeartbeatResponse{
		Kind:              errand.KindHeartbeat,
		Cancel:            ans.Cancel,
		Drain:             ans.Drain,
		HeartbeatInterval: errand.Duration(s.cfg.HeartbeatInterval),
	}, http.StatusOK)
	if r.Context().Err() == nil {
		ans.Delivered()
	}
	return nil
}

// parseAcquire reads ?wait= (a Go duration or seconds) and ?max=.
func (s *Server) parseAcquire(r *http.Request) (time.Duration, int, error) {
	q := r.URL.Query()
	var wait time.Duration
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			secs, nerr := strconv.ParseFloat(v, 64)
			if nerr != nil {
				return 0, 0, errand.Errorf(errand.CodeInvalid, "wait: %q is not a duration such as 30s", v)
			}
			d = time.Duration(secs * float64(time.Second))
		}
		if d < 0 {
			return 0, 0, errand.Errorf(errand.CodeInvalid, "wait: must not be negative")
		}
		wait = d
	}
	max := defaultAcquire
	if v := q.Get("max"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxAcquire {
			return 0, 0, errand.Errorf(errand.CodeInvalid, "max: must be an integer between 0 and %d", maxAcquire)
		}
		max = n
	}
	return wait, max, nil
}

// acquire leases tasks to a delegate, long-polling (see
// scheduler.Acquire).
func (s *Server) acquire(w http.ResponseWriter, r *http.Request, p principal) error {
	id := r.PathValue("id")
	if err := ownDelegate(p, id); err != nil {
		return err
	}
	wait, max, err := s.parseAcquire(r)
	if err != nil {
		return err
	}
	// Reports carried by the acquire are applied first, and answered at
	// once: their results should not wait for a task.
	var results []*client.ReportResult
	if r.ContentLength != 0 {
		reports, refused, err := s.readOptionalReports(r)
		if err != nil {
			return err
		}
		if len(reports) > 0 {
			results = s.applyReports(r.Context(), id, reports, refused)
			wait = 0
		}
	}
	ans, err := s.sched.Acquire(r.Context(), id, wait, max)
	if err != nil {
		return err
	}
	if ans.Quiet() && results == nil {
		writeEncoded(w, s.quiet.acquire)
		return nil
	}
	tasks := ans.Tasks
	if tasks == nil {
		tasks = []*errand.Task{}
	}
	for _, t := range tasks {
		decorateTask(t)
	}
	httphelper.WriteJSON(w, &client.AcquireResponse{
		Kind:    errand.KindAcquire,
		Tasks:   tasks,
		Cancel:  ans.Cancel,
		Drain:   ans.Drain,
		Reports: results,
	}, http.StatusOK)
	if r.Context().Err() == nil {
		ans.Delivered()
	}
	return nil
}

// quietAnswers are the encoded answers of a heartbeat and of an acquire
// that have nothing to tell: nearly all of an idle fleet's traffic, so
// they are encoded once.
type quietAnswers struct {
	heartbeat, acquire []byte
}

func newQuietAnswers(interval time.Duration) (quietAnswers, error) {
	hb, err := json.Marshal(&client.HeartbeatResponse{Kind: errand.KindHeartbeat, HeartbeatInterval: errand.Duration(interval)})
	if err != nil {
		return quietAnswers{}, fmt.Errorf("encode heartbeat answer: %w", err)
	}
	acq, err := json.Marshal(&client.AcquireResponse{Kind: errand.KindAcquire, Tasks: []*errand.Task{}})
	if err != nil {
		return quietAnswers{}, fmt.Errorf("encode acquire answer: %w", err)
	}
	return quietAnswers{heartbeat: append(hb, '\n'), acquire: append(acq, '\n')}, nil
}

// writeEncoded writes a JSON body encoded beforehand, with status 200.
func writeEncoded(w http.ResponseWriter, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

func (s *Server) deregisterDelegate(w http.ResponseWriter, r *http.Request, p principal) error {
	id := r.PathValue("id")
	if err := ownDelegate(p, id); err != nil {
		return err
	}
	if err := s.sched.Deregister(r.Context(), id); err != nil {
		return err
	}
	s.log.WithFields(logrus.Fields{"delegate_id": id, "by_admin": p.delegateID == ""}).Info("delegate deregistered")
	if p.delegateID == "" {
		s.audit(r.Context(), p, "delegate.delete", id, "")
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listDelegates lists delegates: all of them for the admin, and for a
// delegate those of its own group, so that it can clean up after lost
// dynamic siblings without holding the admin token.
// maxDelegateListLimit bounds a page of GET /api/v1/delegates, and is
// its default: callers that do not page see up to that many.
const maxDelegateListLimit = 1000

func (s *Server) listDelegates(w http.ResponseWriter, r *http.Request, p principal) error {
	q := r.URL.Query()
	params := store.DelegateListParams{Group: q.Get("group")}
	if p.delegateID != "" {
		self, err := s.sched.Delegate(r.Context(), p.delegateID)
		if err != nil {
			return fmt.Errorf("list delegates for %s: %w", p.delegateID, err)
		}
		if params.Group != "" && params.Group != self.Group {
			return errand.Errorf(errand.CodeForbidden, "a delegate may only list the delegates of its own group")
		}
		params.Group = self.Group
	}
	for _, v := range splitList(q["state"]) {
		st := errand.DelegateState(v)
		switch st {
		case errand.DelegateActive, errand.DelegateDraining, errand.DelegateLost:
		default:
			return errand.Errorf(errand.CodeInvalid, "state: unknown delegate state %q", v)
		}
		params.States = append(params.States, st)
	}
	params.After, params.Limit = q.Get("after"), maxDelegateListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxDelegateListLimit {
			return errand.Errorf(errand.CodeInvalid, "limit: must be an integer between 1 and %d", maxDelegateListLimit)
		}
		params.Limit = n
	}
	list, err := s.store.DelegateList(r.Context(), params)
	if err != nil {
		return fmt.Errorf("list delegates: %w", err)
	}
	next := ""
	if len(list) == params.Limit {
		next = list[len(list)-1].ID
	}
	shown := make([]*errand.Delegate, 0, len(list))
	for _, d := range list {
		shown = append(shown, decorateDelegate(d))
	}
	httphelper.WriteJSON(w, &client.DelegateList{Kind: errand.KindDelegates, Items: shown, ManagerID: s.cfg.ID, Next: next}, http.StatusOK)
	return nil
}

func (s *Server) getDelegate(w http.ResponseWriter, r *http.Request, _ principal) error {
	id := r.PathValue("id")
	d, err := s.store.DelegateGet(r.Context(), id)
	if err != nil {
		return fmt.Errorf("get delegate %s: %w", id, err)
	}
	httphelper.WriteJSON(w, decorateDelegate(d), http.StatusOK)
	return nil
}

func (s *Server) drainDelegate(w http.ResponseWriter, r *http.Request, p principal) error {
	if err := s.sched.Drain(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	s.audit(r.Context(), p, "delegate.drain", r.PathValue("id"), "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// splitList reads repeated and comma-separated query values.
func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, x := range strings.Split(v, ",") {
			if x = strings.TrimSpace(x); x != "" {
				out = append(out, x)
			}
		}
	}
	return out
}
