package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Kinds of the pipeline objects of the API.
const (
	KindPipeline     = "pipeline"
	KindPipelineList = "pipeline_list"
	KindStageList    = "stage_list"
	KindStage        = "stage"
	KindStepList     = "step_list"
	KindStep         = "step"
)

// PipelineClient speaks the stored-pipeline part of the manager's API.
type PipelineClient interface {
	// CreatePipeline stores a pipeline; a name that exists is
	// errand.ErrConflict.
	CreatePipeline(ctx context.Context, p *PipelineSpec) (*Pipeline, error)
	// GetPipeline returns a pipeline with its config.
	GetPipeline(ctx context.Context, name string) (*Pipeline, error)
	// ListPipelines returns pipelines in name order, without their
	// configs.
	ListPipelines(ctx context.Context, f *PipelineFilter) (*PipelineList, error)
	// UpdatePipeline replaces a pipeline's spec; its runs are kept.
	UpdatePipeline(ctx context.Context, name string, p *PipelineSpec) (*Pipeline, error)
	// DeletePipeline removes a pipeline; its runs are kept.
	DeletePipeline(ctx context.Context, name string) error
	// StartPipelineRun starts a run of a pipeline, as the caller.
	StartPipelineRun(ctx context.Context, name string, r *PipelineRunRequest) (*Run, error)
	// GetPipelineRun returns run number of a pipeline.
	GetPipelineRun(ctx context.Context, name string, number int64) (*Run, error)
	// ListPipelineRuns returns the runs of a pipeline, highest number
	// first.
	ListPipelineRuns(ctx context.Context, name string, f *PipelineRunFilter) (*RunList, error)
	// RestartRun starts a new run of what run id ran, from failed or
	// from start.
	RestartRun(ctx context.Context, id string, r *RestartRequest) (*Run, error)
}

var _ PipelineClient = (*HTTP)(nil)

// PipelineSpec is a pipeline as a user writes it: the body of POST
// /api/v1/pipelines and PUT /api/v1/pipelines/{name}.
type PipelineSpec struct {
	// Name is unique, 1 to 64 of a-z, 0-9, '_' and '-'; on update it
	// may be left out.
	Name string `json:"name,omitempty"`
	// Config is the pipeline config, in the format Filename names
	// (config.yml when empty); or ConfigPath names where the config is
	// in the pipeline's Source, read when a run starts. One of them.
	Config     string `json:"config,omitempty"`
	Filename   string `json:"filename,omitempty"`
	ConfigPath string `json:"config_path,omitempty"`
	// Source is what the runs' workspaces start as: {"git": {"url":
	// ..., "ref": ...}}.
	Source json.RawMessage `json:"source,omitempty"`
	// Variables are given to every step of every run as environment
	// variables, and to a Jsonnet config as external variables; a run
	// may set more, or others, for itself.
	Variables map[string]string `json:"variables,omitempty"`
	// Triggers say what else may start runs: webhooks.
	Triggers *PipelineTriggers `json:"triggers,omitempty"`
	// Notify says whom to tell when runs start or end.
	Notify []PipelineNotify `json:"notify,omitempty"`
}

// PipelineTriggers say what may start runs of a pipeline beside users.
type PipelineTriggers struct {
	Webhook *WebhookTrigger `json:"webhook,omitempty"`
}

// WebhookTrigger lets webhook deliveries start runs.
type WebhookTrigger struct {
	// Secrets name manager secrets whose values may sign deliveries, in
	// addition to the hook secret the manager generates.
	Secrets []string `json:"secrets,omitempty"`
}

// PipelineNotify is one receiver of a pipeline's notifications: exactly
// one of its fields is set.
type PipelineNotify struct {
	Webhook *NotifyWebhook `json:"webhook,omitempty"`
	Slack   *NotifySlack   `json:"slack,omitempty"`
}

