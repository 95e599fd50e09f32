// Package store defines how the manager persists tasks, delegates and logs:
// the Store interface that every backend implements (sqlite, postgres) and
// the parameters of its methods. The conformance suite in storetest is the
// executable form of this contract.
//
// Stores decide nothing on their own: every state change goes through
// errand.Transition and errand.Resolve, and a store only persists what they
// decide, atomically, conditional on the state it expects.
package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/errandci/errand"
)

// Store persists the manager's state. Every method is safe for concurrent
// use. Errors are *errand.Error values (compare with errors.Is against
// errand.ErrNotFound, errand.ErrLeaseLost, …) or wrap them; anything else
// is an internal error.
type Store interface {
	// TaskCreate inserts tasks atomically, all or none. IDs are set by the
	// caller and must be new (errand.ErrConflict otherwise). A task may
	// depend on tasks that exist or on tasks earlier or later in the same
	// batch; an unknown dependency or affinity, or a cycle, is
	// errand.ErrInvalid with the offending path in the reason, and nothing
	// is written. A task whose dependencies have all ended is resolved at
	// once (queued or skipped). MaxAttempts 0 means
	// errand.DefaultMaxAttempts. A batch is created in its own order
	// (TaskList and the queue see it so). Returns the tasks as stored.
	TaskCreate(ctx context.Context, p TaskCreateParams) ([]*errand.Task, error)
	// TaskGet returns one task, errand.ErrNotFound if there is none.
	TaskGet(ctx context.Context, id string) (*errand.Task, error)
	// TaskList returns tasks matching the filter, oldest first.
	TaskList(ctx context.Context, p TaskListParams) ([]*errand.Task, error)
	// TaskAcquire leases up to p.Max queued tasks that the delegate may
	// run, highest priority first, then oldest queued first. Each returned
	// task has Lease and Dependencies set. No task is ever leased to two
	// delegates at once, whatever the concurrency. Acquiring is a sign of
	// life: it records the delegate's heartbeat in the same transaction
	// (errand.ErrNotFound for a delegate that is not registered).
	TaskAcquire(ctx context.Context, p TaskAcquireParams) ([]*errand.Task, error)
	// TaskReport applies a delegate's status report (running, succeeded,
	// failed, cancelled, timed_out) if the lease is still current:
	// errand.ErrLeaseLost when the token is not the task's current lease,
	// errand.ErrForbidden when it is but another delegate holds it,
	// errand.ErrIllegalTransition when the state machine refuses. Ending a
	// task releases or skips its dependents in the same transaction.
	// Reporting the state the task is already in, under the lease that put
	// it there, is a no-op that returns the task (a retried report); the
	// lease token of an ended task therefore stays valid for that. A lease
	// that expired (TaskSweep, DelegateDelete) reports nothing more:
	// errand.ErrLeaseLost.
	TaskReport(ctx context.Context, p TaskReportParams) (*errand.Task, error)
	// TaskCancel cancels a task: a pending or queued task ends cancelled
	// at once (and its dependents are resolved); a leased or running one
	// gets cancel_requested, which its delegate learns from
	// TaskCancelRequests. Cancelling an ended task is
	// errand.ErrIllegalTransition.
	TaskCancel(ctx context.Context, p TaskCancelParams) (*errand.Task, error)
	// TaskCancelRequests lists the active tasks of a delegate that a user
	// asked to cancel.
	TaskCancelRequests(ctx context.Context, delegateID string) ([]string, error)
	// TaskSweep expires what time has ended: delegates whose last heartbeat
	// is older than p.LeaseTTL become lost and their active tasks take
	// errand.EventLeaseExpired; so does every active task whose lease was
	// given or last renewed (DelegateTouch with Running) more than
	// p.LeaseTTL ago, though its delegate lives (errand.LeaseCheck);
	// running tasks past their timeout plus p.TimeoutGrace take
	// errand.EventTimeout; a queued task whose affinity task's delegate
	// is gone, or lost for longer than p.LeaseTTL + p.AffinityGrace, and
	// that no active delegate of that delegate's group matching the task
	// may stand in for (StandIn), takes errand.EventAffinityLost.
	// Safe to run on several managers at once: each expiry happens once.
	TaskSweep(ctx context.Context, p TaskSweepParams) (TaskSweepResult, error)
	// TaskRelease applies a delegate's complete statement of what it
	// holds, made when it (re)starts: each of its active tasks not in
	// p.Held takes errand.EventLeaseExpired at once (errand.LeaseCheck
	// with Complete). Unknown delegates hold nothing.
	TaskRelease(ctx context.Context, p TaskReleaseParams) (TaskSweepResult, error)

	// LogAppend appends lines to an active task's log at p.Offset, fenced
	// by the lease like TaskReport. Lines already stored at those offsets
	// are not stored again (a retried append is a no-op), so appends are
	// idempotent; an offset past the end is errand.ErrLogOffset with the
	// expected offset in the reason. Returns the offset after the last
	// line stored. Once the task has ended only a retry is accepted: new
	// lines are errand.ErrLeaseLost.
	LogAppend(ctx context.Context, p LogAppendParams) (int64, error)
	// LogRead returns up to p.Limit unsealed lines of a task's log from
	// p.Offset. Lines of a sealed log are in object storage: see
	// LogObjects.
	LogRead(ctx context.Context, p LogReadParams) ([]string, error)
	// LogSealList returns up to limit ended tasks whose logs are not
	// sealed yet, oldest ended first.
	LogSealList(ctx context.Context, limit int) ([]string, error)
	// LogSeal records that a task's log now lives in these objects and
	// drops its lines from the store. Sealing twice is a no-op; sealing the
	// log of a task that has not ended is errand.ErrIllegalTransition.
	LogSeal(ctx context.Context, p LogSealParams) error
	// LogObjects returns the objects of a sealed log in line order, and
	// whether the log is sealed.
	LogObjects(ctx context.Context, taskID string) ([]LogObject, bool, error)

	// DelegateRegister inserts a delegate with the hash of its token.
	DelegateRegister(ctx context.Context, p DelegateRegisterParams) (*errand.Delegate, error)
	// DelegateGet returns one delegate, errand.ErrNotFound if there is none.
	DelegateGet(ctx context.Context, id string) (*errand.Delegate, error)
	// DelegateTokenHash returns the hash of a delegate's token.
	DelegateTokenHash(ctx context.Context, id string) (string, error)
	// DelegateList returns delegates, oldest first.
	DelegateList(ctx context.Context, p DelegateListParams) ([]*errand.Delegate, error)
	// DelegateTouch records heartbeats of many delegates in one write: each
	// listed delegate's last heartbeat becomes p.Now and a lost one
	// becomes active again; the leases of the active tasks it names in
	// p.Running are renewed to p.Now, and only those. Unknown ids are
	// ignored.
	DelegateTouch(ctx context.Context, p DelegateTouchParams) error
	// DelegateUpdate changes the fields that are set in p.
	DelegateUpdate(ctx context.Context, p DelegateUpdateParams) (*errand.Delegate, error)
	// DelegateDelete removes a delegate. Its active tasks take
	// errand.EventLeaseExpired.
	DelegateDelete(ctx context.Context, p DelegateDeleteParams) error

	// Subscribe calls fn after every committed change that may let a
	// waiting long-poll or log follower return. A store shared by several
	// managers also delivers the changes other managers make. fn must not
	// block. The returned function unsubscribes.
	Subscribe(fn func(Change)) (unsubscribe func())

	// RunStore persists pipeline runs.
	RunStore

	// ReportStore applies the reports a delegate sends together.
	ReportStore

	// UserStore persists users, tokens and the audit trail.
	UserStore

	// DeliveryStore persists webhook deliveries and hook secrets.
	DeliveryStore
	// ArtifactStore persists the records of artifacts.
	ArtifactStore
	// RetentionStore deletes runs, expired artifacts and their objects.
	RetentionStore
	// PipelineStore persists named pipelines and the origins of runs.
	PipelineStore
	LeaseChecker

	// Count counts tasks that have not ended, delegates and runs by state,
	// with a few aggregate queries: cheap enough to run on every scrape of
	// the metrics.
	Count(ctx context.Context, p CountParams) (*Counts, error)

	// Ping checks that the store answers.
	Ping(ctx context.Context) error
	// Close releases the store's resources.
	Close() error
}

