package errand

import (
	"fmt"
	"strings"
	"time"
)

// State is where a task is in its life.
type State string

// Task states.
const (
	StatePending   State = "pending"
	StateWaiting   State = "waiting"
	StateQueued    State = "queued"
	StateLeased    State = "leased"
	StateRunning   State = "running"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
	StateCancelled State = "cancelled"
	StateSkipped   State = "skipped"
	StateTimedOut  State = "timed_out"
)

// States lists every task state, in life order.
var States = []State{StatePending, StateWaiting, StateQueued, StateLeased, StateRunning,
	StateSucceeded, StateFailed, StateCancelled, StateSkipped, StateTimedOut}

// Valid reports whether s is a known state.
func (s State) Valid() bool {
	for _, x := range States {
		if s == x {
			return true
		}
	}
	return false
}

// Terminal reports whether a task in state s will never change again.
func (s State) Terminal() bool {
	switch s {
	case StateSucceeded, StateFailed, StateCancelled, StateSkipped, StateTimedOut:
		return true
	}
	return false
}

// Active reports whether a delegate holds a lease on a task in state s.
func (s State) Active() bool { return s == StateLeased || s == StateRunning }

// Condition says which outcome of a dependency lets a dependent run.
type Condition string

// Dependency conditions.
const (
	OnSuccess Condition = "on_success"
	OnFailure Condition = "on_failure"
	OnSkipped Condition = "on_skipped"
	Always    Condition = "always"
)

// Conditions lists every dependency condition.
var Conditions = []Condition{OnSuccess, OnFailure, OnSkipped, Always}

// Valid reports whether c is a known condition, or alternatives of known
// conditions joined by AnyOf; the empty condition is on_success.
func (c Condition) Valid() bool {
	if alts, ok := c.alternatives(); ok {
		for _, a := range alts {
			if a == "" || !a.Valid() {
				return false
			}
		}
		return true
	}
	switch c {
	case "", OnSuccess, OnFailure, OnSkipped, Always:
		return true
	}
	return false
}

// AnyOf returns the condition met when any of cs is met, written with the
// alternatives joined by "|" ("on_failure|on_skipped"). Pipelines need it
// where a dependent must run on one of several outcomes of the same task,
// since the dependencies of a task must all be met.
func AnyOf(cs ...Condition) Condition {
	if len(cs) == 1 {
		return cs[0]
	}
	s := ""
	for i, c := range cs {
		if i > 0 {
			s += "|"
		}
		s += string(c)
	}
	return Condition(s)
}

// alternatives splits a condition made by AnyOf.
func (c Condition) alternatives() ([]Condition, bool) {
	if !strings.Contains(string(c), "|") {
		return nil, false
	}
	var alts []Condition
	for _, a := range strings.Split(string(c), "|") {
		alts = append(alts, Condition(a))
	}
	return alts, true
}

// Met reports whether a dependency that ended in state s meets c.
// A failure is a failed or timed-out task; a cancelled task meets only
// always, so a cancelled run still cleans up and does nothing else.
// A condition made by AnyOf is met when one of its alternatives is.
func (c Condition) Met(s State) bool {
	if alts, ok := c.alternatives(); ok {
		if !c.Valid() {
			return false
		}
		for _, a := range alts {
			if a.Met(s) {
				return true
			}
		}
		return false
	}
	switch c {
	case "", OnSuccess:
		return s == StateSucceeded
	case OnFailure:
		return s == StateFailed || s == StateTimedOut
	case OnSkipped:
		return s == StateSkipped
	case Always:
		return s.Terminal()
	}
	return false
}

// Readiness is what a pending task's dependencies say about it.
type Readiness int

// Readiness values.
const (
	// Wait: some dependency has not ended yet.
	Wait Readiness = iota
	// Ready: every dependency ended and met its condition.
	Ready
	// Skip: every dependency ended and one did not meet its condition.
	Skip
)

// DependencyOutcome pairs a dependency's condition with the state its task
// is in now.
type DependencyOutcome struct {
	Condition Condition
	State     State
}