// NotifyWebhook posts a signed JSON event to URL.
type NotifyWebhook struct {
	URL string `json:"url"`
	// Secret names the manager secret whose value signs the body.
	Secret string `json:"secret,omitempty"`
	// On lists the events to send: started, success, failed (or
	// failure), cancelled, finished, waiting (a stage waits for
	// approval); every end of a run (finished) when empty.
	On []string `json:"on,omitempty"`
}

// NotifySlack posts to a Slack incoming webhook.
type NotifySlack struct {
	// URLSecret names the manager secret whose value is the webhook's
	// URL.
	URLSecret string   `json:"url_secret"`
	On        []string `json:"on,omitempty"`
}

// Pipeline is a stored pipeline as the API shows it.
type Pipeline struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
	Href string `json:"href"`
	PipelineSpec
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	CreatedBy string    `json:"created_by,omitempty"`
	// LastNumber is the number of its latest run, 0 before the first.
	LastNumber int64 `json:"last_number"`
	// RunsHref lists its runs.
	RunsHref string `json:"runs_href"`
}

// PipelineList is a page of pipelines in name order.
type PipelineList struct {
	Kind  string      `json:"kind"`
	Items []*Pipeline `json:"items"`
	// Next is the name to pass as After for the next page.
	Next string `json:"next,omitempty"`
}

// PipelineFilter filters and pages ListPipelines.
type PipelineFilter struct {
	Prefix string
	After  string
	Limit  int
}

// PipelineRunRequest is the body of POST /api/v1/pipelines/{name}/runs:
// all optional.
type PipelineRunRequest struct {
	// Ref is the branch (refs/heads/... or a bare name) or tag the run
	// is for; its branch is matched against the stages' when.
	Ref string `json:"ref,omitempty"`
	// Commit is the commit the run checks out.
	Commit string `json:"commit,omitempty"`
	// Event is matched against the stages' when.
	Event string `json:"event,omitempty"`
	// Variables are added to the pipeline's, replacing those of the
	// same name.
	Variables map[string]string `json:"variables,omitempty"`
}

// PipelineRunFilter filters and pages ListPipelineRuns. Zero fields do
// not filter.
type PipelineRunFilter struct {
	// Before returns runs numbered below it.
	Before int64
	Limit  int
	// Trigger (user, webhook, restart), Ref and Commit filter on the
	// trigger; Phase and Result on the run's state.
	Trigger string
	Ref     string
	Commit  string
	Phase   string
	Result  string
}

// CreatePipeline stores a pipeline.
func (c *HTTP) CreatePipeline(ctx context.Context, p *PipelineSpec) (*Pipeline, error) {
	var out Pipeline
	if err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/pipelines", body: p, out: &out, policy: retryNotSent}); err != nil {
		return nil, fmt.Errorf("create pipeline %s: %w", p.Name, err)
	}
	return &out, nil
}

// GetPipeline returns a pipeline.
func (c *HTTP) GetPipeline(ctx context.Context, name string) (*Pipeline, error) {
	var out Pipeline
	if err := c.do(ctx, call{method: http.MethodGet, path: pipelinePath(name), out: &out, policy: retryIdempotent}); err != nil {
		return nil, fmt.Errorf("get pipeline %s: %w", name, err)
	}
	return &out, nil
}

// ListPipelines returns pipelines in name order.
func (c *HTTP) ListPipelines(ctx context.Context, f *PipelineFilter) (*PipelineList, error) {
	q := url.Values{}
	if f != nil {
		setQuery(q, "prefix", f.Prefix)
		setQuery(q, "after", f.After)
		if f.Limit > 0 {
			q.Set("limit", strconv.Itoa(f.Limit))
		}
	}
	var out PipelineList
	if err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/pipelines", query: q, out: &out, policy: retryIdempotent}); err != nil {
		return nil, fmt.Errorf("list pipelines: %w", err)
	}
	return &out, nil
}

// UpdatePipeline replaces a pipeline's spec.
func (c *HTTP) UpdatePipeline(ctx context.Context, name string, p *PipelineSpec) (*Pipeline, error) {
	var out Pipeline
	if err := c.do(ctx, call{method: http.MethodPut, path: pipelinePath(name), body: p, out: &out, policy: retryIdempotent}); err != nil {
		return nil, fmt.Errorf("update pipeline %s: %w", name, err)
	}
	return &out, nil
}