// TaskCreateParams holds tasks to insert. Each task has ID, Type, Data,
// Selector, DependsOn, Affinity, Priority, Timeout, MaxAttempts and RunID
// set; the store sets State, Attempt and timestamps.
type TaskCreateParams struct {
	Tasks []*errand.Task
	Now   time.Time
}

// TaskListParams filters TaskList. Zero fields do not filter.
type TaskListParams struct {
	States []errand.State
	Type   string
	RunID  string
	// Desc lists newest first; the default is oldest first (creation
	// order).
	Desc bool
	// After returns the tasks that follow the task with this id in the
	// chosen order (paging): created after it, or before it with Desc. An
	// unknown id starts from the beginning of the order.
	After string
	Limit int // 0: 100
}

// TaskAcquireParams asks for tasks for one delegate.
type TaskAcquireParams struct {
	Delegate *errand.Delegate
	Max      int
	Now      time.Time
}

// TaskReportParams is a delegate's report on a task it holds.
type TaskReportParams struct {
	TaskID     string
	DelegateID string
	LeaseToken string
	State      errand.State
	Result     json.RawMessage
	Error      *errand.Error
	Now        time.Time
}

// TaskCancelParams asks to cancel a task.
type TaskCancelParams struct {
	TaskID string
	Now    time.Time
}

