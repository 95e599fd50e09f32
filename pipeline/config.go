// Package pipeline reads, checks and expands Errand pipeline configs: the
// Run / Stage / Step model written as config.jsonnet, config.json or
// config.yml, its validation with the path (and line) of every problem,
// its expansion into a graph of initialize, execute and cleanup tasks, and
// the pure functions that derive stage and run status from those tasks.
//
// The manager's runs API and the errand run and submit commands build on
// four calls: Load (or Parse), (*Config).Validate, Expand and RunStatus.
package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/errandci/errand"
	"github.com/errandci/errand/tasks"
)

// Runtime types.
const (
	RuntimeHost   = "host"
	RuntimeDocker = "docker"
)

// Pull policies of a docker runtime.
const (
	PullAlways       = "always"
	PullNever        = "never"
	PullIfNotPresent = "if-not-present"
)

// Step types. A step without a type is a run step.
const (
	StepRun = "run"
)

// Step statuses a step's when.status may name: the outcome of the earlier
// steps of its stage after which it runs.
const (
	StatusSuccess = "success"
	StatusFailure = "failure"
)

// Config is a pipeline: its stages, in the order they are written.
type Config struct {
	Stages []*Stage `json:"stages"`

	// src places paths in the file the config was read from.
	src *source
}

// Stage is a group of steps that run one after the other on one delegate,
// in one runtime.
type Stage struct {
	Name        string            `json:"name"`
	Runtime     Runtime           `json:"runtime,omitempty"`
	Environment map[string]string `json:"environment,omitempty"`
	// Secrets are names whose values the run supplies; they reach every
	// step as environment variables and are masked in logs.
	Secrets []string `json:"secrets,omitempty"`
	// Timeout bounds each task of the stage; a step's own timeout
	// overrides it for that step. Zero leaves the manager's default.
	Timeout errand.Duration `json:"timeout,omitempty"`
	Steps   []*Step         `json:"steps"`
	Depends []Depend        `json:"depends,omitempty"`
	// When restricts the runs in which the stage runs at all.
	When *When `json:"when,omitempty"`
	// Approval holds the stage until enough distinct people approve it.
	Approval   *Approval       `json:"approval,omitempty"`
	Privileged bool            `json:"privileged,omitempty"`
	Selector   errand.Selector `json:"selector,omitempty"`
	Resources  Resources       `json:"resources,omitempty"`
	// Artifacts are kept from the workspace after the stage's last step.
	Artifacts *tasks.Artifacts `json:"artifacts,omitempty"`
	// NeedsArtifacts names earlier stages whose artifacts are put into
	// this stage's workspace before its first step.
	NeedsArtifacts []string `json:"needs_artifacts,omitempty"`
}

// Runtime says where a stage's steps run.
type Runtime struct {
	// Type is host (the default) or docker.
	Type string `json:"type,omitempty"`
	// Image is the default image of the stage's steps (docker).
	Image string `json:"image,omitempty"`
	// Pull is always, never or if-not-present (the default).
	Pull     string    `json:"pull,omitempty"`
	Services []Service `json:"services,omitempty"`
}

// Service is a container started beside a docker stage's steps,
// reachable from them by its name.
type Service struct {
	Name        string            `json:"name"`
	Image       string            `json:"image"`
	Environment map[string]string `json:"environment,omitempty"`
	// Commands, when set, run with sh -c instead of the image's command.
	Commands []string `json:"commands,omitempty"`
	// Readiness, when set, runs in the service until it exits 0.
	Readiness []string `json:"readiness,omitempty"`
}

// Resources limit a stage's containers.
type Resources struct {
	// Memory is a size such as "512m" or "2GiB" (binary units).
	Memory string `json:"memory,omitempty"`
	// CPUs is a number of CPUs, fractions allowed.
	CPUs float64 `json:"cpus,omitempty"`
}

// Approval says how many distinct approvers a stage waits for.
type Approval struct {
	Approvers int `json:"approvers"`
}