// DeletePipeline removes a pipeline.
func (c *HTTP) DeletePipeline(ctx context.Context, name string) error {
	if err := c.do(ctx, call{method: http.MethodDelete, path: pipelinePath(name), policy: retryNotSent}); err != nil {
		return fmt.Errorf("delete pipeline %s: %w", name, err)
	}
	return nil
}

// StartPipelineRun starts a run of a pipeline. It is not retried once
// sent: a retry would start a second run.
func (c *HTTP) StartPipelineRun(ctx context.Context, name string, r *PipelineRunRequest) (*Run, error) {
	var out Run
	if err := c.do(ctx, call{method: http.MethodPost, path: pipelinePath(name) + "/runs", body: r, out: &out, policy: retryNotSent}); err != nil {
		return nil, fmt.Errorf("start a run of pipeline %s: %w", name, err)
	}
	return &out, nil
}

// GetPipelineRun returns run number of a pipeline.
func (c *HTTP) GetPipelineRun(ctx context.Context, name string, number int64) (*Run, error) {
	var out Run
	path := pipelinePath(name) + "/runs/" + strconv.FormatInt(number, 10)
	if err := c.do(ctx, call{method: http.MethodGet, path: path, out: &out, policy: retryIdempotent}); err != nil {
		return nil, fmt.Errorf("get run %s#%d: %w", name, number, err)
	}
	return &out, nil
}

// ListPipelineRuns returns the runs of a pipeline, highest number first.
func (c *HTTP) ListPipelineRuns(ctx context.Context, name string, f *PipelineRunFilter) (*RunList, error) {
	q := url.Values{}
	if f != nil {
		if f.Before > 0 {
			q.Set("before", strconv.FormatInt(f.Before, 10))
		}
		if f.Limit > 0 {
			q.Set("limit", strconv.Itoa(f.Limit))
		}
		setQuery(q, "trigger", f.Trigger)
		setQuery(q, "ref", f.Ref)
		setQuery(q, "commit", f.Commit)
		setQuery(q, "phase", f.Phase)
		setQuery(q, "result", f.Result)
	}
	var out RunList
	if err := c.do(ctx, call{method: http.MethodGet, path: pipelinePath(name) + "/runs", query: q, out: &out, policy: retryIdempotent}); err != nil {
		return nil, fmt.Errorf("list runs of pipeline %s: %w", name, err)
	}
	return &out, nil
}

// RestartRun starts a new run of what run id ran. It is not retried
// once sent: a retry would start a second run.
func (c *HTTP) RestartRun(ctx context.Context, id string, r *RestartRequest) (*Run, error) {
	var out Run
	if err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/runs/" + url.PathEscape(id) + "/restart", body: r, out: &out, policy: retryNotSent}); err != nil {
		return nil, fmt.Errorf("restart run %s: %w", id, err)
	}
	return &out, nil
}

func setQuery(q url.Values, k, v string) {
	if v != "" {
		q.Set(k, v)
	}
}

// Stage is one stage of a run, addressed by its run's pipeline and
// number.
type Stage struct {
	Kind    string `json:"kind"`
	ID      string `json:"id"`
	Href    string `json:"href"`
	RunID   string `json:"run_id"`
	RunName string `json:"run_name,omitempty"`
	*RunStage
}

// StageList lists stages of a run.
type StageList struct {
	Kind  string   `json:"kind"`
	Items []*Stage `json:"items"`
}

// Step is one step of a stage of a run.
type Step struct {
	Kind    string `json:"kind"`
	ID      string `json:"id"`
	Href    string `json:"href"`
	RunID   string `json:"run_id"`
	RunName string `json:"run_name,omitempty"`
	Stage   string `json:"stage"`
	*RunStep
}

// StepList lists steps of a stage.
type StepList struct {
	Kind  string  `json:"kind"`
	Items []*Step `json:"items"`
}
