package errand

import (
	"errors"
	"testing"
	"time"
)

var allEvents = []Event{EventDepsMet, EventDepsUnmet, EventLease, EventStart,
	EventSucceed, EventFail, EventCancel, EventCancelled, EventTimeout,
	EventLeaseExpired, EventAffinityLost, EventApprove}

// TestTransitionMatrix checks every event in every state: the state it
// leads to, or that it is refused. Attempt 1 of 3, no cancel requested.
func TestTransitionMatrix(t *testing.T) {
	const x State = "" // illegal
	// legal[state][event] is the next state; missing means illegal.
	legal := map[State]map[Event]State{
		StatePending: {
			EventDepsMet:   StateQueued,
			EventDepsUnmet: StateSkipped,
			EventCancel:    StateCancelled,
		},
		StateWaiting: {
			EventCancel: StateCancelled,
		},
		StateQueued: {
			EventLease:        StateLeased,
			EventCancel:       StateCancelled,
			EventAffinityLost: StateFailed,
		},
		StateLeased: {
			EventStart:        StateRunning,
			EventSucceed:      StateSucceeded,
			EventFail:         StateFailed,
			EventCancel:       StateLeased,
			EventCancelled:    StateCancelled,
			EventTimeout:      StateTimedOut,
			EventLeaseExpired: StateQueued,
		},
		StateRunning: {
			EventSucceed:      StateSucceeded,
			EventFail:         StateFailed,
			EventCancel:       StateRunning,
			EventCancelled:    StateCancelled,
			EventTimeout:      StateTimedOut,
			EventLeaseExpired: StateQueued,
		},
	}
	for _, s := range States {
		for _, e := range allEvents {
			want, ok := legal[s][e]
			if !ok {
				want = x
			}
			in := Status{State: s, Attempt: 1, MaxAttempts: 3}
			got, err := Transition(in, e)
			if want == x {
				if !errors.Is(err, ErrIllegalTransition) {
					t.Errorf("%s + %s: err = %v, want illegal_transition", s, e, err)
				}
				if got != in {
					t.Errorf("%s + %s: refused transition changed status to %+v", s, e, got)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s + %s: unexpected error %v", s, e, err)
				continue
			}
			if got.State != want {
				t.Errorf("%s + %s = %s, want %s", s, e, got.State, want)
			}
		}
	}
}

func TestTransitionCases(t *testing.T) {
	tests := []struct {
		name string
		in   Status
		e    Event
		want Status
	}{
		{"deps met queues", Status{State: StatePending, MaxAttempts: 3},
			EventDepsMet, Status{State: StateQueued, MaxAttempts: 3}},
		{"deps unmet skips with code", Status{State: StatePending, MaxAttempts: 3},
			EventDepsUnmet, Status{State: StateSkipped, MaxAttempts: 3, Code: CodeDependencyUnmet}},
		{"lease counts an attempt", Status{State: StateQueued, MaxAttempts: 3},
			EventLease, Status{State: StateLeased, Attempt: 1, MaxAttempts: 3}},
		{"second lease counts again", Status{State: StateQueued, Attempt: 1, MaxAttempts: 3},
			EventLease, Status{State: StateLeased, Attempt: 2, MaxAttempts: 3}},
		{"start keeps attempt", Status{State: StateLeased, Attempt: 2, MaxAttempts: 3},
			EventStart, Status{State: StateRunning, Attempt: 2, MaxAttempts: 3}},
		{"succeed clears code", Status{State: StateRunning, Attempt: 1, MaxAttempts: 3, Code: "stale"},
			EventSucceed, Status{State: StateSucceeded, Attempt: 1, MaxAttempts: 3}},
		{"fail from running", Status{State: StateRunning, Attempt: 1, MaxAttempts: 3},
			EventFail, Status{State: StateFailed, Attempt: 1, MaxAttempts: 3}},
		{"fail from leased", Status{State: StateLeased, Attempt: 1, MaxAttempts: 3},
			EventFail, Status{State: StateFailed, Attempt: 1, MaxAttempts: 3}},
		{"lost lease retried while attempts remain", Status{State: StateRunning, Attempt: 2, MaxAttempts: 3},
			EventLeaseExpired, Status{State: StateQueued, Attempt: 2, MaxAttempts: 3}},
		{"lost leased task retried", Status{State: StateLeased, Attempt: 1, MaxAttempts: 2},
			EventLeaseExpired, Status{State: StateQueued, Attempt: 1, MaxAttempts: 2}},
		{"lost lease on last attempt fails delegate_lost", Status{State: StateRunning, Attempt: 3, MaxAttempts: 3},
			EventLeaseExpired, Status{State: StateFailed, Attempt: 3, MaxAttempts: 3, Code: CodeDelegateLost}},
		{"single attempt lost", Status{State: StateLeased, Attempt: 1, MaxAttempts: 1},
			EventLeaseExpired, Status{State: StateFailed, Attempt: 1, MaxAttempts: 1, Code: CodeDelegateLost}},
		{"cancel pending", Status{State: StatePending, MaxAttempts: 3},
			EventCancel, Status{State: StateCancelled, MaxAttempts: 3, Code: CodeCancelled}},
		{"cancel queued", Status{State: StateQueued, Attempt: 1, MaxAttempts: 3},
			EventCancel, Status{State: StateCancelled, Attempt: 1, MaxAttempts: 3, Code: CodeCancelled}},
		{"cancel running requests", Status{State: StateRunning, Attempt: 1, MaxAttempts: 3},
			EventCancel, Status{State: StateRunning, Attempt: 1, MaxAttempts: 3, CancelRequested: true}},
		{"cancel leased requests", Status{State: StateLeased, Attempt: 1, MaxAttempts: 3},
			EventCancel, Status{State: StateLeased, Attempt: 1, MaxAttempts: 3, CancelRequested: true}},
		{"cancel requested twice stays", Status{State: StateRunning, Attempt: 1, MaxAttempts: 3, CancelRequested: true},
			EventCancel, Status{State: StateRunning, Attempt: 1, MaxAttempts: 3, CancelRequested: true}},
		{"lease expired on cancel requested ends cancelled", Status{State: StateRunning, Attempt: 1, MaxAttempts: 3, CancelRequested: true},
			EventLeaseExpired, Status{State: StateCancelled, Attempt: 1, MaxAttempts: 3, CancelRequested: true, Code: CodeCancelled}},
		{"cancel requested beats delegate_lost", Status{State: StateRunning, Attempt: 3, MaxAttempts: 3, CancelRequested: true},
			EventLeaseExpired, Status{State: StateCancelled, Attempt: 3, MaxAttempts: 3, CancelRequested: true, Code: CodeCancelled}},
		{"delegate confirms cancelled", Status{State: StateRunning, Attempt: 1, MaxAttempts: 3, CancelRequested: true},
			EventCancelled, Status{State: StateCancelled, Attempt: 1, MaxAttempts: 3, CancelRequested: true, Code: CodeCancelled}},
		{"timeout running", Status{State: StateRunning, Attempt: 1, MaxAttempts: 3},
			EventTimeout, Status{State: StateTimedOut, Attempt: 1, MaxAttempts: 3, Code: CodeTimedOut}},
		{"affinity lost fails a queued task", Status{State: StateQueued, Attempt: 1, MaxAttempts: 3},
			EventAffinityLost, Status{State: StateFailed, Attempt: 1, MaxAttempts: 3, Code: CodeAffinityLost}},
		{"timeout leased", Status{State: StateLeased, Attempt: 1, MaxAttempts: 3},
			EventTimeout, Status{State: StateTimedOut, Attempt: 1, MaxAttempts: 3, Code: CodeTimedOut}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Transition(tt.in, tt.e)
			if err != nil {
				t.Fatalf("Transition: %v", err)
			}
			if got != tt.want {
				t.Errorf("Transition(%+v, %s) = %+v, want %+v", tt.in, tt.e, got, tt.want)
			}
		})
	}
}

