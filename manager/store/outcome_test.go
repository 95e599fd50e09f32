package store

import (
	"encoding/json"
	"testing"

	"github.com/errandci/errand"
)

func TestOutcomeError(t *testing.T) {
	prev := &errand.Error{Code: "exit_code", Reason: "exited 2"}
	reported := &errand.Error{Code: "exit_code", Reason: "exited 3"}
	cases := []struct {
		name       string
		prev       *errand.Error
		next       errand.Status
		reported   *errand.Error
		code, want string
	}{
		{"success clears", prev, errand.Status{State: errand.StateSucceeded}, nil, "", ""},
		{"requeued clears", prev, errand.Status{State: errand.StateQueued}, nil, "", ""},
		{"running keeps", prev, errand.Status{State: errand.StateRunning}, nil, "exit_code", "exited 2"},
		{"reported failure", nil, errand.Status{State: errand.StateFailed}, reported, "exit_code", "exited 3"},
		{"reported without code takes the machine's", nil, errand.Status{State: errand.StateTimedOut, Code: errand.CodeTimedOut}, &errand.Error{Reason: "slow"}, errand.CodeTimedOut, "slow"},
		{"reported without any code", nil, errand.Status{State: errand.StateFailed}, &errand.Error{Reason: "boom"}, errand.CodeTaskFailed, "boom"},
		{"decided by the machine", nil, errand.Status{State: errand.StateFailed, Code: errand.CodeDelegateLost}, nil, errand.CodeDelegateLost, "the delegate stopped heartbeating and no attempts remain"},
		{"failure with nothing said", nil, errand.Status{State: errand.StateFailed}, nil, errand.CodeTaskFailed, "the task failed"},
	}
	for _, c := range cases {
		code, reason := OutcomeError(c.prev, c.next, c.reported)
		if code != c.code || reason != c.want {
			t.Errorf("%s: got %q %q, want %q %q", c.name, code, reason, c.code, c.want)
		}
	}
}

func TestOutcomeResult(t *testing.T) {
	prev, sent := json.RawMessage(`{"a":1}`), json.RawMessage(`{"exit_code":2}`)
	for _, c := range []struct {
		state errand.State
		sent  json.RawMessage
		want  string
	}{
		{errand.StateFailed, sent, string(sent)},
		{errand.StateSucceeded, sent, string(sent)},
		{errand.StateRunning, sent, string(prev)},
		{errand.StateFailed, nil, string(prev)},
	} {
		if got := OutcomeResult(prev, errand.Status{State: c.state}, c.sent); string(got) != c.want {
			t.Errorf("%s with %s: %s, want %s", c.state, c.sent, got, c.want)
		}
	}
}

func TestLeaseMatches(t *testing.T) {
	if !LeaseMatches("abc", "abc") || LeaseMatches("abc", "abd") || LeaseMatches("", "") {
		t.Fatal("LeaseMatches: a stored token matches itself only, an empty one nothing")
	}
}