// Resolve decides whether a pending task with these dependencies waits,
// runs or is skipped. A task with no dependencies is ready.
func Resolve(deps []DependencyOutcome) Readiness {
	skip := false
	for _, d := range deps {
		if !d.State.Terminal() {
			return Wait
		}
		if !d.Condition.Met(d.State) {
			skip = true
		}
	}
	if skip {
		return Skip
	}
	return Ready
}

// Event is something that happens to a task.
type Event string

// Task events.
const (
	// EventDepsMet: every dependency ended and met its condition.
	EventDepsMet Event = "deps_met"
	// EventDepsUnmet: every dependency ended and one did not meet its
	// condition.
	EventDepsUnmet Event = "deps_unmet"
	// EventLease: a delegate acquired the task.
	EventLease Event = "lease"
	// EventStart: the delegate reported running.
	EventStart Event = "start"
	// EventSucceed, EventFail: the delegate reported the outcome.
	EventSucceed Event = "succeed"
	EventFail    Event = "fail"
	// EventCancel: a user asked to cancel.
	EventCancel Event = "cancel"
	// EventCancelled: the delegate confirmed it stopped a cancelled task.
	EventCancelled Event = "cancelled"
	// EventTimeout: the task ran past its timeout.
	EventTimeout Event = "timeout"
	// EventLeaseExpired: the delegate holding the task stopped
	// heartbeating, or its heartbeats stopped naming the task (see
	// LeaseCheck).
	EventLeaseExpired Event = "lease_expired"
	// EventAffinityLost: a queued task must run on the delegate that ran
	// its affinity task, that delegate is gone, and no live delegate may
	// stand in for it.
	EventAffinityLost Event = "affinity_lost"
	// EventApprove: one more distinct approver approved an approval gate
	// (a task with Approvals set).
	EventApprove Event = "approve"
)

// Status is the part of a task that the state machine reads and writes.
type Status struct {
	State           State
	Attempt         int // attempts started so far, counting the current one
	MaxAttempts     int
	CancelRequested bool
	// Approvals is the number of distinct approvers an approval gate
	// needs (0: the task is not a gate); Approved counts those so far.
	Approvals, Approved int
	// Code is the error code of the outcome the transition decided, when
	// the machine decides it (delegate_lost, timed_out, cancelled); empty
	// otherwise.
	Code string
}

