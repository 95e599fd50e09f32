// Package client is the Go client of the Errand manager API and the home of
// its wire types. Two small interfaces read like the protocol:
// DelegateClient is what a delegate says (it Registers, Heartbeats,
// Acquires tasks, UpdatesStatus and AppendsLogs under the lease it was
// given, lists its group and Deregisters); UserClient is what a user or an
// operator says (create, list, inspect and cancel tasks, read their logs,
// look at and drain delegates; RunClient adds pipeline runs). HTTP
// implements them all, over the network or in-process (WithHandler).
//
// The delegate's protocol calls (register, heartbeat, acquire, status,
// logs, deregister) are sent once: the delegate side retries them, with
// Retrier, where it knows a call is safe to repeat. The reads and the
// user's calls are retried by HTTP itself within WithRetry's budget, the
// reads and the idempotent actions on any passing failure
// (errand.Retryable), the creations only when the request surely never
// left.
//
// Errors that the manager returns come back as *errand.Error values, so
// errors.Is(err, client.ErrLeaseLost) works across the wire.
package client

import (
	"context"
	"encoding/json"
	"io"

	"github.com/errandci/errand"
)

// Wire types shared with the domain.
type (
	// Task is a task as the API shows it.
	Task = errand.Task
	// Delegate is a delegate as the API shows it.
	Delegate = errand.Delegate
	// Error is a structured API error.
	Error = errand.Error
)

// Errors to compare against with errors.Is.
var (
	ErrInvalid           = errand.ErrInvalid
	ErrUnauthorized      = errand.ErrUnauthorized
	ErrForbidden         = errand.ErrForbidden
	ErrNotFound          = errand.ErrNotFound
	ErrConflict          = errand.ErrConflict
	ErrLeaseLost         = errand.ErrLeaseLost
	ErrIllegalTransition = errand.ErrIllegalTransition
	ErrLogOffset         = errand.ErrLogOffset
	ErrTooLarge          = errand.ErrTooLarge
	ErrUnavailable       = errand.ErrUnavailable
)

// DelegateClient is the delegate's side of the protocol. Register is sent
// with the registration token; every other call with the delegate's own,
// from the client Authenticated returns. Each call but ListDelegates (a
// read) is one attempt bounded by ctx: the caller retries what is safe to
// repeat.
type DelegateClient interface {
	// Register registers a delegate and returns its id and its own
	// token.
	Register(ctx context.Context, r *RegisterRequest) (*Registration, error)
	// Authenticated returns a client of the same manager that sends
	// token: the delegate's own, after Register.
	Authenticated(token string) DelegateClient
	// Heartbeat tells the manager the delegate is alive, renewing the
	// leases of its tasks, and returns what the manager wants of it:
	// tasks to cancel, a drain.
	Heartbeat(ctx context.Context, delegateID string, r *HeartbeatRequest) (*HeartbeatResponse, error)
	// Acquire long-polls for up to r.Max tasks, waiting up to r.Wait. It
	// also returns early with the ids of held tasks to cancel, or a drain
	// request.
	Acquire(ctx context.Context, delegateID string, r *AcquireRequest) (*AcquireResponse, error)
	// UpdateStatus reports a task's state under its lease. The manager
	// applies a repeated report once.
	UpdateStatus(ctx context.Context, taskID string, u *StatusUpdate) (*Task, error)
	// Reports sends many status reports in one call, each decided on its
	// own, and returns one result per report in their order.
	Reports(ctx context.Context, delegateID string, reports []*Report) ([]*ReportResult, error)
	// AppendLogs appends log lines at an offset under the task's lease.
	// An append repeated at the same offset is stored once.
	AppendLogs(ctx context.Context, taskID string, a *LogAppend) (*LogAppendResult, error)
	// ListDelegates returns the delegates the token may see: a delegate
	// sees those of its own group, and the manager's identity.
	ListDelegates(ctx context.Context) (*DelegateList, error)
	// Deregister removes the delegate.
	Deregister(ctx context.Context, delegateID string) error
}

