package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/errandci/errand"
)

// Kinds of the run objects of the API.
const (
	KindRun     = "run"
	KindRunList = "run_list"
)

// RunClient speaks the pipeline-run part of the manager's API. The HTTP
// client implements it beside Client; it is an interface of its own so
// that implementations of Client (a delegate's fakes, wrappers) need not
// grow when runs do.
type RunClient interface {
	// CreateRun submits a pipeline config. A config that does not load
	// or validate still creates a run, in phase setuperror, with its
	// errors listed.
	CreateRun(ctx context.Context, r *RunRequest) (*Run, error)
	// GetRun returns a run with its stages, steps and their tasks.
	GetRun(ctx context.Context, id string) (*Run, error)
	// ListRuns returns runs, newest first.
	ListRuns(ctx context.Context, f *RunFilter) (*RunList, error)
	// CancelRun cancels a run: its running tasks are stopped, the rest
	// skipped; cleanups still run.
	CancelRun(ctx context.Context, id string) error
	// ApproveRun approves a waiting stage of a run as approver ("admin"
	// when empty).
	ApproveRun(ctx context.Context, id, stage, approver string) error
}

var _ RunClient = (*HTTP)(nil)

// RunRequest is the body of POST /api/v1/runs.
type RunRequest struct {
	// Config is the source of the pipeline config.
	Config string `json:"config"`
	// Filename names its format by its extension: config.yml,
	// config.json or config.jsonnet. Jsonnet imports are refused: the
	// manager reads nothing from its own filesystem.
	Filename string `json:"filename"`
	// Branch and Event are matched against the stages' when.
	Branch string `json:"branch,omitempty"`
	Event  string `json:"event,omitempty"`
	// ExtStr are the Jsonnet external variables.
	ExtStr map[string]string `json:"ext_str,omitempty"`
	// Env is environment given to every step, under the stage's and the
	// step's own.
	Env map[string]string `json:"env,omitempty"`
	// Source, when set, makes every stage's workspace start as a
	// checkout of Commit from its Git repository. Without Commit the
	// manager resolves the source's ref to a commit once, when it
	// creates the run, so that every stage checks out the same one.
	Source *errand.Source `json:"source,omitempty"`
	Commit string         `json:"commit,omitempty"`
}

// Run is a pipeline run as the API shows it. Phase and Result are derived
// from its tasks each time it is read.
type Run struct {
	Kind      string    `json:"kind"`
	ID        string    `json:"id"`
	Href      string    `json:"href"`
	CreatedAt time.Time `json:"created_at"`
	// CreatedBy names who made the run: the user whose token submitted
	// it, "admin" for the bootstrap admin token, or the local user of
	// `errand run`; empty for runs made before it was recorded.
	CreatedBy string `json:"created_by,omitempty"`
	Filename  string `json:"filename,omitempty"`
	Branch    string `json:"branch,omitempty"`
	Event     string `json:"event,omitempty"`
	// Source and Commit are the run's Git source and the commit every
	// stage checks out; empty for a run without a source.
	Source *errand.Source `json:"source,omitempty"`
	Commit string         `json:"commit,omitempty"`
	// Phase is queued, running, finished or setuperror.
	Phase string `json:"phase"`
	// Result is unknown, success, failed or cancelled.
	Result      string     `json:"result"`
	CancelledAt *time.Time `json:"cancelled_at,omitempty"`
	// StartedAt is when its first task started; FinishedAt when its
	// last task ended, once the run is finished; Duration lies between
	// them (up to now while the run goes on).
	StartedAt   *time.Time      `json:"started_at,omitempty"`
	FinishedAt  *time.Time      `json:"finished_at,omitempty"`
	Duration    errand.Duration `json:"duration,omitempty"`
	SetupErrors []RunSetupError `json:"setup_errors,omitempty"`
	// StageCount is the number of its stages.
	StageCount int `json:"stage_count"`
	// TaskCounts counts its tasks by state; set in lists of runs only.
	TaskCounts map[string]int `json:"task_counts,omitempty"`
	// Stages lists its stages, with their steps; empty in lists of runs
	// (GET /api/v1/runs/{id} has them).
	Stages []*RunStage `json:"stages"`

	// Pipeline and Number are set for a run of a stored pipeline: its
	// number there, and Name is pipeline#number.
	Pipeline string `json:"pipeline,omitempty"`
	Number   int64  `json:"number,omitempty"`
	Name     string `json:"name,omitempty"`
	// Trigger says who or what started the run.
	Trigger *RunTrigger `json:"trigger,omitempty"`
	// Variables are the environment the run gave every step.
	Variables map[string]string `json:"variables,omitempty"`
	// RestartOf is the run this one restarts, from RestartFrom (failed
	// or start).
	RestartOf     string `json:"restart_of,omitempty"`
	RestartOfHref string `json:"restart_of_href,omitempty"`
	RestartFrom   string `json:"restart_from,omitempty"`
}