// TaskSweepParams says what has expired at Now.
type TaskSweepParams struct {
	Now          time.Time
	LeaseTTL     time.Duration
	TimeoutGrace time.Duration
	// AffinityGrace is how long a lost delegate is waited for, past its
	// lease TTL, before the tasks that must follow it and that no sibling
	// may take fail affinity_lost; a deregistered one is not waited for.
	AffinityGrace time.Duration
}

// TaskSweepResult says what a sweep did.
type TaskSweepResult struct {
	LostDelegates []string
	Requeued      []string // lease expired, attempts left
	Failed        []string // lease expired, none left (delegate_lost)
	Cancelled     []string // lease expired on a cancel-requested task
	TimedOut      []string
	AffinityLost  []string // queued, and no live delegate may run it
}

// TaskReleaseParams is a delegate's complete statement of the tasks it
// holds.
type TaskReleaseParams struct {
	DelegateID string
	Held       []string
	Now        time.Time
}

// LogAppendParams appends lines to a task's log.
type LogAppendParams struct {
	TaskID     string
	DelegateID string
	LeaseToken string
	Offset     int64
	Lines      []string
	Now        time.Time
}

// LogReadParams reads unsealed lines.
type LogReadParams struct {
	TaskID string
	Offset int64
	Limit  int // 0: 10000
}

// LogSealParams records the objects of a sealed log.
type LogSealParams struct {
	TaskID  string
	Objects []LogObject
}

// LogObject is one object of a sealed log, holding Lines lines from
// FirstLine on.
type LogObject struct {
	Key       string `json:"key"`
	FirstLine int64  `json:"first_line"`
	Lines     int64  `json:"lines"`
	Size      int64  `json:"size"`
}

// DelegateRegisterParams inserts a delegate. Delegate.ID is set by the
// caller; State, CreatedAt and LastHeartbeat by the store.
type DelegateRegisterParams struct {
	Delegate  *errand.Delegate
	TokenHash string
	Now       time.Time
}

// DelegateListParams filters DelegateList. Zero fields do not filter.
type DelegateListParams struct {
	Group  string
	States []errand.DelegateState
	// After returns delegates registered after the one with this id
	// (paging); Limit bounds the page, 0 for all.
	After string
	Limit int
}

// DelegateTouchParams records heartbeats.
type DelegateTouchParams struct {
	IDs []string
	Now time.Time
	// Running maps a delegate of IDs to the tasks its latest heartbeat
	// named: their leases are renewed.
	Running map[string][]string
}

// DelegateUpdateParams changes a delegate; nil fields are left alone.
type DelegateUpdateParams struct {
	ID             string
	State          *errand.DelegateState
	Overloaded     *bool
	DrainRequested *bool
}

// DelegateDeleteParams removes a delegate.
type DelegateDeleteParams struct {
	ID  string
	Now time.Time
}

// ChangeKind says what a Change is about.
type ChangeKind string

