package store

import (
	"context"
	"encoding/json"
	"regexp"
	"time"

	"github.com/errandci/errand"
)

// PipelineStore persists named pipelines and where runs came from: the
// pipeline and number of a run of a stored pipeline, its trigger, its
// variables and the run it restarts.
//
// Runs of a pipeline are numbered 1, 2, 3… in the transaction that
// creates them (RunCreate with Run.Origin.Pipeline set): the database
// decides, so that managers sharing it never skip or repeat a number. A
// pipeline that is deleted and made again goes on from the highest
// number its name has had.
type PipelineStore interface {
	// PipelineCreate inserts a pipeline; a name that exists is
	// errand.ErrConflict.
	PipelineCreate(ctx context.Context, p PipelineCreateParams) (*Pipeline, error)
	// PipelineGet returns one pipeline, errand.ErrNotFound if there is
	// none.
	PipelineGet(ctx context.Context, name string) (*Pipeline, error)
	// PipelineList returns pipelines in name order.
	PipelineList(ctx context.Context, p PipelineListParams) ([]*Pipeline, error)
	// PipelineUpdate replaces a pipeline's spec; its runs and their
	// numbers are kept. errand.ErrNotFound for an unknown name.
	PipelineUpdate(ctx context.Context, p PipelineUpdateParams) (*Pipeline, error)
	// PipelineDelete removes a pipeline; its runs are kept, with their
	// numbers. errand.ErrNotFound for an unknown name.
	PipelineDelete(ctx context.Context, name string) error
	// PipelineRunID returns the id of run number of a pipeline (deleted
	// or not), errand.ErrNotFound if there is none.
	PipelineRunID(ctx context.Context, pipeline string, number int64) (string, error)
	// PipelineRunList returns the runs of a pipeline, highest number
	// first, without their config and plan, each with its Origin.
	PipelineRunList(ctx context.Context, p PipelineRunListParams) ([]*Run, error)
	// RunUsers lists the runs that show tasks of run id as their own
	// (restarts that kept its succeeded stages), oldest first: deleting
	// run id would take those tasks from them.
	RunUsers(ctx context.Context, id string) ([]string, error)
}

// PipelineRows are the methods of PipelineStore that a driver serves,
// and the origins of runs that the engine adds to the runs it reads.
type PipelineRows interface {
	PipelineCreate(ctx context.Context, p PipelineCreateParams) (*Pipeline, error)
	PipelineGet(ctx context.Context, name string) (*Pipeline, error)
	PipelineList(ctx context.Context, p PipelineListParams) ([]*Pipeline, error)
	PipelineUpdate(ctx context.Context, p PipelineUpdateParams) (*Pipeline, error)
	PipelineDelete(ctx context.Context, name string) error
	PipelineRunID(ctx context.Context, pipeline string, number int64) (string, error)
	PipelineRunList(ctx context.Context, p PipelineRunListParams) ([]*Run, error)
	RunUsers(ctx context.Context, id string) ([]string, error)
	// RunOrigins returns the origins of the runs that have one, by run
	// id.
	RunOrigins(ctx context.Context, ids []string) (map[string]*RunOrigin, error)
}

// PipelineTx is what a driver's write transaction does for origins.
type PipelineTx interface {
	// RunOriginInsert records where run runID came from. With
	// o.Pipeline set it takes the pipeline's next number and sets
	// o.Number (errand.ErrNotFound for an unknown pipeline). It records
	// o.Uses, the runs whose tasks the run shows as its own.
	RunOriginInsert(runID string, o *RunOrigin) error
}

// Limits of pipelines and origins.
const (
	// MaxPipelineName bounds a pipeline's name.
	MaxPipelineName = 64
	// MaxPipelineSpec bounds the encoded spec of a pipeline: its config
	// (at most MaxRunConfig) and the rest.
	MaxPipelineSpec = MaxRunConfig + 256<<10
	// MaxOriginField bounds each text field of a trigger.
	MaxOriginField = 4096
	// MaxOriginVariables bounds the encoded variables of a run.
	MaxOriginVariables = 256 << 10
	// MaxRunUses bounds the runs whose tasks one run shows.
	MaxRunUses = 64
)