// RunTrigger says who or what started a run, and the change it ran for.
type RunTrigger struct {
	// Kind is user, webhook or restart.
	Kind string `json:"kind"`
	// Who is the user (or the webhook's sender) that started it.
	Who   string `json:"who,omitempty"`
	Event string `json:"event,omitempty"`
	// Commit, Ref, Author and Message describe the change it ran for.
	Commit  string `json:"commit,omitempty"`
	Ref     string `json:"ref,omitempty"`
	Author  string `json:"author,omitempty"`
	Message string `json:"message,omitempty"`
}

// RestartRequest is the body of POST /api/v1/runs/{id}/restart.
type RestartRequest struct {
	// From is failed (the default: re-run the failed and cancelled
	// stages and every stage downstream of them, keep the rest) or start
	// (re-run every stage).
	From string `json:"from,omitempty"`
}

// RunSetupError is one problem of a run's config.
type RunSetupError struct {
	Path    string `json:"path"`
	Line    int    `json:"line,omitempty"`
	Message string `json:"message"`
}

// Error returns the problem as "path (line N): message".
func (e RunSetupError) Error() string {
	p := e.Path
	if p == "" {
		p = "config"
	}
	if e.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", p, e.Line, e.Message)
	}
	return p + ": " + e.Message
}

// RunStage is one stage of a run.
type RunStage struct {
	Name string `json:"name"`
	// State is pending, waiting, running, success, failed, skipped or
	// cancelled.
	State string `json:"state"`
	// Approval is the number of distinct approvers the stage needs;
	// Approvals are those it has.
	Approval  int      `json:"approval,omitempty"`
	Approvals []string `json:"approvals,omitempty"`
	// Depends names the stages this one waits for.
	Depends []string   `json:"depends,omitempty"`
	Steps   []*RunStep `json:"steps"`
	// InitializeTask and CleanupTask are the ids of the stage's
	// initialize and cleanup tasks.
	InitializeTask string `json:"initialize_task,omitempty"`
	CleanupTask    string `json:"cleanup_task,omitempty"`
	// Setup and Cleanup are the stage's initialize and cleanup tasks: a
	// stage whose setup failed (image missing, privileged refused) says
	// why here, while its steps only show skipped. Nil for a stage that
	// has no tasks (skipped by its when).
	Setup   *RunStageTask `json:"setup,omitempty"`
	Cleanup *RunStageTask `json:"cleanup,omitempty"`
	// StartedAt, FinishedAt and Duration span the stage's tasks.
	StartedAt  *time.Time      `json:"started_at,omitempty"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
	Duration   errand.Duration `json:"duration,omitempty"`
	// KeptFrom is set on a stage that a restart kept: the run whose
	// tasks (results, logs) it shows; they did not run again.
	KeptFrom string `json:"kept_from,omitempty"`
}

// RunStageTask is the state of a stage's initialize or cleanup task; its
// log is the task's log (image pull, service start, removals).
type RunStageTask struct {
	State      errand.State  `json:"state"`
	TaskID     string        `json:"task_id"`
	Error      *errand.Error `json:"error,omitempty"`
	StartedAt  *time.Time    `json:"started_at,omitempty"`
	FinishedAt *time.Time    `json:"finished_at,omitempty"`
	// WaitingReason says why the queued task may wait for ever: no
	// registered delegate serves its type or matches its selector.
	WaitingReason string `json:"waiting_reason,omitempty"`
}

// RunStep is one step of a stage and the task that runs it; the step's
// log is its task's log.
type RunStep struct {
	Name string `json:"name"`
	// State is the state of the step's task.
	State    errand.State `json:"state"`
	TaskID   string       `json:"task_id"`
	TaskHref string       `json:"task_href"`
	// WaitingReason says why the queued step may wait for ever.
	WaitingReason string `json:"waiting_reason,omitempty"`
	// ExitCode is set once the step's commands ran to an exit.
	ExitCode   *int            `json:"exit_code,omitempty"`
	Error      *errand.Error   `json:"error,omitempty"`
	StartedAt  *time.Time      `json:"started_at,omitempty"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
	Duration   errand.Duration `json:"duration,omitempty"`
	// Reporter is set for a step that also runs after a failure; it
	// decides nothing of its stage's outcome.
	Reporter bool `json:"reporter,omitempty"`
}

