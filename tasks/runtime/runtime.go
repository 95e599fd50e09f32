// Package runtime runs a stage's tasks over a Driver: the
// initialize, execute and cleanup http.Handlers are written once here
// (decoding, validation, exit codes and errors, result shaping, log
// streaming with secrets masked, timeouts and cancellation), and a
// runtime (tasks/exec for host processes, tasks/docker for containers)
// implements only the Driver.
//
// The shape is that of Nomad's task drivers: a stage's environment is
// created by Initialize and removed by Cleanup; each step is started by
// Start, which returns a Handle to wait for it, stop it with a grace,
// destroy what is left of it and inspect it.
//
// A new runtime (Kubernetes, say) implements Driver and Handle, and
// nothing else:
//
//   - Name: the prefix of its task types (<name>.initialize, …).
//   - Initialize: create the stage's environment (workspace, network,
//     service containers) and return it as the result. Handlers keep no
//     state between tasks: everything execute and cleanup need must be
//     in that result or findable from the initialize task's id (labels).
//     Refuse what the delegate does not allow (a privileged stage
//     without --allow-privileged). When Init.Checkout is set, the
//     workspace starts as that Git commit (Checkout.Into). On failure,
//     remove what was created.
//   - Start: run one step's script with the step's shell, in the working
//     directory under the workspace, with Step.Env, sending output to
//     Step.Output (one Stream per output stream). A shell that cannot be
//     found is ErrShellNotFound.
//   - Handle.Wait, Stop, Destroy, Inspect: see Handle. Destroy must leave
//     nothing of the step running (its children included).
//   - Cleanup: remove the stage's environment, idempotently, possibly in
//     a process that never saw the initialize (a restarted delegate, a
//     sibling).
//   - WorkspaceExport, WorkspaceImport: read entries of the stage's
//     workspace out as a tar stream, and extract one into it, never
//     following a symbolic link (artifacts and caches move files this
//     way, whatever the runtime).
//
// The delegate serves it with (&Handlers{Driver: d, StopGrace: g}).Register(r).
// runtimetest holds the cases every Driver must pass; a runtime is done
// when runtimetest.Run passes against it.
package runtime

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/tasks"
)

// DefaultShell reads a step's commands: the first that fails ends it.
const DefaultShell = "sh -e"

// ErrShellNotFound is what Driver.Start returns when the step's shell
// cannot be found: the step then fails with exit code 127, as a shell
// says of a command it cannot find.
var ErrShellNotFound = errors.New("shell not found")

// Driver is a runtime: where and how a stage's steps run.
type Driver interface {
	// Name is the runtime's name, the prefix of its task types: "exec"
	// serves exec.initialize, exec.execute and exec.cleanup.
	Name() string
	// Initialize creates the stage's environment and returns it. What
	// it creates is its result; when it fails it removes what it
	// created.
	Initialize(ctx context.Context, s *Init) (*tasks.InitializeResult, error)
	// Start starts one step in the stage's environment. It returns once
	// the step runs; the step's context is ctx. When it fails it leaves
	// nothing of the step running and writes no more to its Output.
	Start(ctx context.Context, s *Step) (Handle, error)
	// Cleanup removes the stage's environment. It is idempotent and
	// needs nothing but its argument.
	Cleanup(ctx context.Context, s *Cleanup) (*tasks.CleanupResult, error)
	// WorkspaceExport reads the entries of the stage's workspace at or
	// under each of paths (relative slash paths; "." is all of it) as
	// a tar stream: names relative to the workspace, directories with a
	// trailing slash, symbolic links as links (never followed),
	// permission bits and modification times kept. A path that does not
	// exist is left out; one whose parent is a symbolic link fails with
	// an error wrapping workspace.ErrThroughLink (internal/workspace),
	// and one that leaves the workspace with workspace.ErrOutside; the
	// stream fails with them when they are found while it is read.
	// Closing the stream early is allowed and releases what the export
	// holds.
	WorkspaceExport(ctx context.Context, ws *Workspace, paths []string) (io.ReadCloser, error)
	// WorkspaceImport extracts a tar stream into the stage's workspace:
	// directories, regular files (replacing what is at their name) and
	// symbolic links (as links). An entry whose name leaves the
	// workspace, or of another type, fails it with an error wrapping
	// workspace.ErrBadEntry, and nothing is ever written outside the
	// workspace. Entries already extracted when it fails stay.
	WorkspaceImport(ctx context.Context, ws *Workspace, tar io.Reader) error
}