var pipelineNamePattern = regexp.MustCompile(`^[a-z0-9_-]+$`)

// CheckPipelineName checks a pipeline's name: 1 to MaxPipelineName of
// a-z, 0-9, '_' and '-'.
func CheckPipelineName(name string) error {
	if name == "" || len(name) > MaxPipelineName || !pipelineNamePattern.MatchString(name) {
		return errand.Errorf(errand.CodeInvalid, "name: %q is not 1 to %d of a-z, 0-9, '_' and '-'", name, MaxPipelineName)
	}
	return nil
}

// Pipeline is a stored pipeline: its name and its spec, which the
// manager encodes and reads (config, config_path, source, variables,
// triggers, notifications); the store keeps it whole.
type Pipeline struct {
	Name      string
	Spec      json.RawMessage
	CreatedAt time.Time
	UpdatedAt time.Time
	// CreatedBy names who made it.
	CreatedBy string
	// LastNumber is the number of its latest run, 0 before its first.
	LastNumber int64
}

// PipelineCreateParams inserts a pipeline; CreatedAt and UpdatedAt are
// set from Now.
type PipelineCreateParams struct {
	Pipeline *Pipeline
	Now      time.Time
}

// Check checks the pipeline's fields.
func (p PipelineCreateParams) Check() error {
	if p.Pipeline == nil {
		return errand.Errorf(errand.CodeInvalid, "pipeline: required")
	}
	if len(p.Pipeline.CreatedBy) > MaxUserName {
		return errand.Errorf(errand.CodeInvalid, "created_by: longer than %d bytes", MaxUserName)
	}
	return checkPipeline(p.Pipeline.Name, p.Pipeline.Spec)
}

func checkPipeline(name string, spec json.RawMessage) error {
	if err := CheckPipelineName(name); err != nil {
		return err
	}
	if len(spec) > MaxPipelineSpec {
		return errand.Errorf(errand.CodeTooLarge, "pipeline %s: its spec is larger than %d bytes", name, MaxPipelineSpec)
	}
	if !json.Valid(spec) {
		return errand.Errorf(errand.CodeInvalid, "pipeline %s: its spec is not JSON", name)
	}
	return nil
}

// PipelineUpdateParams replaces a pipeline's spec; UpdatedAt is set from
// Now.
type PipelineUpdateParams struct {
	Name string
	Spec json.RawMessage
	Now  time.Time
}

// Check checks the update's fields.
func (p PipelineUpdateParams) Check() error { return checkPipeline(p.Name, p.Spec) }

// PipelineListParams pages PipelineList.
type PipelineListParams struct {
	// After returns pipelines whose name sorts after it.
	After string
	// Prefix keeps the pipelines whose name starts with it.
	Prefix string
	Limit  int // 0: 100
}

// PipelineRunListParams filters and pages PipelineRunList. Zero fields
// do not filter.
type PipelineRunListParams struct {
	Pipeline string
	// Before returns runs numbered below it (paging).
	Before int64
	// TriggerKind, Ref and Commit keep the runs whose trigger has them.
	TriggerKind string
	Ref         string
	Commit      string
	Limit       int // 0: 100
}

// RunOrigin is where a run came from.
type RunOrigin struct {
	// Pipeline names the stored pipeline the run is a run of, empty for
	// a run of a submitted config; Number is its number in that
	// pipeline, set by the store.
	Pipeline string
	Number   int64
	// Trigger says who or what started it.
	Trigger RunTrigger
	// Variables are the environment given to every step; ExtStr the
	// Jsonnet external variables its config was evaluated with.
	Variables map[string]string
	ExtStr    map[string]string
	// RestartOf is the run this one restarts, and RestartFrom where it
	// restarted it from (failed, start).
	RestartOf   string
	RestartFrom string
	// Uses lists the runs whose tasks this run shows as its own: the
	// stages a restart kept.
	Uses []string
}

// RunTrigger says who or what started a run, and the change it ran for.
type RunTrigger struct {
	// Kind is user, webhook, restart, or another kind a caller names.
	Kind    string `json:"kind"`
	Who     string `json:"who,omitempty"`
	Event   string `json:"event,omitempty"`
	Commit  string `json:"commit,omitempty"`
	Ref     string `json:"ref,omitempty"`
	Author  string `json:"author,omitempty"`
	Message string `json:"message,omitempty"`
}