// UserClient is the user's and the operator's side of the API, sent with
// the admin token.
type UserClient interface {
	// CreateTasks enqueues tasks atomically: all or none.
	CreateTasks(ctx context.Context, specs []*TaskSpec) ([]*Task, error)
	// GetTask returns one task.
	GetTask(ctx context.Context, id string) (*Task, error)
	// ListTasks returns tasks matching the filter.
	ListTasks(ctx context.Context, f *TaskFilter) (*TaskList, error)
	// CancelTask cancels a task.
	CancelTask(ctx context.Context, id string) error
	// TaskLogs writes a task's log lines from o.Offset to w, one per line;
	// with o.Follow it keeps writing until the task ends.
	TaskLogs(ctx context.Context, id string, o *LogOptions, w io.Writer) error
	// ListDelegates returns the registered delegates.
	ListDelegates(ctx context.Context) (*DelegateList, error)
	// GetDelegate returns one delegate.
	GetDelegate(ctx context.Context, id string) (*Delegate, error)
	// DrainDelegate asks a delegate to stop taking work.
	DrainDelegate(ctx context.Context, id string) error
}

// Client is everything HTTP speaks but runs: both sides of the API, for
// tests and tools that play both.
type Client interface {
	DelegateClient
	UserClient
}

// TaskSpec is a task to create. ID is optional: the manager assigns one,
// but a batch whose tasks depend on each other names them with ids of its
// own choosing.
type TaskSpec struct {
	ID          string              `json:"id,omitempty"`
	Type        string              `json:"type"`
	Data        json.RawMessage     `json:"data,omitempty"`
	Selector    errand.Selector     `json:"selector,omitempty"`
	DependsOn   []errand.Dependency `json:"depends_on,omitempty"`
	Affinity    string              `json:"affinity,omitempty"`
	Priority    int                 `json:"priority,omitempty"`
	Timeout     errand.Duration     `json:"timeout,omitempty"`
	MaxAttempts int                 `json:"max_attempts,omitempty"`
}

// TaskBatch is the body of POST /api/v1/tasks for several tasks; a single
// TaskSpec is accepted too.
type TaskBatch struct {
	Tasks []*TaskSpec `json:"tasks"`
}

// TaskList is a page of tasks.
type TaskList struct {
	Kind  string  `json:"kind"`
	Items []*Task `json:"items"`
	// Next is the id to pass as After for the next page, empty at the end.
	Next string `json:"next,omitempty"`
}

// TaskFilter filters ListTasks.
type TaskFilter struct {
	States []errand.State
	Type   string
	RunID  string
	// Order is OrderAsc (oldest first, the default when empty) or
	// OrderDesc (newest first).
	Order string
	// After continues a list after this task id in Order: pass the
	// previous page's Next.
	After string
	Limit int
}

// The orders of ListTasks (TaskFilter.Order, ?order=).
const (
	OrderAsc  = "asc"
	OrderDesc = "desc"
)

// DelegateList lists delegates.
type DelegateList struct {
	Kind  string      `json:"kind"`
	Items []*Delegate `json:"items"`
	// ManagerID is the identity of the manager that answered (see
	// Registration.ManagerID).
	ManagerID string `json:"manager_id,omitempty"`
	// Next is the cursor of the next page (?after=), set when this page
	// is full.
	Next string `json:"next,omitempty"`
}