// Workspace names a stage's workspace for WorkspaceExport and
// WorkspaceImport.
type Workspace struct {
	// Task is the task served (the stage's initialize, one of its
	// steps, its cleanup, or another task of the stage).
	Task *errand.Task
	// Stage is the stage's run and name.
	Stage tasks.Stage
	// Result is what the stage's initialize created.
	Result *tasks.InitializeResult
	// InitID is the id of the stage's initialize task.
	InitID string
}

// WorkspaceOf is the workspace of the stage t belongs to, found from
// the stage's initialize task among t's dependencies.
func WorkspaceOf(t *errand.Task, stage tasks.Stage) (*Workspace, error) {
	res, err := tasks.InitializeResultFrom(t.Dependencies)
	if err != nil {
		return nil, errand.Errorf(errand.CodeInvalid, "find the stage's workspace: %v", err)
	}
	init, _ := initializeOf(t)
	return &Workspace{Task: t, Stage: stage, Result: res, InitID: init.Task}, nil
}

// Handle is a started step.
type Handle interface {
	// Wait waits until the step's process exits and returns how it
	// exited, or ctx's error when ctx ends first (the step runs on).
	Wait(ctx context.Context) (Exit, error)
	// Stop asks the step to end (SIGTERM), kills it when it has not
	// ended after grace (SIGKILL), and returns once it ended.
	Stop(ctx context.Context, grace time.Duration) error
	// Destroy kills whatever is left of the step (processes it left
	// behind), waits a bounded time for its output to end, and releases
	// what the step used. It is called once the step ended or was
	// stopped, and may be called again.
	Destroy(ctx context.Context) error
	// Inspect says whether the step runs and how it exited.
	Inspect(ctx context.Context) (Status, error)
}

// Exit is how a step's process exited.
type Exit struct {
	// Code is the exit status, or 128 + the signal that killed it.
	Code int
}

// Status is what Inspect tells of a step.
type Status struct {
	Running   bool
	StartedAt time.Time
	// Exit is set once the step exited.
	Exit *Exit
}

// Init is what Driver.Initialize gets.
type Init struct {
	Task *errand.Task
	Data *tasks.InitializeData
	// Checkout, when set, is the Git commit the workspace starts as
	// instead of being empty (or a copy of a project directory).
	Checkout *Checkout
	// Log is the task's log.
	Log io.Writer
}

// Step is what Driver.Start gets: one step, validated.
type Step struct {
	Task *errand.Task
	Data *tasks.ExecuteData
	// Stage is what the stage's initialize created.
	Stage *tasks.InitializeResult
	// InitID is the id of the stage's initialize task.
	InitID string
	// Shell reads Script: the step's shell, or DefaultShell, split in
	// words; never empty.
	Shell []string
	// Script is the step's commands, one a line.
	Script string
	// WorkingDir is the step's working directory relative to the
	// workspace, cleaned, "" for the workspace itself; it never leads
	// out of it (symbolic links aside: a driver whose workspace may hold
	// some resolves them itself).
	WorkingDir string
	// Output receives the step's output: a driver writes each output
	// stream to one Stream of its own.
	Output *Output
	// Log is the task's log, for what the driver itself says (e.g. an
	// image pull); the step's output goes to Output.
	Log io.Writer
}

// Env is the step's environment for a workspace at ws: Errand's
// variables, then the step's environment and secrets, each sorted by
// name.
func (s *Step) Env(ws string) []string {
	d := s.Data
	env := []string{"CI=true", "ERRAND_WORKSPACE=" + ws, "ERRAND_RUN_ID=" + d.RunID,
		"ERRAND_STAGE=" + d.Stage.Stage, "ERRAND_STEP=" + d.Step}
	env = append(env, EnvList(d.Environment)...)
	return append(env, EnvList(d.Secrets)...)
}

// Cleanup is what Driver.Cleanup gets.
type Cleanup struct {
	Task *errand.Task
	Data *tasks.CleanupData
	// Init is the stage's initialize task as the cleanup task's
	// dependency: its id, its end state and, when it succeeded, its
	// result.
	Init errand.DependencyResult
	// Log is the task's log.
	Log io.Writer
}