// TestTransitionGate is the approval gate's life: a table of events on a
// task that needs approvers.
func TestTransitionGate(t *testing.T) {
	gate := func(st State, approvals, approved int) Status {
		return Status{State: st, MaxAttempts: 1, Approvals: approvals, Approved: approved}
	}
	tests := []struct {
		name string
		in   Status
		e    Event
		want Status
		err  bool
	}{
		{"deps met on a gate without approvals waits", gate(StatePending, 2, 0), EventDepsMet, gate(StateWaiting, 2, 0), false},
		{"deps met on a gate short of approvals waits", gate(StatePending, 2, 1), EventDepsMet, gate(StateWaiting, 2, 1), false},
		{"deps met on an approved gate succeeds", gate(StatePending, 2, 2), EventDepsMet, gate(StateSucceeded, 2, 2), false},
		{"deps met past the approvals succeeds", gate(StatePending, 1, 3), EventDepsMet, gate(StateSucceeded, 1, 3), false},
		{"deps unmet skips a gate", gate(StatePending, 1, 0), EventDepsUnmet,
			Status{State: StateSkipped, MaxAttempts: 1, Approvals: 1, Code: CodeDependencyUnmet}, false},
		{"approve on pending just counts", gate(StatePending, 1, 0), EventApprove, gate(StatePending, 1, 1), false},
		{"approve on waiting counts", gate(StateWaiting, 3, 1), EventApprove, gate(StateWaiting, 3, 2), false},
		{"last approval succeeds", gate(StateWaiting, 2, 1), EventApprove, gate(StateSucceeded, 2, 2), false},
		{"cancel a waiting gate", gate(StateWaiting, 2, 1), EventCancel,
			Status{State: StateCancelled, MaxAttempts: 1, Approvals: 2, Approved: 1, Code: CodeCancelled}, false},
		{"approve a succeeded gate", gate(StateSucceeded, 1, 1), EventApprove, gate(StateSucceeded, 1, 1), true},
		{"approve a cancelled gate", gate(StateCancelled, 1, 0), EventApprove, gate(StateCancelled, 1, 0), true},
		{"approve a skipped gate", gate(StateSkipped, 1, 0), EventApprove, gate(StateSkipped, 1, 0), true},
		{"approve a task that is no gate", gate(StatePending, 0, 0), EventApprove, gate(StatePending, 0, 0), true},
		{"a waiting gate is never leased", gate(StateWaiting, 1, 0), EventLease, gate(StateWaiting, 1, 0), true},
		{"a waiting gate takes no report", gate(StateWaiting, 1, 0), EventSucceed, gate(StateWaiting, 1, 0), true},
		{"a waiting gate takes no deps_met again", gate(StateWaiting, 1, 0), EventDepsMet, gate(StateWaiting, 1, 0), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Transition(tt.in, tt.e)
			if tt.err != errors.Is(err, ErrIllegalTransition) {
				t.Fatalf("Transition(%+v, %s): err = %v, want illegal %v", tt.in, tt.e, err, tt.err)
			}
			if got != tt.want {
				t.Errorf("Transition(%+v, %s) = %+v, want %+v", tt.in, tt.e, got, tt.want)
			}
		})
	}
}