// Change kinds.
const (
	// ChangeTaskQueued: a task became queued (TaskType and TaskID set).
	ChangeTaskQueued ChangeKind = "task_queued"
	// ChangeTaskEnded: a task ended (TaskID set).
	ChangeTaskEnded ChangeKind = "task_ended"
	// ChangeCancelRequested: a user asked to cancel a task a delegate
	// holds (TaskID and DelegateID set).
	ChangeCancelRequested ChangeKind = "cancel_requested"
	// ChangeDrainRequested: a delegate was asked to drain (DelegateID).
	ChangeDrainRequested ChangeKind = "drain_requested"
	// ChangeLogAppended: lines were appended (TaskID, LogLines set).
	ChangeLogAppended ChangeKind = "log_appended"
	// ChangeDelegateDeleted: a delegate was deregistered (DelegateID):
	// every manager forgets its token.
	ChangeDelegateDeleted ChangeKind = "delegate_deleted"
	// ChangeTaskCreated: Count tasks of TaskType were created in
	// TaskState. A batch emits one per type and state it holds, not one
	// per task, so that a run of 10,000 tasks costs a few changes.
	ChangeTaskCreated ChangeKind = "task_created"
	// ChangeTaskWaiting: an approval gate began to wait for its
	// approvers (TaskID and TaskType set).
	ChangeTaskWaiting ChangeKind = "task_waiting"
)

// Change is a committed change that waiters may care about.
type Change struct {
	Kind       ChangeKind
	TaskID     string
	TaskType   string
	DelegateID string
	LogLines   int64
	// TaskState and Count are set on ChangeTaskCreated.
	TaskState errand.State
	Count     int
	// Remote is set on a change another manager made, delivered by a
	// store shared by several managers: counters count only their own
	// manager's changes, so that summing them over replicas counts each
	// once.
	Remote bool
	// Ended is the task as it ended, on a ChangeTaskEnded of this
	// manager's own (never across managers), so that what records the
	// end need not read it again. It may be nil.
	Ended *errand.Task
}

// RunStore persists pipeline runs. A run's phase, result and stage states
// are not stored: the manager derives them from the run's tasks
// (TaskList with RunID) each time it reads a run, so they cannot drift
// from what the tasks did.
type RunStore interface {
	// RunCreate inserts a run and its tasks in one transaction, all or
	// none, through the same path as TaskCreate. Every task gets the
	// run's id as its RunID and may refer only to tasks of the same
	// batch (errand.ErrInvalid otherwise). A run id that exists is
	// errand.ErrConflict. A run with setup errors has no tasks. Returns
	// the tasks as stored.
	RunCreate(ctx context.Context, p RunCreateParams) ([]*errand.Task, error)
	// RunGet returns one run, errand.ErrNotFound if there is none.
	RunGet(ctx context.Context, id string) (*Run, error)
	// RunList returns runs, newest first.
	RunList(ctx context.Context, p RunListParams) ([]*Run, error)
	// RunTaskStats summarises the tasks of some runs in one grouped
	// read: counts by state and the span of their times, what a list of
	// runs shows without reading every task. A run with no task, or
	// unknown, is absent from the map.
	RunTaskStats(ctx context.Context, p RunTaskStatsParams) (map[string]*RunTaskStats, error)
	// RunApprove records that p.Approver approved p.Stage of a run and
	// returns the number of distinct approvers of that stage. Approving
	// twice as the same approver counts once. errand.ErrNotFound for an
	// unknown run. With p.TaskID, the stage's approval gate, the same
	// transaction applies errand.EventApprove to the gate when the
	// approver is new: a waiting gate that reaches its approvals succeeds
	// and its dependents are released at once. The gate must be a gate
	// (Approvals set) of the run (errand.ErrInvalid otherwise,
	// errand.ErrNotFound for an unknown task); a new approver of a gate
	// that has ended is errand.ErrIllegalTransition and nothing is
	// recorded.
	RunApprove(ctx context.Context, p RunApproveParams) (int, error)
	// RunCancel marks a run cancelled, once: a second cancel keeps the
	// first time. It changes no task: the manager cancels them.
	// errand.ErrNotFound for an unknown run.
	RunCancel(ctx context.Context, p RunCancelParams) (*Run, error)
}

// Limits of a stored run.
const (
	// MaxRunConfig bounds the config source kept with a run.
	MaxRunConfig = 4 << 20
	// MaxRunApprover bounds an approver's name.
	MaxRunApprover = 128
	// MaxRunCreatedBy bounds the name of who made a run.
	MaxRunCreatedBy = 128
)

