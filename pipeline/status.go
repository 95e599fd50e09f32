package pipeline

import "github.com/errandci/errand"

// StageState is what a stage is doing, derived from its tasks.
type StageState string

// Stage states.
const (
	StagePending   StageState = "pending"   // not started: earlier stages have not ended
	StageWaiting   StageState = "waiting"   // ready but for the approvals it needs
	StageRunning   StageState = "running"   // started, some task has not ended
	StageSuccess   StageState = "success"   // ended, initialize and ordinary steps succeeded
	StageFailed    StageState = "failed"    // ended, initialize or an ordinary step failed or timed out
	StageSkipped   StageState = "skipped"   // never ran: its when or its depends said no
	StageCancelled StageState = "cancelled" // ended, one of its tasks was cancelled
)

// Phase is where a run is in its life, kept apart from its Result.
type Phase string

// Run phases.
const (
	PhaseQueued     Phase = "queued"     // no task has started
	PhaseRunning    Phase = "running"    // some task started, some has not ended
	PhaseFinished   Phase = "finished"   // every task ended
	PhaseSetupError Phase = "setuperror" // the config did not load or validate: no task exists
)

// Result is how a run ended.
type Result string

// Run results.
const (
	ResultUnknown   Result = "unknown" // not finished yet
	ResultSuccess   Result = "success"
	ResultFailed    Result = "failed"
	ResultCancelled Result = "cancelled"
)

// StageStatus derives a stage's state from its tasks (by id; a task
// missing from the map counts as pending) and the number of distinct
// approvers it has.
//
// Checked in this order: a skipped plan stage is skipped; a stage with a
// cancelled task is cancelled once all its tasks ended (running until
// then); a stage whose initialize task has not started is skipped if its
// dependencies say it will be, waiting if they let it run but approvals
// are missing, and pending otherwise; a started stage runs until every
// task ended, and then failed if initialize or an ordinary step failed or
// timed out, skipped if initialize was skipped, and success otherwise.
// Reporter steps and cleanup never change the outcome.
func StageStatus(ps PlanStage, tasks map[string]*errand.Task, approved int) StageState {
	if ps.Skipped {
		return StageSkipped
	}
	state := func(id string) errand.State {
		if t, ok := tasks[id]; ok && t.State != "" {
			return t.State
		}
		return errand.StatePending
	}
	ended, cancelled := true, false
	for _, id := range ps.taskIDs() {
		s := state(id)
		if !s.Terminal() {
			ended = false
		}
		if s == errand.StateCancelled {
			cancelled = true
		}
	}
	if ps.GateID != "" && state(ps.GateID) == errand.StateCancelled && state(ps.InitializeID) == errand.StateSkipped {
		// A gate cancelled before anything ran: the stage was cancelled,
		// not skipped.
		cancelled = true
	}
	if cancelled {
		if ended {
			return StageCancelled
		}
		return StageRunning
	}
	init := state(ps.InitializeID)
	if ps.GateID != "" && (init == errand.StatePending || init == errand.StateQueued) {
		return gatedStatus(ps, tasks, state)
	}
	if init == errand.StatePending || init == errand.StateQueued {
		var ready errand.Readiness = errand.Ready
		if t, ok := tasks[ps.InitializeID]; ok {
			deps := make([]errand.DependencyOutcome, len(t.DependsOn))
			for i, d := range t.DependsOn {
				deps[i] = errand.DependencyOutcome{Condition: d.Condition, State: state(d.Task)}
			}
			ready = errand.Resolve(deps)
		}
		switch {
		case ready == errand.Skip:
			return StageSkipped
		case ready == errand.Ready && approved < ps.Approval:
			return StageWaiting
		}
		return StagePending
	}
	if !ended {
		return StageRunning
	}
	switch init {
	case errand.StateSkipped:
		return StageSkipped
	case errand.StateFailed, errand.StateTimedOut:
		return StageFailed
	}
	for _, st := range ps.Steps {
		if st.Reporter {
			continue
		}
		if s := state(st.TaskID); s == errand.StateFailed || s == errand.StateTimedOut {
			return StageFailed
		}
	}
	return StageSuccess
}

// gatedStatus is the status of a stage with an approval gate that has not
// started: waiting while its gate waits for approvals, skipped when the
// gate's dependencies say it will be, pending otherwise.
func gatedStatus(ps PlanStage, tasks map[string]*errand.Task, state func(string) errand.State) StageState {
	switch state(ps.GateID) {
	case errand.StateWaiting:
		return StageWaiting
	case errand.StatePending:
		if t, ok := tasks[ps.GateID]; ok {
			deps := make([]errand.DependencyOutcome, len(t.DependsOn))
			for i, d := range t.DependsOn {
				deps[i] = errand.DependencyOutcome{Condition: d.Condition, State: state(d.Task)}
			}
			if errand.Resolve(deps) == errand.Skip {
				return StageSkipped
			}
		}
	}
	return StagePending
}

// RunStatus derives a run's phase and result from its plan, its tasks (by
// id) and the approvals of its stages (distinct approvers by stage
// name). The run is queued until a task starts and finished when every
// task ended; its result is unknown until then, and then failed if a stage
// failed, else cancelled if a stage was cancelled, else success.
func RunStatus(plan *Plan, tasks map[string]*errand.Task, approvals map[string]int) (Phase, Result) {
	started, ended := false, true
	for _, t := range plan.Tasks {
		s := errand.StatePending
		if got, ok := tasks[t.ID]; ok && got.State != "" {
			s = got.State
		}
		switch s {
		case errand.StatePending, errand.StateWaiting, errand.StateQueued:
			ended = false
		case errand.StateLeased, errand.StateRunning:
			started, ended = true, false
		case errand.StateSucceeded, errand.StateFailed, errand.StateTimedOut:
			started = true
		}
	}
	if !ended {
		if started {
			return PhaseRunning, ResultUnknown
		}
		return PhaseQueued, ResultUnknown
	}
	result := ResultSuccess
	for _, ps := range plan.Stages {
		switch StageStatus(ps, tasks, approvals[ps.Name]) {
		case StageFailed:
			return PhaseFinished, ResultFailed
		case StageCancelled:
			result = ResultCancelled
		}
	}
	return PhaseFinished, result
}

// SetupError is the status of a run whose config did not load or
// validate: it has no tasks and never runs, and its result is failed so
// that a command waiting for it exits non-zero.
func SetupError() (Phase, Result) {
	return PhaseSetupError, ResultFailed
}
