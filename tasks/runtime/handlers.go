package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/livelog"
	"github.com/errandci/errand/router"
	"github.com/errandci/errand/tasks"
)

// maxTaskBody bounds the task a handler reads.
const maxTaskBody = 8 << 20

// destroyTimeout bounds the release of a step once it ended.
const destroyTimeout = time.Minute

// Handlers serves a Driver's task types: <name>.initialize,
// <name>.execute and <name>.cleanup.
type Handlers struct {
	Driver Driver
	// StopGrace is the time a step has between the stop signal and the
	// kill when its task is cancelled or times out.
	StopGrace time.Duration
	// MaxStep bounds a step's run when its task has no timeout of its
	// own; zero leaves it unbounded.
	MaxStep time.Duration
	// Git configures the checkout of the stages' Git sources.
	Git GitOptions
	// Log receives what the handlers report outside a task's log;
	// logrus.StandardLogger() when nil.
	Log logrus.FieldLogger
	// Artifacts moves artifacts to and from the manager; without it a
	// step's artifacts are not kept (its log says so) and a stage that
	// needs artifacts fails to initialize.
	Artifacts ArtifactTransfer
}

// Register adds the driver's task types to r.
func (h *Handlers) Register(r *router.Router) {
	name := h.Driver.Name()
	r.HandleFunc(name+".initialize", h.Initialize)
	r.HandleFunc(name+".execute", h.Execute)
	r.HandleFunc(name+".cleanup", h.Cleanup)
}

// Initialize creates the stage's environment and answers with it.
func (h *Handlers) Initialize(w http.ResponseWriter, r *http.Request) {
	var data tasks.InitializeData
	t, err := decodeTask(r, &data)
	if err != nil {
		httphelper.WriteError(w, err)
		return
	}
	logs := router.LogFrom(r.Context())
	co, err := h.checkout(&data, logs)
	if err != nil {
		httphelper.WriteError(w, err)
		return
	}
	res, err := h.Driver.Initialize(r.Context(), &Init{Task: t, Data: &data, Checkout: co, Log: logs})
	if err != nil {
		httphelper.WriteError(w, err)
		return
	}
	if len(data.NeedsArtifacts) > 0 {
		if err := h.putNeededArtifacts(r.Context(), t, &data, res, logs); err != nil {
			h.undoInitialize(r.Context(), t, &data, res, logs)
			httphelper.WriteError(w, err)
			return
		}
	}
	httphelper.WriteJSON(w, res, http.StatusOK)
}

// Cleanup removes the stage's environment, found from the stage's
// initialize task among the task's dependencies.
func (h *Handlers) Cleanup(w http.ResponseWriter, r *http.Request) {
	var data tasks.CleanupData
	t, err := decodeTask(r, &data)
	if err != nil {
		httphelper.WriteError(w, err)
		return
	}
	init, ok := initializeOf(t)
	if !ok {
		httphelper.WriteError(w, errand.Errorf(errand.CodeInvalid, "cleanup task %s: no initialize task among the dependencies", t.ID))
		return
	}
	logs := router.LogFrom(r.Context())
	var kept *tasks.ArtifactsResult
	if failed, cancelled := stageFailed(t); data.Artifacts != nil && init.State == errand.StateSucceeded && !cancelled {
		// The stage's artifacts are kept before its workspace goes.
		if ws, err := WorkspaceOf(t, data.Stage); err == nil {
			kept = h.keepArtifacts(r.Context(), t, data.Artifacts, ws, failed, logs)
		}
	}
	res, err := h.Driver.Cleanup(r.Context(), &Cleanup{Task: t, Data: &data, Init: init, Log: logs})
	if err != nil {
		httphelper.WriteError(w, err)
		return
	}
	if kept != nil && kept.Error != "" && data.Artifacts.Required {
		httphelper.WriteError(w, errand.Errorf(errand.CodeTaskFailed, "stage %s: required artifacts not kept: %s", data.Stage.Stage, kept.Error))
		return
	}
	res.Artifacts = kept
	httphelper.WriteJSON(w, res, http.StatusOK)
}

// Execute runs one step: its commands as one script read by the shell,
// output lines shipped to the task log as they come with the step's
// secrets masked. A step that exits non-zero fails with exit_code and
// its result; one whose task is cancelled or times out is stopped with
// the grace and destroyed.
func (h *Handlers) Execute(w http.ResponseWriter, r *http.Request) {
	var data tasks.ExecuteData
	t, err := decodeTask(r, &data)
	if err != nil {
		httphelper.WriteError(w, err)
		return
	}
	res, err := h.execute(r.Context(), t, &data)
	if err != nil {
		httphelper.WriteError(w, err)
		return
	}
	if res.ExitCode != 0 {
		writeExitError(w, *res, fmt.Sprintf("step %s exited with code %d", data.Step, res.ExitCode))
		return
	}
	httphelper.WriteJSON(w, res, http.StatusOK)
}

