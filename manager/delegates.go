package manager

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
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

// newSecret returns n random bytes, URL-safe base64 encoded. A secret
// never starts with '-', so that `--token SECRET` is never read as a flag.
func newSecret(n int) (string, error) {
	b := make([]byte, n)
	for {
		if _, err := rand.Read(b); err != nil {
			return "", fmt.Errorf("generate secret: %w", err)
		}
		if s := base64.RawURLEncoding.EncodeToString(b); s[0] != '-' {
			return s, nil
		}
	}
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
	s.tokens.put(sha256.Sum256([]byte(token)), id)
	s.cache.registered(d, d.LastHeartbeat)
	s.log.WithFields(logrus.Fields{"delegate_id": id, "name": d.Name, "group": d.Group, "hostname": d.Hostname}).Info("delegate registered")
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
	ctx := r.Context()
	v, err := s.liveDelegate(ctx, id)
	if err != nil {
		return fmt.Errorf("heartbeat of delegate %s: %w", id, err)
	}
	now := s.now()
	if req.Resumed {
		if err := s.releaseUnheld(ctx, id, req.Running, now); err != nil {
			return err
		}
	}
	s.beats.recordRunning(id, req.Running)
	if s.cache.heardFrom(id, now, true) {
		// A long-poll still waiting from before the delegate was lost
		// may take tasks again: let it end so that the next one does.
		s.hub.wakeDelegate(id)
	}
	// Changes of condition are written at once; the heartbeat itself
	// waits for the next flush.
	d := v.d
	var up store.DelegateUpdateParams
	if req.Overloaded != d.Overloaded {
		up.Overloaded = &req.Overloaded
	}
	if req.Draining && d.State != errand.DelegateDraining {
		st := errand.DelegateDraining
		up.State = &st
	}
	if req.Resumed && !req.Draining {
		// A delegate killed while draining comes back as a new process
		// that takes work: it is active again, and a drain asked of the
		// old process is over.
		if d.State == errand.DelegateDraining {
			st := errand.DelegateActive
			up.State = &st
		}
		if d.DrainRequested {
			no := false
			up.DrainRequested = &no
		}
	}
	if up.Overloaded != nil || up.State != nil || up.DrainRequested != nil {
		up.ID = id
		if d, err = s.store.DelegateUpdate(ctx, up); err != nil {
			return fmt.Errorf("update delegate %s: %w", id, err)
		}
		s.cache.put(d, now)
		s.log.WithFields(logrus.Fields{"delegate_id": id, "overloaded": d.Overloaded, "state": d.State}).Info("delegate condition changed")
	}
	if err := s.recheckCancels(ctx, id); err != nil {
		return err
	}
	if v, err = s.delegate(ctx, id); err != nil {
		return fmt.Errorf("heartbeat of delegate %s: %w", id, err)
	}
	if len(v.cancels) == 0 && !v.d.DrainRequested {
		writeEncoded(w, s.quiet.heartbeat)
		return nil
	}
	httphelper.WriteJSON(w, &client.HeartbeatResponse{
		Kind:              errand.KindHeartbeat,
		Cancel:            v.cancels,
		Drain:             v.d.DrainRequested,
		HeartbeatInterval: errand.Duration(s.cfg.HeartbeatInterval),
	}, http.StatusOK)
	if ctx.Err() == nil {
		s.cache.told(id, v.cancels, s.now())
	}
	return nil
}

