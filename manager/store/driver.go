package store

import (
	"context"
	"errors"
	"time"

	"github.com/errandci/errand"
)

// Driver is what the engine (manager/store/engine) needs of a database:
// rows read and written by id and in batches, inside transactions, and
// no decision of its own. Every rule of the task life cycle (validation,
// transitions, outcomes, dependency release, approvals) is the engine's;
// a driver holds only its SQL dialect, its transactions and what makes
// them fast (group commit, row caches, SKIP LOCKED, NOTIFY).
//
// The methods of DriverRows are the parts of Store that only read or
// write rows as they are given; the engine serves them as they are.
type Driver interface {
	DriverRows
	// Write runs fn in one write transaction. The changes fn emits
	// (DriverTx.Emit) are delivered to subscribers once, after the commit
	// made them durable, and not at all if the transaction fails. fn may
	// be run again when the database aborted a try (a deadlock, a
	// serialisation failure): it must start afresh each time.
	Write(ctx context.Context, fn func(tx DriverTx) error) error
}

// DriverRows are the methods of Store that a driver serves directly:
// reads, and writes that decide nothing. Their contracts are Store's,
// except that DelegateRegister is given parameters the engine checked.
type DriverRows interface {
	TaskGet(ctx context.Context, id string) (*errand.Task, error)
	TaskList(ctx context.Context, p TaskListParams) ([]*errand.Task, error)
	// TaskLease is TaskAcquire with its parameters checked (Delegate
	// set, Max > 0) and what a lease does to a queued task, as the
	// engine decided it: the driver picks and leases in one go, the way
	// its database does that best (SKIP LOCKED in postgres).
	TaskLease(ctx context.Context, p TaskAcquireParams, lease LeaseStep) ([]*errand.Task, error)
	TaskCancelRequests(ctx context.Context, delegateID string) ([]string, error)

	LogRead(ctx context.Context, p LogReadParams) ([]string, error)
	LogSealList(ctx context.Context, limit int) ([]string, error)
	LogObjects(ctx context.Context, taskID string) ([]LogObject, bool, error)

	DelegateRegister(ctx context.Context, p DelegateRegisterParams) (*errand.Delegate, error)
	DelegateGet(ctx context.Context, id string) (*errand.Delegate, error)
	DelegateTokenHash(ctx context.Context, id string) (string, error)
	DelegateList(ctx context.Context, p DelegateListParams) ([]*errand.Delegate, error)
	DelegateTouch(ctx context.Context, p DelegateTouchParams) error
	DelegateUpdate(ctx context.Context, p DelegateUpdateParams) (*errand.Delegate, error)

	Subscribe(fn func(Change)) (unsubscribe func())

	RunGet(ctx context.Context, id string) (*Run, error)
	RunList(ctx context.Context, p RunListParams) ([]*Run, error)
	RunTaskStats(ctx context.Context, p RunTaskStatsParams) (map[string]*RunTaskStats, error)
	RunCancel(ctx context.Context, p RunCancelParams) (*Run, error)

	// UserStore decides nothing beyond its rows' own checks.
	UserStore
	DeliveryStore
	ArtifactStore
	// RetentionStore deletes runs, expired artifacts and their objects.
	RetentionStore
	// PipelineRows stores pipelines and reads the origins of runs.
	PipelineRows

	Count(ctx context.Context, p CountParams) (*Counts, error)
	Ping(ctx context.Context) error
	Close() error
}

