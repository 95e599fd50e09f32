package manager

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/manager/store"
)

// Bounds of what a delegate may ask for.
const (
	maxNameLen     = 128
	maxCapacity    = 1024
	maxAcquire     = 100
	defaultAcquire = 1
)

func delegateHref(id string) string { return "/api/v1/delegates/" + id }

func decorateDelegate(d *errand.Delegate) *errand.Delegate {
	d.Kind = errand.KindDelegate
	d.Href = delegateHref(d.ID)
	return d
}

// newSecret returns n random bytes, URL-safe base64 encoded.
func newSecret(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
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
		if t == "" || len(t) > errand.MaxTaskTypeLen {
			problems = append(problems, fmt.Sprintf("task_types[%d]: must be 1 to %d characters", i, errand.MaxTaskTypeLen))
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
	if req.Capacity == 0 {
		req.Capacity = 1
	}
	id := ulid.Make().String()
	secret, err := newSecret(32)
	if err != nil {
		return err
	}
	token := id + "." + secret
	d, err := s.store.DelegateRegister(r.Context(), store.DelegateRegisterParams{
		Delegate: &errand.Delegate{
			ID: id, Name: req.Name, Hostname: req.Hostname, Group: req.Group,
			Labels: req.Labels, Archs: req.Archs, Capacity: req.Capacity,
			TaskTypes: req.TaskTypes, Dynamic: req.Dynamic, Version: req.Version,
		},
		TokenHash: hashToken(token),
		Now:       s.now(),
	})
	if err != nil {
		return fmt.Errorf("register delegate %s: %w", id, err)
	}
	s.tokens.put(hashToken(token), id)
	s.log.WithFields(logrus.Fields{"delegate_id": id, "name": d.Name, "group": d.Group, "hostname": d.Hostname}).Info("delegate registered")
	httphelper.WriteJSON(w, &client.Registration{
		Delegate:          *decorateDelegate(d),
		Token:             token,
		HeartbeatInterval: errand.Duration(s.cfg.HeartbeatInterval),
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
	ctx := r.Context()
	d, err := s.store.DelegateGet(ctx, id)
	if err != nil {
		return fmt.Errorf("heartbeat of delegate %s: %w", id, err)
	}
	s.beats.record(id)
	// Changes of condition are written at once; the heartbeat itself
	// waits for the next flush.
	var up store.DelegateUpdateParams
	if req.Overloaded != d.Overloaded {
		up.Overloaded = &req.Overloaded
	}
	if req.Draining && d.State != errand.DelegateDraining {
		st := errand.DelegateDraining
		up.State = &st
	}
	if up.Overloaded != nil || up.State != nil {
		up.ID = id
		if d, err = s.store.DelegateUpdate(ctx, up); err != nil {
			return fmt.Errorf("update delegate %s: %w", id, err)
		}
		s.log.WithFields(logrus.Fields{"delegate_id": id, "overloaded": d.Overloaded, "state": d.State}).Info("delegate condition changed")
	}
	cancel, err := s.store.TaskCancelRequests(ctx, id)
	if err != nil {
		return fmt.Errorf("cancel requests of delegate %s: %w", id, err)
	}
	httphelper.WriteJSON(w, &client.HeartbeatResponse{
		Kind:              errand.KindHeartbeat,
		Cancel:            cancel,
		Drain:             d.DrainRequested,
		HeartbeatInterval: errand.Duration(s.cfg.HeartbeatInterval),
	}, http.StatusOK)
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
		wait = min(d, s.cfg.MaxWait)
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

// acquire leases tasks to a delegate, long-polling up to wait when none is
// ready. It returns early when a task arrives that the delegate may run,
// or when a user cancels a task it holds or asks it to drain; cancels and
// drain already known when the poll starts are reported but do not end
// the wait, so that a delegate busy stopping a task does not spin.
func (s *Server) acquire(w http.ResponseWriter, r *http.Request, p principal) error {
	id := r.PathValue("id")
	if err := ownDelegate(p, id); err != nil {
		return err
	}
	wait, max, err := s.parseAcquire(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	start := time.Now()
	d, err := s.store.DelegateGet(ctx, id)
	if err != nil {
		return fmt.Errorf("acquire for delegate %s: %w", id, err)
	}
	s.beats.record(id)
	if d.DrainRequested || d.State == errand.DelegateDraining {
		max = 0
	}
	waiter, done := s.hub.acquirer(d, max > 0)
	defer done()

	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	var tasks []*errand.Task
	for {
		if max > 0 {
			tasks, err = s.store.TaskAcquire(ctx, store.TaskAcquireParams{Delegate: d, Max: max, Now: s.now()})
			if err != nil {
				return fmt.Errorf("acquire for delegate %s: %w", id, err)
			}
			if len(tasks) > 0 {
				break
			}
		}
		if timeout == nil || !s.waitAcquire(ctx, waiter, timeout) {
			break
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("acquire for delegate %s: %w", id, err)
	}
	if waiter.urgent.Load() {
		// A drain may have arrived during the wait.
		if d, err = s.store.DelegateGet(ctx, id); err != nil {
			return fmt.Errorf("acquire for delegate %s: %w", id, err)
		}
	}
	s.metrics.acquireWait.Observe(time.Since(start).Seconds())
	s.metrics.acquired.Add(float64(len(tasks)))
	return s.writeAcquire(ctx, w, d, tasks)
}

// waitAcquire waits for a wake-up and reports whether the acquirer should
// look for tasks again; false ends the poll (timeout, shutdown, a cancel
// or drain for the delegate, the caller gone).
func (s *Server) waitAcquire(ctx context.Context, w *waiter, timeout <-chan time.Time) bool {
	select {
	case <-w.ch:
		return !w.urgent.Load()
	case <-timeout:
	case <-ctx.Done():
	case <-s.closing:
	}
	return false
}

func (s *Server) writeAcquire(ctx context.Context, w http.ResponseWriter, d *errand.Delegate, tasks []*errand.Task) error {
	delegateID := d.ID
	cancel, err := s.store.TaskCancelRequests(ctx, delegateID)
	if err != nil {
		return fmt.Errorf("cancel requests of delegate %s: %w", delegateID, err)
	}
	if tasks == nil {
		tasks = []*errand.Task{}
	}
	for _, t := range tasks {
		decorateTask(t)
	}
	if len(tasks) > 0 && s.log.IsLevelEnabled(logrus.DebugLevel) {
		s.log.WithFields(logrus.Fields{"delegate_id": delegateID, "tasks": len(tasks)}).Debug("tasks leased")
	}
	httphelper.WriteJSON(w, &client.AcquireResponse{
		Kind:   errand.KindAcquire,
		Tasks:  tasks,
		Cancel: cancel,
		Drain:  d.DrainRequested,
	}, http.StatusOK)
	return nil
}

func (s *Server) deregisterDelegate(w http.ResponseWriter, r *http.Request, p principal) error {
	id := r.PathValue("id")
	if err := ownDelegate(p, id); err != nil {
		return err
	}
	if err := s.store.DelegateDelete(r.Context(), store.DelegateDeleteParams{ID: id, Now: s.now()}); err != nil {
		return fmt.Errorf("deregister delegate %s: %w", id, err)
	}
	s.tokens.forget(id)
	s.beats.forget(id)
	s.log.WithFields(logrus.Fields{"delegate_id": id, "by_admin": p.admin}).Info("delegate deregistered")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listDelegates(w http.ResponseWriter, r *http.Request, _ principal) error {
	q := r.URL.Query()
	params := store.DelegateListParams{Group: q.Get("group")}
	for _, v := range splitList(q["state"]) {
		st := errand.DelegateState(v)
		switch st {
		case errand.DelegateActive, errand.DelegateDraining, errand.DelegateLost:
		default:
			return errand.Errorf(errand.CodeInvalid, "state: unknown delegate state %q", v)
		}
		params.States = append(params.States, st)
	}
	list, err := s.store.DelegateList(r.Context(), params)
	if err != nil {
		return fmt.Errorf("list delegates: %w", err)
	}
	if list == nil {
		list = []*errand.Delegate{}
	}
	for _, d := range list {
		decorateDelegate(d)
	}
	httphelper.WriteJSON(w, &client.DelegateList{Kind: errand.KindDelegates, Items: list}, http.StatusOK)
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

func (s *Server) drainDelegate(w http.ResponseWriter, r *http.Request, _ principal) error {
	id := r.PathValue("id")
	yes := true
	if _, err := s.store.DelegateUpdate(r.Context(), store.DelegateUpdateParams{ID: id, DrainRequested: &yes}); err != nil {
		return fmt.Errorf("drain delegate %s: %w", id, err)
	}
	// The store announces the change to every manager; waking the local
	// long-poll directly as well costs nothing and does not depend on it.
	s.hub.notify(store.Change{Kind: store.ChangeDrainRequested, DelegateID: id})
	s.log.WithField("delegate_id", id).Info("delegate asked to drain")
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
