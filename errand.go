// Package errand holds Errand's domain: tasks, delegates, leases, the task
// state machine and the error codes shared by the manager, the client and
// the delegate side. It does no I/O; stores and servers persist and carry
// what it decides.
package errand

import (
	"encoding/json"
	"fmt"
	"time"
)

// Kinds carried in the "kind" field of every API object.
const (
	KindTask      = "task"
	KindDelegate  = "delegate"
	KindTaskList  = "task_list"
	KindDelegates = "delegate_list"
	KindLog       = "log"
	KindAcquire   = "acquire"
	KindHeartbeat = "heartbeat"
	KindReports   = "reports"
	KindError     = "error"
)

// Task types served by the built-in handlers. Library users may register
// any other type with the router.
const (
	TypeDockerInitialize = "docker.initialize"
	TypeDockerExecute    = "docker.execute"
	TypeDockerCleanup    = "docker.cleanup"
	TypeExecInitialize   = "exec.initialize"
	TypeExecExecute      = "exec.execute"
	TypeExecCleanup      = "exec.cleanup"
)

// Limits that the manager and the stores apply to task definitions.
const (
	// DefaultMaxAttempts is the number of attempts a task gets when it
	// does not say.
	DefaultMaxAttempts = 3
	// MaxMaxAttempts bounds max_attempts.
	MaxMaxAttempts = 100
	// MaxTaskTypeLen bounds the length of a task type.
	MaxTaskTypeLen = 128
)

// Task is the unit a delegate runs.
type Task struct {
	Kind string `json:"kind,omitempty"`
	ID   string `json:"id"`
	Href string `json:"href,omitempty"`

	Type        string          `json:"type"`
	Data        json.RawMessage `json:"data,omitempty"`
	Selector    Selector        `json:"selector"`
	DependsOn   []Dependency    `json:"depends_on,omitempty"`
	Affinity    string          `json:"affinity,omitempty"`
	Priority    int             `json:"priority"`
	Timeout     Duration        `json:"timeout,omitempty"`
	MaxAttempts int             `json:"max_attempts"`
	// RunID names the pipeline run a task belongs to, if any.
	RunID string `json:"run_id,omitempty"`
	// Approvals makes the task an approval gate: the number of distinct
	// approvers it waits for (state waiting) once its dependencies are
	// met, after which it succeeds without a delegate. 0: not a gate.
	Approvals int `json:"approvals,omitempty"`
	// Approved counts the distinct approvers of a gate so far.
	Approved int `json:"approved,omitempty"`

	State           State           `json:"state"`
	Attempt         int             `json:"attempt"`
	CancelRequested bool            `json:"cancel_requested,omitempty"`
	DelegateID      string          `json:"delegate_id,omitempty"`
	Result          json.RawMessage `json:"result,omitempty"`
	Error           *Error          `json:"error,omitempty"`
	// LogLines is the number of log lines stored for the task: the offset
	// at which the next line is appended.
	LogLines int64 `json:"log_lines"`
	// WaitingReason says why a queued task may wait for ever: no
	// registered delegate serves its type or matches its selector, or
	// those that do are lost or draining. Empty when some active delegate
	// may run it. The manager computes it when it shows a task; it is
	// never stored.
	WaitingReason string `json:"waiting_reason,omitempty"`

	CreatedAt  time.Time  `json:"created_at"`
	QueuedAt   *time.Time `json:"queued_at,omitempty"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`

	// Lease is set only on tasks returned by acquire.
	Lease *Lease `json:"lease,omitempty"`
	// Dependencies is set only on tasks returned by acquire: the outcome
	// and result of each task this one depends on, in DependsOn order.
	Dependencies []DependencyResult `json:"dependencies,omitempty"`
}

// Selector restricts which delegates may run a task. Empty fields match
// every delegate.
type Selector struct {
	Labels map[string]string `json:"labels,omitempty"`
	Arch   string            `json:"arch,omitempty"`
	Group  string            `json:"group,omitempty"`
}

// Dependency says that a task waits for another and runs only if the other
// ended in a way that meets Condition.
type Dependency struct {
	Task      string    `json:"task"`
	Condition Condition `json:"condition,omitempty"`
}

// DependencyResult is handed to a task when it is acquired: what each of
// its dependencies ended with.
type DependencyResult struct {
	Task   string          `json:"task"`
	Type   string          `json:"type"`
	State  State           `json:"state"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// Lease is the right of one delegate to report on one task. Every status
// and log update carries its token; a stale token is refused.
type Lease struct {
	Token      string `json:"token"`
	DelegateID string `json:"delegate_id"`
}

// Delegate is a registered agent on a build host.
type Delegate struct {
	Kind string `json:"kind,omitempty"`
	ID   string `json:"id"`
	Href string `json:"href,omitempty"`

	Name      string            `json:"name"`
	Hostname  string            `json:"hostname,omitempty"`
	Group     string            `json:"group,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Archs     []string          `json:"archs,omitempty"`
	Capacity  int               `json:"capacity"`
	TaskTypes []string          `json:"task_types,omitempty"`
	Dynamic   bool              `json:"dynamic,omitempty"`
	Version   string            `json:"version,omitempty"`

	State          DelegateState `json:"state"`
	Overloaded     bool          `json:"overloaded,omitempty"`
	DrainRequested bool          `json:"drain_requested,omitempty"`
	CreatedAt      time.Time     `json:"created_at"`
	LastHeartbeat  time.Time     `json:"last_heartbeat"`
}

// DelegateState is the manager's view of a delegate.
type DelegateState string

// Delegate states.
const (
	DelegateActive   DelegateState = "active"
	DelegateDraining DelegateState = "draining"
	DelegateLost     DelegateState = "lost"
)

// Matches reports whether the delegate may run the task as far as type and
// selector go. Affinity is decided by the store, which knows who ran the
// affinity task.
func (d *Delegate) Matches(t *Task) bool {
	if len(d.TaskTypes) > 0 && !contains(d.TaskTypes, t.Type) {
		return false
	}
	if t.Selector.Arch != "" && !contains(d.Archs, t.Selector.Arch) {
		return false
	}
	if t.Selector.Group != "" && t.Selector.Group != d.Group {
		return false
	}
	for k, v := range t.Selector.Labels {
		if got, ok := d.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Duration is a time.Duration that reads and writes as a Go duration
// string ("90s", "10m") in JSON. A bare number is read as seconds.
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("invalid duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("invalid duration %s: want a string such as \"90s\"", b)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// String returns the Go duration string.
func (d Duration) String() string { return time.Duration(d).String() }