// DriverTx is one write transaction of a driver: row reads and writes,
// each conditional on what the engine read.
type DriverTx interface {
	// TaskRow reads one task for writing: no other transaction writes
	// it until this one ends, or the write is conditional on its
	// Version (TaskUpdate). errand.ErrNotFound when there is none.
	TaskRow(id string) (*TaskRow, error)
	// TaskRows reads several tasks for writing, as TaskRow does; ids
	// that do not exist are absent from the map.
	TaskRows(ids []string) (map[string]*TaskRow, error)
	// TaskUpdates writes next[i] over prev[i] for every i as TaskUpdate
	// does, in as few statements as the driver can: ErrStale, and
	// nothing written that the caller may keep, when any row is no
	// longer as read.
	TaskUpdates(prev, next []*TaskRow) error
	// TaskStates reads the states of existing tasks that new tasks refer
	// to, such that none of them ends unseen before this transaction
	// commits. Unknown ids are absent from the map.
	TaskStates(ids []string) (map[string]errand.State, error)
	// TaskInsert inserts new tasks in the order given, with their
	// dependency edges, and marks the tasks they depend on as having
	// dependents. A row whose id exists fails the whole insert with
	// errand.ErrConflict ("tasks[i].id: task X exists", i its index).
	TaskInsert(rows []*TaskRow) error
	// TaskUpdate writes next over prev, a row read in this transaction,
	// if the row is still as read: ErrStale otherwise. It sets
	// next.Version.
	TaskUpdate(prev, next *TaskRow) error
	// TaskPendingDependents lists the pending tasks that depend on id.
	TaskPendingDependents(id string) ([]string, error)
	// TaskDependencyOutcomes lists a task's dependencies, in DependsOn
	// order, each with its condition and the state its task is in now.
	TaskDependencyOutcomes(id string) ([]errand.DependencyOutcome, error)

	// TaskRowsHeld reads the active (leased, running) tasks of a
	// delegate for writing, oldest first.
	TaskRowsHeld(delegateID string) ([]*TaskRow, error)
	// TaskRowsUnrenewed reads for writing the active tasks whose lease was
	// given or last renewed before before, oldest first, each with that
	// time. Rows another transaction is writing are skipped: it decides
	// them.
	TaskRowsUnrenewed(before time.Time) ([]RenewedRow, error)
	// TaskRowsOverdue reads for writing the running tasks with a timeout
	// that started more than their timeout plus grace before now, oldest
	// first, skipping rows another transaction is writing.
	TaskRowsOverdue(now time.Time, grace time.Duration) ([]*TaskRow, error)
	// TaskRowsOrphaned reads for writing the queued tasks whose affinity
	// task was run by a delegate that is gone, or lost with no heartbeat
	// since before lostBefore, oldest first, each with that delegate's
	// group, skipping rows another transaction is writing.
	TaskRowsOrphaned(lostBefore time.Time) ([]OrphanRow, error)

	// DelegatesLose marks lost the delegates that are not, whose last
	// heartbeat is before before, and returns their ids, oldest first. A
	// delegate is lost by one transaction only.
	DelegatesLose(before time.Time) ([]string, error)
	// DelegatesActive reads the active delegates of a group, oldest
	// first.
	DelegatesActive(group string) ([]*errand.Delegate, error)
	// DelegateRemove deletes a delegate's row: errand.ErrNotFound when
	// there is none.
	DelegateRemove(id string) error

	// LogTail reads for writing what an append to a task's log checks:
	// errand.ErrNotFound when there is no task.
	LogTail(taskID string) (LogTail, error)
	// LogAdd stores lines at first, the end of the log as LogTail read it,
	// and moves the end past them.
	LogAdd(taskID string, first int64, lines []string) error
	// LogSeal records that a task's log lives in these objects, marks it
	// sealed and drops its lines from the database.
	LogSeal(taskID string, objects []LogObject) error

	// RunInsert inserts a run (errand.ErrConflict for an id that exists)
	// and sets its CreatedAt to now.
	RunInsert(r *Run, now time.Time) error
	// RunApprovalAdd records an approver of a stage of a run and says
	// whether it is new; errand.ErrNotFound for an unknown run.
	RunApprovalAdd(p RunApproveParams) (added bool, err error)
	// RunApprovalCount counts the distinct approvers of a stage.
	RunApprovalCount(runID, stage string) (int, error)

	// PipelineTx records the origins of runs.
	PipelineTx

	// Emit records a change, delivered after the commit.
	Emit(c Change)
}

// RenewedRow is an active task with the time its lease was given or
// last renewed.
type RenewedRow struct {
	Row     *TaskRow
	Renewed time.Time
}

// OrphanRow is a queued task with the group of the delegate that ran its
// affinity task.
type OrphanRow struct {
	Row   *TaskRow
	Group string
}

// LeaseStep is what a lease does to a queued task: the state it takes,
// and how many attempts it adds.
type LeaseStep struct {
	State    errand.State
	Attempts int
}

// LogTail is the state of a task's log that an append checks.
type LogTail struct {
	State      errand.State
	LeaseToken string
	DelegateID string
	// Lines is the offset of the next line; Sealed is set once the log
	// moved to object storage.
	Lines  int64
	Sealed bool
}

// ErrStale says that a conditional write found the row changed since it
// was read. The engine reads it again and decides afresh.
var ErrStale = errors.New("row changed since it was read")

// TaskRow is a task as a driver stores it: the domain task and the
// columns that only the store sees.
type TaskRow struct {
	errand.Task
	// Seq orders tasks by creation; drivers address rows by it.
	Seq int64
	// LeaseToken is the current lease's token, empty when none is.
	LeaseToken string
	// HasDependents is set once some task depends on this one.
	HasDependents bool
	// Version is the driver's mark of the row as read, for writes
	// conditional on it (0 when a driver locks rows instead).
	Version int64
}

// Status is the part of the row that the state machine reads.
func (r *TaskRow) Status() errand.Status {
	return errand.Status{State: r.State, Attempt: r.Attempt, MaxAttempts: r.MaxAttempts,
		CancelRequested: r.CancelRequested, Approvals: r.Approvals, Approved: r.Approved}
}

// Detached returns a copy of the domain task, detached from the row.
func (r *TaskRow) Detached() *errand.Task {
	t := r.Task
	return &t
}
