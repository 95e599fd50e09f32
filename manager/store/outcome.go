package store

import (
	"crypto/subtle"
	"encoding/json"

	"github.com/errandci/errand"
)

// What a task keeps beside its status after a transition is decided here,
// once for every store; stores only persist it.

// LeaseMatches reports, in constant time, whether given is the stored
// lease token. An empty stored token (no lease, or an expired one)
// matches nothing.
func LeaseMatches(stored, given string) bool {
	return stored != "" && subtle.ConstantTimeCompare([]byte(stored), []byte(given)) == 1
}

// OutcomeError is the error a task keeps after a transition to next from
// a status whose error was prev: the delegate's error for a failure it
// reports, the state machine's code for an outcome it decides, none for
// success or a task queued again.
func OutcomeError(prev *errand.Error, next errand.Status, reported *errand.Error) (code, reason string) {
	switch {
	case next.State == errand.StateQueued || next.State == errand.StateSucceeded:
		return "", ""
	case !next.State.Terminal():
		if prev != nil {
			return prev.Code, prev.Reason
		}
		return "", ""
	case reported != nil:
		code, reason = reported.Code, reported.Reason
		if code == "" {
			code = next.Code
		}
		if code == "" {
			code = errand.CodeTaskFailed
		}
		return code, reason
	case next.Code != "":
		return next.Code, reasonFor(next.Code)
	}
	return errand.CodeTaskFailed, "the task failed"
}

// OutcomeResult is the result a task keeps after a transition to next:
// whatever way a delegate reports that a task ended, what it sends (an
// exit code, a partial output) is kept for the user and for the
// dependents that run on failure; otherwise the result stays.
func OutcomeResult(prev json.RawMessage, next errand.Status, reported json.RawMessage) json.RawMessage {
	if next.State.Terminal() && len(reported) > 0 {
		return reported
	}
	return prev
}

func reasonFor(code string) string {
	switch code {
	case errand.CodeDelegateLost:
		return "the delegate stopped heartbeating and no attempts remain"
	case errand.CodeAffinityLost:
		return "the delegate this task must follow is gone and no live delegate of its group may stand in"
	case errand.CodeTimedOut:
		return "the task ran past its timeout"
	case errand.CodeCancelled:
		return "cancelled by a user"
	case errand.CodeDependencyUnmet:
		return "a dependency did not meet its condition"
	}
	return code
}

// StandIn reports whether one of live, the active delegates of the group
// of a lost or gone delegate, may run t in its place: t follows a task
// that delegate ran (affinity), and a delegate of the same group takes
// over what a lost one left (sibling cleanup). When none may, the task
// takes errand.EventAffinityLost.
func StandIn(t *errand.Task, live []*errand.Delegate) bool {
	for _, d := range live {
		if d.Matches(t) {
			return true
		}
	}
	return false
}