// When restricts a stage to runs of some branches and events. An empty
// list matches every run; branch entries may be path.Match patterns
// ("release/*").
type When struct {
	Branch []string `json:"branch,omitempty"`
	Event  []string `json:"event,omitempty"`
}

// Depend is a dependency of a stage on another stage's outcome. In a
// config it is either the other stage's name (meaning on_success) or an
// object with conditions, any of which lets the stage run.
type Depend struct {
	Stage      string             `json:"stage"`
	Conditions []errand.Condition `json:"conditions,omitempty"`
}

// conditions returns the depend's conditions, on_success when none are
// written.
func (d Depend) conditions() []errand.Condition {
	if len(d.Conditions) == 0 {
		return []errand.Condition{errand.OnSuccess}
	}
	return d.Conditions
}

// decodeAt reads a bare stage name or an object.
func (d *Depend) decodeAt(path string, raw json.RawMessage, errs *Errors) {
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '"' {
		var name string
		if err := json.Unmarshal(raw, &name); err != nil {
			errs.add(path, err.Error())
			return
		}
		*d = Depend{Stage: name}
		return
	}
	type plain Depend
	var p plain
	decodeValue(path, raw, &p, errs)
	*d = Depend(p)
}

// MarshalJSON writes a depend on on_success alone as a bare name.
func (d Depend) MarshalJSON() ([]byte, error) {
	if len(d.Conditions) == 0 {
		return json.Marshal(d.Stage)
	}
	type plain Depend
	return json.Marshal(plain(d))
}

// Step is one command list of a stage, or a typed step whose type decides
// how the rest of it is read. Only the run type exists now.
type Step struct {
	Name string `json:"name"`
	// Type is "run" when empty.
	Type     string   `json:"type,omitempty"`
	Commands []string `json:"commands"`
	// Image overrides the stage image for this step (docker).
	Image string `json:"image,omitempty"`
	// Shell reads the commands, e.g. "bash -e"; the handler's default is
	// "sh -e".
	Shell       string            `json:"shell,omitempty"`
	Environment map[string]string `json:"environment,omitempty"`
	// WorkingDir is relative to the stage's workspace.
	WorkingDir string          `json:"working_dir,omitempty"`
	When       *StepWhen       `json:"when,omitempty"`
	Timeout    errand.Duration `json:"timeout,omitempty"`
	// Artifacts are kept from the workspace once the step ended.
	Artifacts *tasks.Artifacts `json:"artifacts,omitempty"`
}

// StepWhen says after which outcome of the earlier steps of its stage a
// step runs. A step without it runs only when they all succeeded.
type StepWhen struct {
	// Status lists success, failure or both.
	Status []string `json:"status,omitempty"`
}

// decodeAt reads a step through its type.
func (s *Step) decodeAt(path string, raw json.RawMessage, errs *Errors) {
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		// Not an object, or a type that is not a string: let the
		// strict decoder say which.
		head.Type = StepRun
	}
	switch head.Type {
	case "", StepRun:
		type plain Step
		var p plain
		decodeValue(path, raw, &p, errs)
		*s = Step(p)
	default:
		errs.add(path+".type", fmt.Sprintf("unknown step type %q (known: %s)", head.Type, StepRun))
	}
}

// runsOn reports whether the step's when.status includes status; a step
// without when runs on success only.
func (s *Step) runsOn(status string) bool {
	if s.When == nil || len(s.When.Status) == 0 {
		return status == StatusSuccess
	}
	for _, x := range s.When.Status {
		if x == status {
			return true
		}
	}
	return false
}

// reporter reports whether the step also runs after a failure: such a
// step neither decides its stage's outcome nor stops later steps.
func (s *Step) reporter() bool { return s.runsOn(StatusFailure) }

// runtimeType returns the stage's runtime type, host when unset.
func (s *Stage) runtimeType() string {
	if s.Runtime.Type == "" {
		return RuntimeHost
	}
	return s.Runtime.Type
}