func TestStateWaiting(t *testing.T) {
	if !StateWaiting.Valid() || StateWaiting.Terminal() || StateWaiting.Active() {
		t.Errorf("waiting: valid %v terminal %v active %v; want valid, neither terminal nor active",
			StateWaiting.Valid(), StateWaiting.Terminal(), StateWaiting.Active())
	}
	if States[1] != StateWaiting {
		t.Errorf("States[1] = %s, want waiting after pending", States[1])
	}
	if r := Resolve([]DependencyOutcome{{Condition: Always, State: StateWaiting}}); r != Wait {
		t.Errorf("a dependency that waits for approval: Resolve = %v, want Wait", r)
	}
}

func TestTransitionUnknownEvent(t *testing.T) {
	in := Status{State: StateRunning, Attempt: 1, MaxAttempts: 3}
	got, err := Transition(in, Event("explode"))
	if !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("err = %v, want illegal_transition", err)
	}
	if got != in {
		t.Errorf("status changed to %+v", got)
	}
}

func TestConditionMet(t *testing.T) {
	// met[condition] lists the end states that meet it.
	met := map[Condition][]State{
		"":        {StateSucceeded},
		OnSuccess: {StateSucceeded},
		OnFailure: {StateFailed, StateTimedOut},
		OnSkipped: {StateSkipped},
		Always:    {StateSucceeded, StateFailed, StateCancelled, StateSkipped, StateTimedOut},
		"bogus":   {},
	}
	for c, states := range met {
		for _, s := range States {
			want := false
			for _, m := range states {
				if m == s {
					want = true
				}
			}
			if got := c.Met(s); got != want {
				t.Errorf("Condition(%q).Met(%s) = %v, want %v", c, s, got, want)
			}
		}
	}
}