// Run is a pipeline run as stored: what was submitted and what users did
// to it. Its state comes from its tasks.
type Run struct {
	ID        string
	CreatedAt time.Time
	// CreatedBy names who made the run: a user, the bootstrap admin
	// ("admin"), or the local user of a run on one machine; empty for
	// runs stored before it was recorded.
	CreatedBy string
	// Filename names the config's format (config.yml, config.json,
	// config.jsonnet); Config is its source.
	Filename string
	Config   []byte
	Branch   string
	Event    string
	// Plan is the expanded plan as the manager encoded it; empty for a
	// run with setup errors.
	Plan json.RawMessage
	// StageCount is the number of stages of the plan, as the manager
	// counted them when it made the run.
	StageCount int
	// SetupErrors lists why the config did not load or validate.
	SetupErrors []RunSetupError
	// Approvals lists the distinct approvers of each stage, in the order
	// they approved.
	Approvals map[string][]string
	// CancelledAt is set once the run was cancelled.
	CancelledAt *time.Time
	// Origin is where the run came from (see PipelineStore); nil for a
	// run stored before origins were.
	Origin *RunOrigin
}

// RunSetupError is one problem of a run's config, with its path and line
// when known.
type RunSetupError struct {
	Path    string `json:"path"`
	Line    int    `json:"line,omitempty"`
	Message string `json:"message"`
}

// RunCreateParams holds a run and its tasks. Run.CreatedAt is set from
// Now.
type RunCreateParams struct {
	Run   *Run
	Tasks []*errand.Task
	Now   time.Time
}

// Check checks what needs no database: the run's fields, and that its
// tasks are a valid batch (errand.ValidateRunBatch) that belongs to it and
// refers only to itself. It sets each task's RunID. Stores call it first
// in RunCreate.
func (p RunCreateParams) Check() error {
	r, tasks := p.Run, p.Tasks
	switch {
	case r == nil:
		return errand.Errorf(errand.CodeInvalid, "run: required")
	case r.ID == "":
		return errand.Errorf(errand.CodeInvalid, "run.id: required")
	case len(r.Config) > MaxRunConfig:
		return errand.Errorf(errand.CodeTooLarge, "run.config: larger than %d bytes", MaxRunConfig)
	case len(r.CreatedBy) > MaxRunCreatedBy:
		return errand.Errorf(errand.CodeInvalid, "run.created_by: longer than %d bytes", MaxRunCreatedBy)
	case len(r.SetupErrors) > 0 && len(tasks) > 0:
		return errand.Errorf(errand.CodeInvalid, "run: a run with setup errors has no tasks")
	}
	if r.Origin != nil {
		if err := r.Origin.Check(); err != nil {
			return err
		}
	}
	if err := checkRunTasks(r, tasks); err != nil {
		return err
	}
	for _, t := range tasks {
		t.RunID = r.ID
	}
	return nil
}

// RunListParams pages RunList.
type RunListParams struct {
	// After returns runs older than the run with this id (paging).
	After string
	Limit int // 0: 100
	// Summary leaves Config and Plan out: a list shows neither.
	Summary bool
}

// RunTaskStatsParams says which runs RunTaskStats reads. Tasks of the
// types in TimesIgnoreTypes are counted but do not make the span of
// times (the manager's approval gates: waiting for a person is not
// work).
type RunTaskStatsParams struct {
	RunIDs           []string
	TimesIgnoreTypes []string
}

// RunTaskStats summarises a run's tasks.
type RunTaskStats struct {
	// Tasks counts the run's tasks by state.
	Tasks map[errand.State]int
	// StartedAt is the earliest start of a task, FinishedAt the latest
	// end; nil when none started or ended.
	StartedAt, FinishedAt *time.Time
}

// AddRunTaskRow folds one grouped row of a driver's RunTaskStats query,
// n tasks of run in state with their earliest start and latest end, into
// stats.
func AddRunTaskRow(stats map[string]*RunTaskStats, run string, state errand.State, n int, started, finished *time.Time) {
	st := stats[run]
	if st == nil {
		st = &RunTaskStats{Tasks: map[errand.State]int{}}
		stats[run] = st
	}
	st.Tasks[state] += n
	if st.StartedAt == nil || (started != nil && started.Before(*st.StartedAt)) {
		st.StartedAt = started
	}
	if st.FinishedAt == nil || (finished != nil && finished.After(*st.FinishedAt)) {
		st.FinishedAt = finished
	}
}

// RunApproveParams records one approval.
type RunApproveParams struct {
	RunID    string
	Stage    string
	Approver string
	// TaskID is the stage's approval gate, if it has one stored: a new
	// approver counts on it (errand.EventApprove).
	TaskID string
	Now    time.Time
}

// RunCancelParams marks a run cancelled.
type RunCancelParams struct {
	RunID string
	Now   time.Time
}
