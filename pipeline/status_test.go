package pipeline

import (
	"testing"

	"github.com/errandci/errand"
)

// statusStage is a stage with initialize i, ordinary step s, reporter
// step r and cleanup c; i depends on upstream task u (on_success).
var statusStage = PlanStage{Name: "x", InitializeID: "i", CleanupID: "c", Approval: 1,
	Steps: []PlanStep{{Name: "s", TaskID: "s"}, {Name: "r", TaskID: "r", Reporter: true}}}

// Task states, short, for the tables.
const (
	P  = errand.StatePending
	W  = errand.StateWaiting
	Q  = errand.StateQueued
	L  = errand.StateLeased
	R  = errand.StateRunning
	S  = errand.StateSucceeded
	F  = errand.StateFailed
	K  = errand.StateSkipped
	C  = errand.StateCancelled
	TO = errand.StateTimedOut
)

func taskStates(states map[string]errand.State) map[string]*errand.Task {
	out := map[string]*errand.Task{}
	for id, s := range states {
		out[id] = &errand.Task{ID: id, State: s}
	}
	if t, ok := out["i"]; ok {
		t.DependsOn = []errand.Dependency{{Task: "u", Condition: errand.OnSuccess}}
	}
	return out
}

func TestStageStatus(t *testing.T) {
	tests := []struct {
		name     string
		u, i, s  errand.State
		r, c     errand.State
		approved int
		skipped  bool
		want     StageState
	}{
		{"upstream running", R, P, P, P, P, 1, false, StagePending},
		{"ready, not approved", S, P, P, P, P, 0, false, StageWaiting},
		{"upstream running, not approved", R, P, P, P, P, 0, false, StagePending},
		{"approved, queued", S, Q, P, P, P, 1, false, StagePending},
		{"upstream failed: will be skipped", F, P, P, P, P, 0, false, StageSkipped},
		{"initialize leased", S, L, P, P, P, 1, false, StageRunning},
		{"step running", S, S, R, P, P, 1, false, StageRunning},
		{"cleanup running", S, S, S, S, R, 1, false, StageRunning},
		{"all succeeded", S, S, S, S, S, 1, false, StageSuccess},
		{"reporter skipped", S, S, S, K, S, 1, false, StageSuccess},
		{"reporter failed", S, S, S, F, S, 1, false, StageSuccess},
		{"cleanup failed", S, S, S, S, F, 1, false, StageSuccess},
		{"step failed", S, S, F, S, S, 1, false, StageFailed},
		{"step failed, cleanup running", S, S, F, S, R, 1, false, StageRunning},
		{"step timed out", S, S, TO, S, S, 1, false, StageFailed},
		{"initialize failed", S, F, K, K, S, 1, false, StageFailed},
		{"initialize timed out", S, TO, K, K, S, 1, false, StageFailed},
		{"initialize skipped", F, K, K, K, K, 1, false, StageSkipped},
		{"skipped in plan", "", "", "", "", "", 0, true, StageSkipped},
		{"cancelled while waiting", S, C, K, K, K, 0, false, StageCancelled},
		{"step cancelled, cleanup running", S, S, C, K, R, 1, false, StageRunning},
		{"step cancelled", S, S, C, K, S, 1, false, StageCancelled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := statusStage
			ps.Skipped = tt.skipped
			states := taskStates(map[string]errand.State{"u": tt.u, "i": tt.i, "s": tt.s, "r": tt.r, "c": tt.c})
			if got := StageStatus(ps, states, tt.approved); got != tt.want {
				t.Errorf("StageStatus = %s, want %s", got, tt.want)
			}
		})
	}
	// Tasks not yet in the map count as pending.
	if got := StageStatus(statusStage, map[string]*errand.Task{}, 0); got != StageWaiting {
		t.Errorf("no tasks known, no approval: %s", got)
	}
	if got := StageStatus(statusStage, map[string]*errand.Task{}, 1); got != StagePending {
		t.Errorf("no tasks known, approved: %s", got)
	}
}