// releaseUnheld applies the complete statement of a delegate that
// resumed: every lease of its that it does not name ends at once.
func (s *Server) releaseUnheld(ctx context.Context, id string, held []string, now time.Time) error {
	res, err := s.store.TaskRelease(ctx, store.TaskReleaseParams{DelegateID: id, Held: held, Now: now})
	if err != nil {
		return fmt.Errorf("heartbeat of delegate %s: %w", id, err)
	}
	if n := len(res.Requeued) + len(res.Failed) + len(res.Cancelled); n > 0 {
		s.log.WithFields(logrus.Fields{
			"delegate_id": id,
			"requeued":    res.Requeued,
			"failed":      res.Failed,
			"cancelled":   res.Cancelled,
		}).Warn("resumed delegate no longer holds these tasks: their leases ended")
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
		// An idle delegate's polls are its heartbeats (the poller skips
		// the others while one is in flight): each must end well within
		// the lease TTL for the next to start in time.
		wait = min(d, s.cfg.MaxWait, s.cfg.LeaseTTL/2)
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
// or with news for the delegate: a cancel it was not told yet (also one
// that was asked before the poll started, between two polls), a drain,
// its coming back from lost. Cancels it was told already do not end the
// wait, so that a delegate busy stopping a task does not spin. A delegate
// the manager found lost gets no task until it heartbeats again, also
// from a long-poll that was waiting from before.
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
	v, err := s.delegate(ctx, id)
	if err != nil {
		return fmt.Errorf("acquire for delegate %s: %w", id, err)
	}
	lost := v.d.State == errand.DelegateLost
	if !lost {
		s.beats.record(id)
		s.cache.heardFrom(id, s.now(), false)
	}
	draining := v.d.DrainRequested || v.d.State == errand.DelegateDraining
	wantTasks := max > 0 && !lost && !draining
	if v.untold {
		wait = 0
	} else if len(v.cancels) > 0 {
		// Told cancels are pending: poll back soon enough to tell them
		// again should the answer that carried them have been lost.
		wait = min(wait, retellAfter)
	}
	var tasks []*errand.Task
	if wantTasks && (wait == 0 || !s.cache.unchanged(id, s.hub.queued.Load(), s.now(), idleLookAge)) {
		// A busy delegate finds work at once, with no waiter to register;
		// a look that finds none stands for the wait's first.
		if tasks, err = s.lookForTasks(ctx, v.d, max); err != nil {
			return err
		}
	}
	if len(tasks) == 0 && wait > 0 {
		if tasks, v, err = s.awaitTasks(ctx, v, max, wantTasks, wait); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("acquire for delegate %s: %w", id, err)
	}
	s.metrics.acquireWait.Observe(time.Since(start).Seconds())
	s.metrics.acquired.Add(float64(len(tasks)))
	return s.writeAcquire(ctx, w, v, tasks)
}

// idleLookAge bounds how long a look for tasks that found none stands
// for the next long-poll of the delegate, when no task was queued since.
const idleLookAge = 5 * time.Minute

// lookForTasks leases up to max tasks to d, and records whether it found
// any so that the delegate's next long-poll can skip a look that could
// find nothing.
func (s *Server) lookForTasks(ctx context.Context, d *errand.Delegate, max int) ([]*errand.Task, error) {
	queued := s.hub.queued.Load()
	tasks, err := s.store.TaskAcquire(ctx, store.TaskAcquireParams{Delegate: d, Max: max, Now: s.now()})
	if err != nil {
		return nil, fmt.Errorf("acquire for delegate %s: %w", d.ID, err)
	}
	s.cache.looked(d.ID, queued, s.now(), len(tasks))
	return s.leaseSecrets(ctx, d.ID, tasks)
}

// leaseSecrets puts the values of the secrets each leased task names
// into its leased copy. A task whose secret the source does not hold
// fails at once with errand.CodeSecretMissing, and is not handed out.
func (s *Server) leaseSecrets(ctx context.Context, delegateID string, leased []*errand.Task) ([]*errand.Task, error) {
	out := leased[:0]
	for _, t := range leased {
		err := scheduler.LeaseSecrets(ctx, s.cfg.Secrets, t)
		if err == nil {
			out = append(out, t)
			continue
		}
		e := &errand.Error{Code: errand.CodeSecretMissing, Reason: err.Error()}
		var de *errand.Error
		if errors.As(err, &de) && de.Code == errand.CodeSecretMissing {
			e.Reason = de.Reason
		}
		s.log.WithFields(logrus.Fields{"task_id": t.ID, "delegate_id": delegateID}).WithError(err).Warn("task fails: a secret it names cannot be given")
		if _, err := s.store.TaskReport(ctx, store.TaskReportParams{TaskID: t.ID, DelegateID: delegateID,
			LeaseToken: t.Lease.Token, State: errand.StateFailed, Error: e, Now: s.now()}); err != nil {
			return nil, fmt.Errorf("fail task %s: %w", t.ID, err)
		}
	}
	return out, nil
}

// awaitTasks is the long-polling acquire: it looks for tasks, then again
// on every wake-up until some are leased or there is news for the
// delegate, and returns them with the delegate's latest view. The first
// look is skipped when the delegate's last one found nothing and no task
// was queued since: an idle delegate's polls then cost no store write.
func (s *Server) awaitTasks(ctx context.Context, v delegateView, max int, wantTasks bool, wait time.Duration) ([]*errand.Task, delegateView, error) {
	id := v.d.ID
	lost := v.d.State == errand.DelegateLost
	draining := v.d.DrainRequested || v.d.State == errand.DelegateDraining
	waiter, done := s.hub.acquirer(v.d, wantTasks)
	defer done()
	// The caller's view was taken before the waiter was registered: news
	// that came in between woke no one, so read the view again. Changes
	// reach the cache before they wake waiters, so from here on nothing
	// is missed.
	v, err := s.delegate(ctx, id)
	if err != nil {
		return nil, v, fmt.Errorf("acquire for delegate %s: %w", id, err)
	}
	if v.untold || (v.d.DrainRequested || v.d.State == errand.DelegateDraining) != draining {
		return nil, v, nil
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	// Registered with the hub before looking: a task queued since the
	// last look has woken the waiter or counted in the hub.
	look := wantTasks && !s.cache.unchanged(id, s.hub.queued.Load(), s.now(), idleLookAge)
	for {
		if look {
			tasks, err := s.lookForTasks(ctx, v.d, max)
			if err != nil || len(tasks) > 0 {
				return tasks, v, err
			}
		}
		select {
		case <-waiter.ch:
		case <-timer.C:
			return nil, v, nil
		case <-ctx.Done():
			return nil, v, nil
		case <-s.closing:
			return nil, v, nil
		}
		if v, err = s.recheckDelegate(ctx, id); err != nil {
			return nil, v, err
		}
		nowLost := v.d.State == errand.DelegateLost
		nowDraining := v.d.DrainRequested || v.d.State == errand.DelegateDraining
		if v.untold || nowDraining != draining || (lost && !nowLost) {
			return nil, v, nil
		}
		wantTasks = wantTasks && !nowLost
		look = wantTasks
	}
}

// recheckDelegate returns the view of a delegate whose long-poll woke
// up. When this manager has not heard from the delegate for a while, the
// store may know better (another manager's sweep found it lost; a sweep
// whose result this manager has not applied yet): the record is read
// again.
func (s *Server) recheckDelegate(ctx context.Context, id string) (delegateView, error) {
	v, err := s.delegate(ctx, id)
	if err != nil {
		return v, fmt.Errorf("acquire for delegate %s: %w", id, err)
	}
	stale := min(s.cfg.HeartbeatInterval, s.cfg.LeaseTTL/2)
	if v.d.State == errand.DelegateLost || s.now().Sub(v.heard) <= stale {
		return v, nil
	}
	d, err := s.store.DelegateGet(ctx, id)
	if err != nil {
		return v, fmt.Errorf("acquire for delegate %s: %w", id, err)
	}
	s.cache.put(d, d.LastHeartbeat)
	v.d = d
	return v, nil
}

func (s *Server) writeAcquire(ctx context.Context, w http.ResponseWriter, v delegateView, tasks []*errand.Task) error {
	if len(tasks) == 0 && len(v.cancels) == 0 && !v.d.DrainRequested {
		writeEncoded(w, s.quiet.acquire)
		return nil
	}
	if tasks == nil {
		tasks = []*errand.Task{}
	}
	for _, t := range tasks {
		decorateTask(t)
	}
	if len(tasks) > 0 && s.log.IsLevelEnabled(logrus.DebugLevel) {
		s.log.WithFields(logrus.Fields{"delegate_id": v.d.ID, "tasks": len(tasks)}).Debug("tasks leased")
	}
	httphelper.WriteJSON(w, &client.AcquireResponse{
		Kind:   errand.KindAcquire,
		Tasks:  tasks,
		Cancel: v.cancels,
		Drain:  v.d.DrainRequested,
	}, http.StatusOK)
	if ctx.Err() == nil {
		s.cache.told(v.d.ID, v.cancels, s.now())
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
	if err := s.store.DelegateDelete(r.Context(), store.DelegateDeleteParams{ID: id, Now: s.now()}); err != nil {
		return fmt.Errorf("deregister delegate %s: %w", id, err)
	}
	s.tokens.forget(id)
	s.beats.forget(id)
	s.cache.forget(id)
	// Its tasks' followers may go to another delegate of its group.
	s.hub.queuedChanged()
	s.log.WithFields(logrus.Fields{"delegate_id": id, "by_admin": p.admin}).Info("delegate deregistered")
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
	if !p.admin {
		self, err := s.delegate(r.Context(), p.delegateID)
		if err != nil {
			return fmt.Errorf("list delegates for %s: %w", p.delegateID, err)
		}
		if params.Group != "" && params.Group != self.d.Group {
			return errand.Errorf(errand.CodeForbidden, "a delegate may only list the delegates of its own group")
		}
		params.Group = self.d.Group
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
	// The manager's own approval delegate is an implementation detail.
	shown := make([]*errand.Delegate, 0, len(list))
	for _, d := range list {
		if d.ID != ApprovalDelegateID {
			shown = append(shown, decorateDelegate(d))
		}
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

func (s *Server) drainDelegate(w http.ResponseWriter, r *http.Request, _ principal) error {
	id := r.PathValue("id")
	yes := true
	d, err := s.store.DelegateUpdate(r.Context(), store.DelegateUpdateParams{ID: id, DrainRequested: &yes})
	if err != nil {
		return fmt.Errorf("drain delegate %s: %w", id, err)
	}
	s.cache.put(d, time.Time{})
	// The store announces the change to every manager; applying it here
	// as well costs nothing and does not depend on it.
	s.onChange(store.Change{Kind: store.ChangeDrainRequested, DelegateID: id})
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