// RunList is a page of runs, newest first.
type RunList struct {
	Kind  string `json:"kind"`
	Items []*Run `json:"items"`
	// Next is the id to pass as After for the next page, empty at the end.
	Next string `json:"next,omitempty"`
}

// RunFilter pages ListRuns.
type RunFilter struct {
	After string
	Limit int
}

// ApproveRequest is the body of POST /api/v1/runs/{id}/stages/{name}/approve.
type ApproveRequest struct {
	// Approver names who approves; "admin" when empty.
	Approver string `json:"approver,omitempty"`
}

// CreateRun submits a pipeline config.
func (c *HTTP) CreateRun(ctx context.Context, r *RunRequest) (*Run, error) {
	var out Run
	if err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/runs", body: r, out: &out, policy: retryNotSent}); err != nil {
		return nil, fmt.Errorf("create run: %w", err)
	}
	return &out, nil
}

// GetRun returns a run.
func (c *HTTP) GetRun(ctx context.Context, id string) (*Run, error) {
	var out Run
	if err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/runs/" + url.PathEscape(id), out: &out, policy: retryIdempotent}); err != nil {
		return nil, fmt.Errorf("get run %s: %w", id, err)
	}
	return &out, nil
}

// ListRuns returns runs, newest first.
func (c *HTTP) ListRuns(ctx context.Context, f *RunFilter) (*RunList, error) {
	q := url.Values{}
	if f != nil {
		if f.After != "" {
			q.Set("after", f.After)
		}
		if f.Limit > 0 {
			q.Set("limit", strconv.Itoa(f.Limit))
		}
	}
	var out RunList
	if err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/runs", query: q, out: &out, policy: retryIdempotent}); err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	return &out, nil
}

// CancelRun cancels a run.
func (c *HTTP) CancelRun(ctx context.Context, id string) error {
	if err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/runs/" + url.PathEscape(id) + "/cancel", policy: retryIdempotent}); err != nil {
		return fmt.Errorf("cancel run %s: %w", id, err)
	}
	return nil
}

// ApproveRun approves a waiting stage of a run. It is not retried once
// sent: a stage released by the first approval is no longer waiting.
func (c *HTTP) ApproveRun(ctx context.Context, id, stage, approver string) error {
	path := "/api/v1/runs/" + url.PathEscape(id) + "/stages/" + url.PathEscape(stage) + "/approve"
	if err := c.do(ctx, call{method: http.MethodPost, path: path, body: &ApproveRequest{Approver: approver}, policy: retryNotSent}); err != nil {
		return fmt.Errorf("approve stage %s of run %s: %w", stage, id, err)
	}
	return nil
}