func (h *Handlers) execute(ctx context.Context, t *errand.Task, data *tasks.ExecuteData) (*tasks.ExecuteResult, error) {
	if len(data.Commands) == 0 {
		return nil, errand.Errorf(errand.CodeInvalid, "step %s has no commands", data.Step)
	}
	stage, err := tasks.InitializeResultFrom(t.Dependencies)
	if err != nil {
		return nil, errand.Errorf(errand.CodeInvalid, "find the stage's resources: %v", err)
	}
	init, _ := initializeOf(t)
	wd, err := workingDir(data.WorkingDir)
	if err != nil {
		return nil, err
	}
	shell := strings.Fields(data.Shell)
	if len(shell) == 0 {
		shell = strings.Fields(DefaultShell)
	}
	logs := router.LogFrom(ctx)
	secrets := make([]string, 0, len(data.Secrets))
	for _, v := range data.Secrets {
		secrets = append(secrets, v)
	}
	out := NewOutput(logs, secrets...)
	s := &Step{Task: t, Data: data, Stage: stage, InitID: init.Task, Shell: shell,
		Script: strings.Join(data.Commands, "\n"), WorkingDir: wd, Output: out, Log: logs}

	runCtx, stopRun := ctx, context.CancelFunc(func() {})
	if h.MaxStep > 0 {
		runCtx, stopRun = context.WithTimeout(ctx, h.MaxStep)
	}
	defer stopRun()
	start := time.Now()
	step, err := h.Driver.Start(runCtx, s)
	if errors.Is(err, ErrShellNotFound) {
		out.Flush()
		fmt.Fprintf(logs, "%s: command not found\n", shell[0])
		return &tasks.ExecuteResult{ExitCode: 127, DurationMS: time.Since(start).Milliseconds()}, nil
	}
	if err != nil {
		out.Flush()
		return nil, err
	}
	log := h.logger().WithFields(logrus.Fields{"task_id": t.ID, "run_id": t.RunID, "runtime": h.Driver.Name()})
	log.Debug("step started")
	exit, err := step.Wait(runCtx)
	if err != nil && runCtx.Err() != nil {
		// The task was cancelled or timed out (or ran past MaxStep).
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.StopGrace+destroyTimeout)
		if serr := step.Stop(sctx, h.StopGrace); serr != nil {
			log.WithError(serr).Warn("stop step")
		}
		cancel()
	}
	h.destroy(ctx, t, step)
	out.Flush()
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return nil, context.Cause(ctx)
	case runCtx.Err() != nil:
		return nil, errand.Errorf(errand.CodeTimedOut, "step ran past %s", h.MaxStep)
	default:
		return nil, err
	}
	res := &tasks.ExecuteResult{ExitCode: exit.Code, DurationMS: time.Since(start).Milliseconds()}
	log.WithFields(logrus.Fields{"exit_code": res.ExitCode, "duration_ms": res.DurationMS}).Debug("step ended")
	if a := data.Artifacts; a != nil {
		ws := &Workspace{Task: t, Stage: data.Stage, Result: stage, InitID: init.Task}
		res.Artifacts = h.keepArtifacts(ctx, t, a, ws, exit.Code != 0, logs)
		if res.Artifacts != nil && res.Artifacts.Error != "" && a.Required && res.ExitCode == 0 {
			return nil, errand.Errorf(errand.CodeTaskFailed, "step %s: required artifacts not kept: %s", data.Step, res.Artifacts.Error)
		}
	}
	return res, nil
}

// destroy releases what is left of a step, whatever became of its task.
func (h *Handlers) destroy(ctx context.Context, t *errand.Task, step Handle) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), destroyTimeout)
	defer cancel()
	if err := step.Destroy(dctx); err != nil {
		h.logger().WithError(err).WithField("task_id", t.ID).Warn("destroy step")
	}
}

func (h *Handlers) logger() logrus.FieldLogger {
	if h.Log != nil {
		return h.Log
	}
	return logrus.StandardLogger()
}

// workingDir checks a step's working directory, which must be relative
// to the workspace and stay inside it, and returns it cleaned.
func workingDir(rel string) (string, error) {
	if rel == "" {
		return "", nil
	}
	if path.IsAbs(rel) {
		return "", errand.Errorf(errand.CodeInvalid, "working_dir %q must be relative to the workspace", rel)
	}
	clean := path.Clean(rel)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", errand.Errorf(errand.CodeInvalid, "working_dir %q leads outside the workspace", rel)
	}
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

// decodeTask reads the task from the request and its data into data.
func decodeTask(r *http.Request, data any) (*errand.Task, error) {
	var t errand.Task
	if err := httphelper.DecodeJSON(r, &t, maxTaskBody); err != nil {
		return nil, err
	}
	if len(t.Data) == 0 {
		return nil, errand.Errorf(errand.CodeInvalid, "task %s has no data", t.ID)
	}
	if err := httphelper.Unmarshal(t.Data, data); err != nil {
		return nil, fmt.Errorf("data of task %s: %w", t.ID, err)
	}
	return &t, nil
}

// initializeOf finds the stage's initialize task among t's
// dependencies.
func initializeOf(t *errand.Task) (errand.DependencyResult, bool) {
	for _, d := range t.Dependencies {
		if strings.HasSuffix(d.Type, ".initialize") {
			return d, true
		}
	}
	return errand.DependencyResult{}, false
}

// errorWithResult is an httphelper.ErrorBody with the step's result, which
// the router passes on with the failure.
type errorWithResult struct {
	httphelper.ErrorBody
	Result any `json:"result"`
}

func writeExitError(w http.ResponseWriter, res tasks.ExecuteResult, reason string) {
	body := errorWithResult{
		ErrorBody: httphelper.ErrorBody{Kind: errand.KindError, Code: errand.CodeExitCode, Reason: reason},
		Result:    res,
	}
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httphelper.Status(errand.CodeExitCode))
	_, _ = w.Write(b)
}

// EnvList turns a map into KEY=value entries sorted by key.
func EnvList(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+m[k])
	}
	return out
}

// maskerFor registers the secrets with a log writer that masks them
// itself and returns nil, or returns the masker that the step's output
// needs when it cannot.
func maskerFor(logs any, secrets []string) *livelog.Masker {
	if m, ok := logs.(router.Masker); ok {
		m.Mask(secrets...)
		return nil
	}
	if len(secrets) == 0 {
		return nil
	}
	m, _ := livelog.NewMasker(secrets...)
	return m
}
