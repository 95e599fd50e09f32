package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// idleLookAge bounds how long a look for tasks that found none stands
// for the next long-poll of the delegate, when no task was queued since.
const idleLookAge = 5 * time.Minute

// Answer is what an acquire or a heartbeat tells a delegate: the tasks
// leased to it (an acquire's), the tasks it should cancel, whether to
// drain.
type Answer struct {
	Tasks  []*errand.Task
	Cancel []string
	Drain  bool

	s          *Scheduler
	delegateID string
}

// Quiet reports whether the answer tells nothing: no task, no cancel,
// no drain.
func (a *Answer) Quiet() bool { return len(a.Tasks) == 0 && len(a.Cancel) == 0 && !a.Drain }

// Delivered records that the answer reached the delegate: its cancels
// count as told. An answer that may not have reached it (its request
// ended first) is not delivered; its cancels are told again.
func (a *Answer) Delivered() {
	if len(a.Cancel) > 0 {
		a.s.cache.told(a.delegateID, a.Cancel, a.s.now())
	}
}

// Acquire leases up to max tasks to delegate id, long-polling up to wait
// (bounded by MaxWait and half the lease TTL) when none is ready. It
// returns early when a task arrives that the delegate may run, or with
// news for the delegate: a cancel it was not told yet (also one that was
// asked before the poll started, between two polls), a drain, its coming
// back from lost. Cancels it was told already do not end the wait, so
// that a delegate busy stopping a task does not spin. A delegate found
// lost gets no task until it heartbeats again, also from a long-poll
// that was waiting from before.
func (s *Scheduler) Acquire(ctx context.Context, id string, wait time.Duration, max int) (*Answer, error) {
	// An idle delegate's polls are its heartbeats (the poller skips the
	// others while one is in flight): each must end well within the lease
	// TTL for the next to start in time.
	wait = min(wait, s.cfg.MaxWait, s.cfg.LeaseTTL/2)
	start := time.Now()
	v, err := s.delegate(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("acquire for delegate %s: %w", id, err)
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
		wait = min(wait, RetellAfter)
	}
	var tasks []*errand.Task
	if wantTasks && (wait == 0 || !s.cache.unchanged(id, s.hub.queued.Load(), s.now(), idleLookAge)) {
		// A busy delegate finds work at once, with no waiter to register;
		// a look that finds none stands for the wait's first.
		if tasks, err = s.lookForTasks(ctx, v.d, max); err != nil {
			return nil, err
		}
	}
	if len(tasks) == 0 && wait > 0 {
		if tasks, v, err = s.awaitTasks(ctx, v, max, wantTasks, wait); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("acquire for delegate %s: %w", id, err)
	}
	s.metrics.acquireWait.Observe(time.Since(start).Seconds())
	s.metrics.acquired.Add(float64(len(tasks)))
	if len(tasks) > 0 && s.log.IsLevelEnabled(logrus.DebugLevel) {
		s.log.WithFields(logrus.Fields{"delegate_id": id, "tasks": len(tasks)}).Debug("tasks leased")
	}
	return &Answer{Tasks: tasks, Cancel: v.cancels, Drain: v.d.DrainRequested, s: s, delegateID: id}, nil
}

// lookForTasks leases up to max tasks to d, and records whether it found
// any so that the delegate's next long-poll can skip a look that could
// find nothing.
func (s *Scheduler) lookForTasks(ctx context.Context, d *errand.Delegate, max int) ([]*errand.Task, error) {
	queued := s.hub.queued.Load()
	tasks, err := s.store.TaskAcquire(ctx, store.TaskAcquireParams{Delegate: d, Max: max, Now: s.now()})
	if err != nil {
		return nil, fmt.Errorf("acquire for delegate %s: %w", d.ID, err)
	}
	s.cache.looked(d.ID, queued, s.now(), len(tasks))
	for _, t := range tasks {
		if !mentionsSecrets(t.Data) {
			// Nothing to mask in what its delegate will report: its
			// reports need not read the task again to know.
			s.maskers.put(t.ID, nil)
		}
	}
	return s.leaseSecrets(ctx, d.ID, tasks)
}

// leaseSecrets puts the values of the secrets each leased task names
// into its leased copy. A task whose secret the source does not hold
// fails at once with errand.CodeSecretMissing, and is not handed out.
func (s *Scheduler) leaseSecrets(ctx context.Context, delegateID string, leased []*errand.Task) ([]*errand.Task, error) {
	out := leased[:0]
	for _, t := range leased {
		err := LeaseSecrets(ctx, s.cfg.Secrets, t)
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
func (s *Scheduler) awaitTasks(ctx context.Context, v delegateView, max int, wantTasks bool, wait time.Duration) ([]*errand.Task, delegateView, error) {
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
		case <-s.waitsEnded:
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
func (s *Scheduler) recheckDelegate(ctx context.Context, id string) (delegateView, error) {
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

// Waiting returns how many acquire long-polls are waiting.
func (s *Scheduler) Waiting() int {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return len(s.hub.acquirers)
}
