package store

import "github.com/errandci/errand"

// CountParams says what Count leaves out: the manager's own bookkeeping
// (approval gates, its approval delegate) is not work an operator
// watches.
type CountParams struct {
	IgnoreTaskTypes []string
	IgnoreDelegates []string
}

// Counts is how much of what there is, read in one look: what the
// manager's gauges show. Every replica sharing a store reads the same.
type Counts struct {
	// Tasks counts the tasks that have not ended (pending, queued,
	// leased, running) by state; ended states are absent.
	Tasks map[errand.State]int64
	// Delegates counts registered delegates by state.
	Delegates map[errand.DelegateState]int64
	// Runs counts every run; SetupErrorRuns those whose config did not
	// load or validate.
	Runs, SetupErrorRuns int64
	// QueuedRuns counts the runs with a task that has not ended and none
	// that started (leased, running or ended other than cancelled or
	// skipped), the way pipeline.RunStatus reads a run as queued;
	// RunningRuns those with a task that has not ended and one that
	// started. Tasks of ignored types do not make a run started.
	QueuedRuns, RunningRuns int64
}