// RegisterRequest describes a delegate to the manager.
type RegisterRequest struct {
	Name      string            `json:"name"`
	Hostname  string            `json:"hostname,omitempty"`
	Group     string            `json:"group,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Archs     []string          `json:"archs,omitempty"`
	Capacity  int               `json:"capacity"`
	TaskTypes []string          `json:"task_types,omitempty"`
	Dynamic   bool              `json:"dynamic,omitempty"`
	Version   string            `json:"version,omitempty"`
}

// Registration is the manager's answer to Register: the delegate, its own
// token (shown once) and the heartbeat interval to keep.
type Registration struct {
	Delegate
	Token             string          `json:"token"`
	HeartbeatInterval errand.Duration `json:"heartbeat_interval"`
	// ManagerID is the manager's identity, the same across its restarts
	// and replicas: delegates put it on the Docker resources they create.
	ManagerID string `json:"manager_id,omitempty"`
}

// HeartbeatRequest reports a delegate's condition.
type HeartbeatRequest struct {
	// Draining is true once the delegate stopped taking work.
	Draining bool `json:"draining,omitempty"`
	// Overloaded is true while the host is over its CPU or memory
	// thresholds and the delegate refuses new work.
	Overloaded bool `json:"overloaded,omitempty"`
	// Running lists the tasks the delegate is working on (handlers
	// running or outcomes not yet reported). A heartbeat renews the
	// leases of exactly these tasks; a lease the delegate stops naming is
	// taken back one lease TTL after it was last renewed.
	Running []string `json:"running,omitempty"`
	// Resumed marks the first heartbeat of a delegate process that
	// resumes a stored identity: Running is then the whole of what it
	// holds, and every other lease of the delegate ends at once (the
	// tasks are retried or fail delegate_lost). A resumed delegate is
	// active again unless Draining says otherwise.
	Resumed bool `json:"resumed,omitempty"`
}

// HeartbeatResponse says what the manager wants of a delegate.
type HeartbeatResponse struct {
	Kind string `json:"kind"`
	// Cancel lists held tasks that were cancelled: stop them and report.
	Cancel []string `json:"cancel,omitempty"`
	// Drain asks the delegate to stop taking work.
	Drain bool `json:"drain,omitempty"`
	// HeartbeatInterval is the interval to keep.
	HeartbeatInterval errand.Duration `json:"heartbeat_interval"`
}

// AcquireRequest asks for tasks.
type AcquireRequest struct {
	// Wait is how long to long-poll when no task is ready (at most 60s).
	Wait errand.Duration `json:"-"`
	// Max is the number of tasks wanted; 0 waits only for cancels and
	// drain requests.
	Max int `json:"-"`
	// Reports are status reports carried by the acquire (at most
	// MaxReports), applied before tasks are looked for. An acquire that
	// carries reports does not wait: it answers at once with their
	// results, and the tasks that were ready.
	Reports []*Report `json:"-"`
}

// AcquireResponse carries leased tasks, if any, and what the manager
// wants of the delegate.
type AcquireResponse struct {
	Kind   string   `json:"kind"`
	Tasks  []*Task  `json:"tasks"`
	Cancel []string `json:"cancel,omitempty"`
	Drain  bool     `json:"drain,omitempty"`
	// Reports answers the reports the acquire carried, one result per
	// report in their order.
	Reports []*ReportResult `json:"reports,omitempty"`
}

// StatusUpdate reports a task's state under its lease: running, succeeded
// (with Result), failed (with Error), cancelled or timed_out.
type StatusUpdate struct {
	Lease  string          `json:"lease"`
	State  errand.State    `json:"state"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *errand.Error   `json:"error,omitempty"`
}

// LogAppend appends lines at Offset (the number of lines before them).
type LogAppend struct {
	Lease  string   `json:"lease"`
	Offset int64    `json:"offset"`
	Lines  []string `json:"lines"`
}

// LogAppendResult gives the offset after the last stored line.
type LogAppendResult struct {
	Kind string `json:"kind"`
	Next int64  `json:"next"`
}

// LogPage is a page of a task's log (GET …/logs without follow).
type LogPage struct {
	Kind   string   `json:"kind"`
	TaskID string   `json:"task_id"`
	Offset int64    `json:"offset"`
	Lines  []string `json:"lines"`
	Next   int64    `json:"next"`
	// Complete is true when the task has ended and Next is the end of its
	// log.
	Complete bool `json:"complete"`
}

// LogOptions selects what TaskLogs reads.
type LogOptions struct {
	Offset int64
	Follow bool
}