// Check checks an origin's fields.
func (o *RunOrigin) Check() error {
	if o.Pipeline != "" {
		if err := CheckPipelineName(o.Pipeline); err != nil {
			return err
		}
	}
	tr := o.Trigger
	for _, f := range []string{tr.Kind, tr.Who, tr.Event, tr.Commit, tr.Ref, tr.Author, tr.Message, o.RestartOf, o.RestartFrom} {
		if len(f) > MaxOriginField {
			return errand.Errorf(errand.CodeInvalid, "trigger: a field is longer than %d bytes", MaxOriginField)
		}
	}
	if tr.Kind == "" {
		return errand.Errorf(errand.CodeInvalid, "trigger.kind: required")
	}
	if len(o.Uses) > MaxRunUses {
		return errand.Errorf(errand.CodeInvalid, "uses: more than %d runs", MaxRunUses)
	}
	n := 0
	for _, m := range []map[string]string{o.Variables, o.ExtStr} {
		for k, v := range m {
			n += len(k) + len(v)
		}
	}
	if n > MaxOriginVariables {
		return errand.Errorf(errand.CodeTooLarge, "variables: larger than %d bytes", MaxOriginVariables)
	}
	return nil
}

// checkRunTasks checks a run's tasks as errand.ValidateRunBatch does,
// except that a run that uses other runs' tasks (Origin.Uses) may depend
// on tasks outside its batch: the engine checks, in the transaction,
// that each is an ended task of a run it uses.
func checkRunTasks(r *Run, tasks []*errand.Task) error {
	if r.Origin == nil || len(r.Origin.Uses) == 0 {
		return errand.ValidateRunBatch(r.ID, tasks)
	}
	ids := make(map[string]bool, len(tasks))
	for _, t := range tasks {
		if t != nil {
			ids[t.ID] = true
		}
	}
	for i, t := range tasks {
		switch {
		case t == nil:
			return errand.Errorf(errand.CodeInvalid, "tasks[%d]: missing", i)
		case t.RunID != "" && t.RunID != r.ID:
			return errand.Errorf(errand.CodeInvalid, "tasks[%d].run_id: %s is not run %s", i, t.RunID, r.ID)
		case t.Affinity != "" && !ids[t.Affinity]:
			return errand.Errorf(errand.CodeInvalid, "tasks[%d].affinity: %s is not a task of the run", i, t.Affinity)
		}
	}
	return errand.ValidateBatch(tasks)
}

// OriginText is the encoded text of an origin's trigger and variables,
// as drivers store them.
type OriginText struct {
	Trigger, Variables, ExtStr string
}

// EncodeText encodes the origin's trigger and variables.
func (o *RunOrigin) EncodeText() (OriginText, error) {
	var out OriginText
	tr, err := json.Marshal(o.Trigger)
	if err != nil {
		return out, err
	}
	out.Trigger = string(tr)
	for _, f := range []struct {
		m   map[string]string
		dst *string
	}{{o.Variables, &out.Variables}, {o.ExtStr, &out.ExtStr}} {
		if len(f.m) == 0 {
			continue
		}
		b, err := json.Marshal(f.m)
		if err != nil {
			return out, err
		}
		*f.dst = string(b)
	}
	return out, nil
}

// DecodeText sets the origin's trigger and variables from their text.
func (o *RunOrigin) DecodeText(t OriginText) error {
	if err := json.Unmarshal([]byte(t.Trigger), &o.Trigger); err != nil {
		return err
	}
	for _, f := range []struct {
		text string
		dst  *map[string]string
	}{{t.Variables, &o.Variables}, {t.ExtStr, &o.ExtStr}} {
		if f.text == "" {
			continue
		}
		if err := json.Unmarshal([]byte(f.text), f.dst); err != nil {
			return err
		}
	}
	return nil
}

// UsedRuns returns o.Uses, nil for a nil origin.
func (o *RunOrigin) UsedRuns() []string {
	if o == nil {
		return nil
	}
	return o.Uses
}