func TestRunStatus(t *testing.T) {
	// Two stages: a (ia, sa, ca) and b (ib, sb, cb), b needing approval.
	plan := &Plan{
		Stages: []PlanStage{
			{Name: "a", InitializeID: "ia", Steps: []PlanStep{{Name: "s", TaskID: "sa"}}, CleanupID: "ca"},
			{Name: "b", InitializeID: "ib", Steps: []PlanStep{{Name: "s", TaskID: "sb"}}, CleanupID: "cb", Approval: 1},
			{Name: "never", Skipped: true},
		},
	}
	for _, id := range []string{"ia", "sa", "ca", "ib", "sb", "cb"} {
		plan.Tasks = append(plan.Tasks, &errand.Task{ID: id})
	}
	const (
		P = errand.StatePending
		Q = errand.StateQueued
		R = errand.StateRunning
		S = errand.StateSucceeded
		F = errand.StateFailed
		K = errand.StateSkipped
		C = errand.StateCancelled
	)
	tests := []struct {
		name   string
		states [6]errand.State // ia sa ca ib sb cb
		phase  Phase
		result Result
	}{
		{"nothing started", [6]errand.State{P, P, P, P, P, P}, PhaseQueued, ResultUnknown},
		{"queued", [6]errand.State{Q, P, P, P, P, P}, PhaseQueued, ResultUnknown},
		{"running", [6]errand.State{S, R, P, P, P, P}, PhaseRunning, ResultUnknown},
		{"waiting for approval", [6]errand.State{S, S, S, P, P, P}, PhaseRunning, ResultUnknown},
		{"failed but cleaning up", [6]errand.State{S, F, R, K, K, K}, PhaseRunning, ResultUnknown},
		{"success", [6]errand.State{S, S, S, S, S, S}, PhaseFinished, ResultSuccess},
		{"failed", [6]errand.State{S, F, S, K, K, K}, PhaseFinished, ResultFailed},
		{"second stage failed", [6]errand.State{S, S, S, S, F, S}, PhaseFinished, ResultFailed},
		{"cancelled before start", [6]errand.State{C, K, K, C, K, K}, PhaseFinished, ResultCancelled},
		{"cancelled while running", [6]errand.State{S, C, S, C, K, K}, PhaseFinished, ResultCancelled},
		{"failed then cancelled", [6]errand.State{S, F, S, C, K, K}, PhaseFinished, ResultFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tasks := map[string]*errand.Task{}
			for i, id := range []string{"ia", "sa", "ca", "ib", "sb", "cb"} {
				tasks[id] = &errand.Task{ID: id, State: tt.states[i]}
			}
			tasks["ib"].DependsOn = []errand.Dependency{{Task: "sa", Condition: errand.OnSuccess}}
			phase, result := RunStatus(plan, tasks, map[string]int{"b": 1})
			if phase != tt.phase || result != tt.result {
				t.Errorf("RunStatus = %s %s, want %s %s", phase, result, tt.phase, tt.result)
			}
		})
	}
	if p, r := SetupError(); p != PhaseSetupError || r != ResultFailed {
		t.Errorf("SetupError = %s %s", p, r)
	}
	// A run whose every stage was skipped before it started is done.
	empty := &Plan{Stages: []PlanStage{{Name: "a", Skipped: true}}}
	if p, r := RunStatus(empty, nil, nil); p != PhaseFinished || r != ResultSuccess {
		t.Errorf("all skipped: %s %s", p, r)
	}
}

// A stage with an approval gate g (which depends on upstream task u, and
// which initialize i depends on) reads its state from the gate until it
// starts.
func TestGatedStageStatus(t *testing.T) {
	ps := statusStage
	ps.GateID = "g"
	tests := []struct {
		name       string
		u, g, i, s errand.State
		want       StageState
	}{
		{"upstream running", R, P, P, P, StagePending},
		{"upstream failed, gate to be skipped", F, P, P, P, StageSkipped},
		{"gate waiting", S, W, P, P, StageWaiting},
		{"gate approved, initialize queued", S, S, Q, P, StagePending},
		{"gate skipped", F, K, K, K, StageSkipped},
		{"gate cancelled before anything ran", S, C, K, K, StageCancelled},
		{"running", S, S, S, R, StageRunning},
		{"success", S, S, S, S, StageSuccess},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tasks := map[string]*errand.Task{
				"u": {ID: "u", State: tt.u},
				"g": {ID: "g", State: tt.g, DependsOn: []errand.Dependency{{Task: "u", Condition: errand.OnSuccess}}},
				"i": {ID: "i", State: tt.i, DependsOn: []errand.Dependency{{Task: "g", Condition: errand.OnSuccess}}},
				"s": {ID: "s", State: tt.s},
				"r": {ID: "r", State: tt.s},
				"c": {ID: "c", State: tt.s},
			}
			// The approvals counted by the run do not matter: the gate says.
			for _, approved := range []int{0, 1} {
				if got := StageStatus(ps, tasks, approved); got != tt.want {
					t.Errorf("approved %d: StageStatus = %s, want %s", approved, got, tt.want)
				}
			}
		})
	}
}