func TestResolve(t *testing.T) {
	d := func(c Condition, s State) DependencyOutcome { return DependencyOutcome{Condition: c, State: s} }
	tests := []struct {
		name string
		deps []DependencyOutcome
		want Readiness
	}{
		{"no dependencies", nil, Ready},
		{"dependency succeeded", []DependencyOutcome{d(OnSuccess, StateSucceeded)}, Ready},
		{"default condition is on_success", []DependencyOutcome{d("", StateSucceeded)}, Ready},
		{"default condition on failure skips", []DependencyOutcome{d("", StateFailed)}, Skip},
		{"dependency pending waits", []DependencyOutcome{d(OnSuccess, StatePending)}, Wait},
		{"dependency queued waits", []DependencyOutcome{d(Always, StateQueued)}, Wait},
		{"dependency leased waits", []DependencyOutcome{d(Always, StateLeased)}, Wait},
		{"dependency running waits", []DependencyOutcome{d(OnFailure, StateRunning)}, Wait},
		{"one of two running waits even if other unmet",
			[]DependencyOutcome{d(OnSuccess, StateFailed), d(OnSuccess, StateRunning)}, Wait},
		{"failed dependency skips on_success", []DependencyOutcome{d(OnSuccess, StateFailed)}, Skip},
		{"on_failure runs after failure", []DependencyOutcome{d(OnFailure, StateFailed)}, Ready},
		{"on_failure runs after timeout", []DependencyOutcome{d(OnFailure, StateTimedOut)}, Ready},
		{"on_failure skipped after success", []DependencyOutcome{d(OnFailure, StateSucceeded)}, Skip},
		{"on_failure skipped after cancel", []DependencyOutcome{d(OnFailure, StateCancelled)}, Skip},
		{"skip propagates through on_success", []DependencyOutcome{d(OnSuccess, StateSkipped)}, Skip},
		{"on_skipped runs after skip", []DependencyOutcome{d(OnSkipped, StateSkipped)}, Ready},
		{"on_skipped skipped after success", []DependencyOutcome{d(OnSkipped, StateSucceeded)}, Skip},
		{"always runs after cancel", []DependencyOutcome{d(Always, StateCancelled)}, Ready},
		{"always runs after skip", []DependencyOutcome{d(Always, StateSkipped)}, Ready},
		{"cancelled skips on_success", []DependencyOutcome{d(OnSuccess, StateCancelled)}, Skip},
		{"all met", []DependencyOutcome{d(OnSuccess, StateSucceeded), d(OnFailure, StateFailed), d(Always, StateCancelled)}, Ready},
		{"one unmet among met", []DependencyOutcome{d(OnSuccess, StateSucceeded), d(OnSuccess, StateTimedOut)}, Skip},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Resolve(tt.deps); got != tt.want {
				t.Errorf("Resolve = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestSkipPropagation walks a chain a → b → c (each on_success) with an
// always-dependent d on c: a failure skips b, which skips c, and d still
// runs, exactly as a store cascading Resolve and Transition would see it.
func TestSkipPropagation(t *testing.T) {
	chain := []Condition{OnSuccess, OnSuccess, Always}
	prev := StateFailed
	want := []State{StateSkipped, StateSkipped, StateQueued}
	for i, c := range chain {
		var e Event
		switch Resolve([]DependencyOutcome{{Condition: c, State: prev}}) {
		case Ready:
			e = EventDepsMet
		case Skip:
			e = EventDepsUnmet
		default:
			t.Fatalf("step %d: dependency in %s still waits", i, prev)
		}
		next, err := Transition(Status{State: StatePending, MaxAttempts: 1}, e)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if next.State != want[i] {
			t.Fatalf("step %d: %s, want %s", i, next.State, want[i])
		}
		prev = next.State
	}
}

// TestLeaseLifecycle replays a task that loses its delegate twice and
// then succeeds on the third attempt, and one that loses it every time.
func TestLeaseLifecycle(t *testing.T) {
	apply := func(s Status, events ...Event) Status {
		t.Helper()
		for _, e := range events {
			var err error
			if s, err = Transition(s, e); err != nil {
				t.Fatalf("%s: %v", e, err)
			}
		}
		return s
	}
	s := apply(Status{State: StatePending, MaxAttempts: 3}, EventDepsMet,
		EventLease, EventStart, EventLeaseExpired,
		EventLease, EventLeaseExpired,
		EventLease, EventStart, EventSucceed)
	if s.State != StateSucceeded || s.Attempt != 3 {
		t.Errorf("retried task = %+v, want succeeded on attempt 3", s)
	}
	s = apply(Status{State: StateQueued, MaxAttempts: 2},
		EventLease, EventLeaseExpired, EventLease, EventStart, EventLeaseExpired)
	if s.State != StateFailed || s.Code != CodeDelegateLost || s.Attempt != 2 {
		t.Errorf("lost task = %+v, want failed delegate_lost on attempt 2", s)
	}
	if _, err := Transition(s, EventLease); !errors.Is(err, ErrIllegalTransition) {
		t.Errorf("lease of a failed task: err = %v", err)
	}
}

func TestEventForReport(t *testing.T) {
	want := map[State]Event{
		StateRunning:   EventStart,
		StateSucceeded: EventSucceed,
		StateFailed:    EventFail,
		StateCancelled: EventCancelled,
		StateTimedOut:  EventTimeout,
	}
	for _, s := range States {
		e, ok := EventForReport(s)
		w, wok := want[s]
		if ok != wok || e != w {
			t.Errorf("EventForReport(%s) = %q, %v; want %q, %v", s, e, ok, w, wok)
		}
	}
}

func TestAnyOf(t *testing.T) {
	c := AnyOf(OnFailure, OnSkipped)
	if c != "on_failure|on_skipped" {
		t.Fatalf("AnyOf = %q", c)
	}
	if !c.Valid() {
		t.Fatalf("%q not valid", c)
	}
	for _, s := range States {
		want := s == StateFailed || s == StateTimedOut || s == StateSkipped
		if got := c.Met(s); got != want {
			t.Errorf("%q.Met(%s) = %v, want %v", c, s, got, want)
		}
	}
	for _, bad := range []Condition{"on_failure|", "|always", "on_failure|bogus", "bogus"} {
		if bad.Valid() {
			t.Errorf("%q valid", bad)
		}
		if bad.Met(StateFailed) {
			t.Errorf("%q met by failed", bad)
		}
	}
	if AnyOf(Always) != Always {
		t.Errorf("AnyOf of one condition is not that condition")
	}
}

// TestLeaseCheck is the lease rule: a named lease is renewed; an unnamed
// one ends at once after a complete statement, otherwise one TTL after it
// was given or renewed (an acquire answer may still be in flight).
func TestLeaseCheck(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ttl := 30 * time.Second
	tests := []struct {
		name string
		l    LeaseCheck
		now  time.Time
		want bool
	}{
		{"named is kept", LeaseCheck{Named: true, Renewed: t0}, t0.Add(time.Hour), false},
		{"named in a complete statement is kept", LeaseCheck{Named: true, Complete: true, Renewed: t0}, t0, false},
		{"unnamed in a complete statement ends at once", LeaseCheck{Complete: true, Renewed: t0}, t0, true},
		{"unnamed just leased is kept (acquire in flight)", LeaseCheck{Renewed: t0}, t0.Add(time.Second), false},
		{"unnamed at the TTL is kept", LeaseCheck{Renewed: t0}, t0.Add(ttl), false},
		{"unnamed past the TTL ends", LeaseCheck{Renewed: t0}, t0.Add(ttl + time.Nanosecond), true},
	}
	for _, tt := range tests {
		if got := tt.l.Ended(tt.now, ttl); got != tt.want {
			t.Errorf("%s: Ended = %v, want %v", tt.name, got, tt.want)
		}
	}
}
