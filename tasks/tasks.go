// Package tasks defines the data and results of the built-in task types,
// shared by the pipeline expansion that writes them and the handlers that
// read them (tasks/runtime, over its drivers: tasks/exec for host
// processes, tasks/docker for containers).
//
// A stage becomes one initialize task, one execute task per step and one
// cleanup task. Handlers keep no state between them: what initialize
// creates is its result, and execute and cleanup find it among their
// dependencies' results (see InitializeResultFrom).
package tasks

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/errandci/errand"
)

// Stage identifies the stage a task belongs to.
type Stage struct {
	RunID string `json:"run_id,omitempty"`
	Stage string `json:"stage"`
}

// InitializeData is the data of exec.initialize and docker.initialize.
type InitializeData struct {
	Stage
	// Image is the stage's default image (docker).
	Image string `json:"image,omitempty"`
	// Pull is the pull policy: if-not-present (default), always, never.
	Pull string `json:"pull,omitempty"`
	// Services are containers started for the steps to reach by name.
	Services []Service `json:"services,omitempty"`
	// Privileged asks for privileged containers; a delegate not started
	// with --allow-privileged refuses it.
	Privileged bool `json:"privileged,omitempty"`
	// Resources limit the stage's containers.
	Resources Resources `json:"resources,omitempty"`
	// NeedsArtifacts names earlier stages of the run whose artifacts are
	// put into the workspace once it is created.
	NeedsArtifacts []string `json:"needs_artifacts,omitempty"`
	// Checkout, when set, is the Git commit the workspace starts as.
	Checkout *GitCheckout `json:"checkout,omitempty"`
	// Secrets holds, in the leased copy of the task, the value of the
	// secret that Checkout's credentials name.
	Secrets map[string]string `json:"secrets,omitempty"`
}

// Service is a container that runs beside a stage's steps.
type Service struct {
	Name        string            `json:"name"`
	Image       string            `json:"image"`
	Environment map[string]string `json:"environment,omitempty"`
	// Commands, when set, are run with sh -c instead of the image's
	// command.
	Commands []string `json:"commands,omitempty"`
	// Readiness, when set, is run in the service until it exits 0.
	Readiness []string `json:"readiness,omitempty"`
}

// Resources limit a container.
type Resources struct {
	MemoryBytes int64   `json:"memory_bytes,omitempty"`
	CPUs        float64 `json:"cpus,omitempty"`
}

// InitializeResult is what initialize created. Exactly the fields of the
// runtime are set.
type InitializeResult struct {
	// Workspace is the host directory of an exec stage.
	Workspace string `json:"workspace,omitempty"`
	// Network, Volume and Containers are the docker resources of a stage.
	Network    string   `json:"network,omitempty"`
	Volume     string   `json:"volume,omitempty"`
	Containers []string `json:"containers,omitempty"`
	// Image is the stage image as resolved by initialize.
	Image string `json:"image,omitempty"`
}

// ExecuteData is the data of exec.execute and docker.execute: one step.
type ExecuteData struct {
	Stage
	Step string `json:"step"`
	// Image overrides the stage image for this step (docker).
	Image string `json:"image,omitempty"`
	// Commands run in order with Shell (default "sh -e"): the first that
	// fails ends the step.
	Commands []string `json:"commands"`
	// Shell is the shell that reads the commands, e.g. "bash -e".
	Shell       string            `json:"shell,omitempty"`
	Environment map[string]string `json:"environment,omitempty"`
	// Secrets are passed as environment variables and masked in every
	// log line.
	Secrets map[string]string `json:"secrets,omitempty"`
	// WorkingDir is relative to the workspace.
	WorkingDir string    `json:"working_dir,omitempty"`
	Privileged bool      `json:"privileged,omitempty"`
	Resources  Resources `json:"resources,omitempty"`
	// Artifacts are kept from the workspace once the step ended.
	Artifacts *Artifacts `json:"artifacts,omitempty"`
}

// ExecuteResult is the outcome of a step.
type ExecuteResult struct {
	ExitCode   int   `json:"exit_code"`
	DurationMS int64 `json:"duration_ms"`
	// Artifacts says what became of the step's artifacts.
	Artifacts *ArtifactsResult `json:"artifacts,omitempty"`
}

// CleanupData is the data of exec.cleanup and docker.cleanup.
type CleanupData struct {
	Stage
	// Artifacts are the stage's: kept from the workspace after its last
	// step, before the workspace is removed.
	Artifacts *Artifacts `json:"artifacts,omitempty"`
}

// CleanupResult says what cleanup removed.
type CleanupResult struct {
	Removed []string `json:"removed,omitempty"`
	// Artifacts says what became of the stage's artifacts.
	Artifacts *ArtifactsResult `json:"artifacts,omitempty"`
}

// InitializeResultFrom finds the result of the stage's initialize task
// among a task's dependencies' results.
func InitializeResultFrom(deps []errand.DependencyResult) (*InitializeResult, error) {
	for _, d := range deps {
		if !strings.HasSuffix(d.Type, ".initialize") {
			continue
		}
		if d.State != errand.StateSucceeded {
			return nil, fmt.Errorf("initialize task %s ended %s", d.Task, d.State)
		}
		var r InitializeResult
		if err := json.Unmarshal(d.Result, &r); err != nil {
			return nil, fmt.Errorf("initialize task %s result: %w", d.Task, err)
		}
		return &r, nil
	}
	return nil, fmt.Errorf("no initialize task among the dependencies")
}