// Transition is the whole of Errand's task life cycle, as a pure function:
// the status after event e happens to a task in status s, or an error
// wrapping ErrIllegalTransition when e cannot happen in s.
//
//	           deps_unmet                      cancel
//	pending ─────────────────────> skipped   pending ──> cancelled
//	   │ deps_met                            waiting ──> cancelled
//	   │                                     queued  ──> cancelled
//	   │   (a gate: Approvals > 0)
//	   ├──────────────> waiting ──approve (Approved reaches Approvals)──> succeeded
//	   │                  (Approved already enough: succeeded at once)
//	   v               lease_expired (attempts left)
//	queued <──────────────────────────────────────┐
//	   │ lease                                     │
//	   v          start                            │
//	leased ──────────────> running ────────────────┤
//	   │                      │                    │ lease_expired (none left)
//	   │ succeed/fail/        │ succeed ─> succeeded└──> failed (delegate_lost)
//	   │ cancelled/timeout    │ fail    ─> failed
//	   └──────────────────────┤ timeout ─> timed_out
//	                          │ cancelled ─> cancelled
//	                          │ cancel: stays, cancel_requested set;
//	                          │   lease_expired then ends it cancelled
//	queued ──affinity_lost──> failed (affinity_lost)
//
// Attempt counts leases: lease increments it, and a lease that expires
// with Attempt < MaxAttempts puts the task back in the queue.
//
// An approval gate is a task no delegate runs: it waits for Approvals
// distinct approvers. Each approve (the caller counts distinct approvers)
// adds one to Approved, on a pending gate (its dependencies have not all
// ended) as on a waiting one; a waiting gate that reaches Approvals
// succeeds. A waiting task is never leased.
func Transition(s Status, e Event) (Status, error) {
	next := s
	next.Code = ""
	illegal := func() (Status, error) {
		return s, fmt.Errorf("%w: %s task cannot take %s", ErrIllegalTransition, s.State, e)
	}
	switch e {
	case EventDepsMet:
		switch {
		case s.State != StatePending:
			return illegal()
		case s.Approvals <= 0:
			next.State = StateQueued
		case s.Approved < s.Approvals:
			next.State = StateWaiting
		default:
			next.State = StateSucceeded
		}
	case EventApprove:
		if s.Approvals <= 0 || (s.State != StatePending && s.State != StateWaiting) {
			return illegal()
		}
		next.Approved = s.Approved + 1
		if s.State == StateWaiting && next.Approved >= s.Approvals {
			next.State = StateSucceeded
		}
	case EventDepsUnmet:
		if s.State != StatePending {
			return illegal()
		}
		next.State = StateSkipped
		next.Code = CodeDependencyUnmet
	case EventLease:
		if s.State != StateQueued {
			return illegal()
		}
		next.State = StateLeased
		next.Attempt = s.Attempt + 1
	case EventStart:
		if s.State != StateLeased {
			return illegal()
		}
		next.State = StateRunning
	case EventSucceed:
		if !s.State.Active() {
			return illegal()
		}
		next.State = StateSucceeded
	case EventFail:
		if !s.State.Active() {
			return illegal()
		}
		next.State = StateFailed
	case EventCancelled:
		if !s.State.Active() {
			return illegal()
		}
		next.State = StateCancelled
		next.Code = CodeCancelled
	case EventTimeout:
		if !s.State.Active() {
			return illegal()
		}
		next.State = StateTimedOut
		next.Code = CodeTimedOut
	case EventCancel:
		switch {
		case s.State == StatePending || s.State == StateWaiting || s.State == StateQueued:
			next.State = StateCancelled
			next.Code = CodeCancelled
		case s.State.Active():
			next.CancelRequested = true
		default:
			return illegal()
		}
	case EventAffinityLost:
		if s.State != StateQueued {
			return illegal()
		}
		next.State = StateFailed
		next.Code = CodeAffinityLost
	case EventLeaseExpired:
		if !s.State.Active() {
			return illegal()
		}
		switch {
		case s.CancelRequested:
			next.State = StateCancelled
			next.Code = CodeCancelled
		case s.Attempt < s.MaxAttempts:
			next.State = StateQueued
		default:
			next.State = StateFailed
			next.Code = CodeDelegateLost
		}
	default:
		return s, fmt.Errorf("%w: unknown event %q", ErrIllegalTransition, e)
	}
	return next, nil
}

// EventForReport maps a state a delegate reports to the event it is.
func EventForReport(s State) (Event, bool) {
	switch s {
	case StateRunning:
		return EventStart, true
	case StateSucceeded:
		return EventSucceed, true
	case StateFailed:
		return EventFail, true
	case StateCancelled:
		return EventCancelled, true
	case StateTimedOut:
		return EventTimeout, true
	}
	return "", false
}

// LeaseCheck is what is known of one lease when its delegate says which
// tasks it holds, or when a sweep runs.
//
// A heartbeat renews exactly the leases of the tasks the delegate names in
// it. A lease it does not name is not ended at once: an acquire answer may
// be on its way to the delegate while the heartbeat is on its way back, so
// the lease is kept for one lease TTL after it was given or last renewed.
// The exception is a complete statement, which a delegate makes when it
// (re)starts: no acquire answer of its own can then be in flight, so every
// lease it does not name ends at once.
type LeaseCheck struct {
	// Named: the delegate named the task in the statement checked.
	Named bool
	// Complete: the statement is the whole of what the delegate holds.
	Complete bool
	// Renewed is when the lease was given or last renewed.
	Renewed time.Time
}

// Ended reports whether the lease has ended at now, for a lease TTL of
// ttl; an ended lease takes EventLeaseExpired.
func (l LeaseCheck) Ended(now time.Time, ttl time.Duration) bool {
	switch {
	case l.Named:
		return false
	case l.Complete:
		return true
	}
	return now.Sub(l.Renewed) > ttl
}
