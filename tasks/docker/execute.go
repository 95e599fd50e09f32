package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	dockerclient "github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/errandci/errand"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/livelog"
	"github.com/errandci/errand/router"
	"github.com/errandci/errand/tasks"
)

// outputDrain bounds the wait for a step's last output once its container
// has exited.
const outputDrain = 2 * time.Second

// Execute runs one step in a container of its own: the stage image (or
// the step's), the workspace (the stage's volume, or the bound source
// directory) mounted at Workspace, the stage network, the step's
// environment and secrets as container environment, and its commands
// read as one script by the shell. Output is shipped to the task log line
// by line, stdout and stderr each in order, as it comes.
// When the task is cancelled or times out the container is stopped
// (SIGTERM, then SIGKILL after the grace) and removed.
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

// step is a step container to run.
type step struct {
	config  *container.Config
	host    *container.HostConfig
	secrets []string
}

func (h *Handlers) execute(ctx context.Context, t *errand.Task, data *tasks.ExecuteData) (*tasks.ExecuteResult, error) {
	if len(data.Commands) == 0 {
		return nil, errand.Errorf(errand.CodeInvalid, "step %s has no commands", data.Step)
	}
	if data.Privileged && !h.cfg.AllowPrivileged {
		return nil, errand.Errorf(CodePrivilegedNotAllowed,
			"step %s asks for a privileged container; this delegate was not started with --allow-privileged", data.Step)
	}
	init, err := tasks.InitializeResultFrom(t.Dependencies)
	if err != nil {
		return nil, errand.Errorf(errand.CodeInvalid, "find the stage's resources: %v", err)
	}
	ws, err := h.workspaceMount(init.Volume)
	if err != nil {
		return nil, err
	}
	initID := ""
	for _, d := range t.Dependencies {
		if strings.HasSuffix(d.Type, ".initialize") {
			initID = d.Task
			break
		}
	}
	dir, err := workingDir(data.WorkingDir)
	if err != nil {
		return nil, err
	}
	img := data.Image
	if img == "" {
		img = init.Image
	}
	if img == "" {
		return nil, errand.Errorf(errand.CodeInvalid, "step %s has no image and the stage none either", data.Step)
	}
	logs := router.LogFrom(ctx)
	if img != init.Image {
		if err := h.ensureImage(ctx, img, PullIfNotPresent, logs); err != nil {
			return nil, err
		}
	}
	shell := strings.Fields(data.Shell)
	if len(shell) == 0 {
		shell = strings.Fields(DefaultShell)
	}
	labels, err := h.labels(ctx, t, data.Stage, initID)
	if err != nil {
		return nil, err
	}
	labels[LabelStep] = data.Step
	s := &step{
		config: &container.Config{
			Image:        img,
			Entrypoint:   append(shell[:len(shell):len(shell)], "-c", strings.Join(data.Commands, "\n")),
			Env:          stepEnv(data),
			WorkingDir:   dir,
			Labels:       labels,
			AttachStdout: true,
			AttachStderr: true,
		},
		host: &container.HostConfig{
			NetworkMode: container.NetworkMode(init.Network),
			Mounts:      []mount.Mount{ws},
			Privileged:  data.Privileged,
			Init:        boolPtr(true),
			Resources:   resources(data.Resources),
		},
	}
	for _, v := range data.Secrets {
		s.secrets = append(s.secrets, v)
	}
	return h.run(ctx, t, s, logs)
}

// stepEnv is the container environment of a step: Errand's variables,
// then the step's environment and secrets, each sorted by name.
func stepEnv(d *tasks.ExecuteData) []string {
	env := []string{"CI=true", "ERRAND_WORKSPACE=" + Workspace, "ERRAND_RUN_ID=" + d.RunID,
		"ERRAND_STAGE=" + d.Stage.Stage, "ERRAND_STEP=" + d.Step}
	env = append(env, envList(d.Environment)...)
	return append(env, envList(d.Secrets)...)
}

// envList turns a map into sorted KEY=value entries.
func envList(m map[string]string) []string {
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

// run creates, attaches to, starts and waits for the step container, and
// removes it whatever happens.
func (h *Handlers) run(ctx context.Context, t *errand.Task, s *step, logs io.Writer) (*tasks.ExecuteResult, error) {
	log := h.cfg.Log.WithFields(logFields(t))
	actx, cancel := h.api(ctx)
	created, err := h.docker.ContainerCreate(actx, s.config, s.host, nil, nil, "")
	cancel()
	if err != nil {
		return nil, failure("create step container", err)
	}
	id := created.ID
	// A container that exited is removed after the outcome is known, so
	// that the next step need not wait for it; a stopped one before.
	exited := false
	defer func() {
		remove := func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.APITimeout)
			defer cancel()
			if err := h.docker.ContainerRemove(rctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !dockerclient.IsErrNotFound(err) {
				log.WithError(err).WithField("container", shortID(id)).Warn("remove step container")
			}
		}
		if !exited {
			remove()
			return
		}
		h.removals.Add(1)
		go func() {
			defer h.removals.Done()
			remove()
		}()
	}()

	// Attach and wait before the start so that no output and no exit is
	// missed, however short the step.
	runCtx, stopRun := context.WithTimeout(ctx, h.cfg.MaxStep)
	defer stopRun()
	att, err := h.docker.ContainerAttach(runCtx, id, container.AttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		return nil, failure("attach to step container", err)
	}
	defer att.Close()
	waitC, errC := h.docker.ContainerWait(runCtx, id, container.WaitConditionNextExit)

	var mu sync.Mutex
	// A log writer that cannot mask gets lines masked here, in one pass.
	var masker *livelog.Masker
	if m, ok := logs.(router.Masker); ok {
		m.Mask(s.secrets...)
	} else if len(s.secrets) > 0 {
		masker, _ = livelog.NewMasker(s.secrets...)
	}
	stdout := &lineWriter{mu: &mu, w: logs, masker: masker}
	stderr := &lineWriter{mu: &mu, w: logs, masker: masker}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = stdcopy.StdCopy(stdout, stderr, att.Reader)
	}()
	drain := func() {
		select {
		case <-copied:
		case <-time.After(outputDrain):
			att.Close()
			<-copied
		}
		stdout.flush()
		stderr.flush()
	}

	start := time.Now()
	actx, cancel = h.api(ctx)
	err = h.docker.ContainerStart(actx, id, container.StartOptions{})
	cancel()
	if err != nil {
		att.Close()
		<-copied
		if strings.Contains(err.Error(), "executable file not found") || strings.Contains(err.Error(), "no such file or directory") {
			fmt.Fprintf(logs, "%s: command not found\n", s.config.Entrypoint[0])
			return &tasks.ExecuteResult{ExitCode: 127, DurationMS: time.Since(start).Milliseconds()}, nil
		}
		return nil, failure("start step container", err)
	}

	// The output ends when the container's process exits: its exit code
	// is then known, earlier than the wait answers (which comes after the
	// daemon tore the container's network down).
	output := copied
	for {
		select {
		case <-output:
			output = nil
			if code, ok := h.exited(ctx, id); ok {
				exited = true
				drain()
				return &tasks.ExecuteResult{ExitCode: code, DurationMS: time.Since(start).Milliseconds()}, nil
			}
			continue
		case wr := <-waitC:
			exited = true
			drain()
			if wr.Error != nil && wr.Error.Message != "" {
				return nil, errand.Errorf(errand.CodeTaskFailed, "wait for step container: %s", wr.Error.Message)
			}
			return &tasks.ExecuteResult{ExitCode: int(wr.StatusCode), DurationMS: time.Since(start).Milliseconds()}, nil
		case err := <-errC:
			if ctx.Err() == nil && runCtx.Err() == nil {
				drain()
				return nil, failure("wait for step container", err)
			}
		}
		break
	}
	// The task was cancelled or timed out (or ran past MaxStep): stop the
	// container, SIGKILL after the grace.
	h.stop(ctx, id)
	drain()
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	return nil, errand.Errorf(errand.CodeTimedOut, "step ran past %s", h.cfg.MaxStep)
}

// exited returns the exit code of a container that is no longer running.
func (h *Handlers) exited(ctx context.Context, id string) (int, bool) {
	actx, cancel := h.api(ctx)
	defer cancel()
	info, err := h.docker.ContainerInspect(actx, id)
	if err != nil || info.State == nil || info.State.Running || info.State.FinishedAt == "" || strings.HasPrefix(info.State.FinishedAt, "0001-") {
		return 0, false
	}
	return info.State.ExitCode, true
}

// stop stops a container: SIGTERM, then SIGKILL after the grace.
func (h *Handlers) stop(ctx context.Context, id string) {
	grace := int(h.cfg.StopGrace.Round(time.Second) / time.Second)
	if grace < 1 && h.cfg.StopGrace > 0 {
		grace = 1
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.StopGrace+h.cfg.APITimeout)
	defer cancel()
	if err := h.docker.ContainerStop(sctx, id, container.StopOptions{Timeout: &grace}); err != nil {
		h.cfg.Log.WithError(err).WithField("container", shortID(id)).Warn("stop step container")
	}
}

// lineWriter writes whole lines to a log shared with other streams, so
// that lines of stdout and stderr never mix within one line. A line
// longer than livelog.DefaultMaxLineBytes is written in parts, so that
// output with no newline never grows without bound.
type lineWriter struct {
	mu      *sync.Mutex
	w       io.Writer
	masker  *livelog.Masker // nil when w masks
	partial []byte
}

func (l *lineWriter) mask(s string) string {
	if l.masker.Empty() {
		return s
	}
	return l.masker.Mask(s)
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.partial = append(l.partial, p...)
	var out string
	if i := bytes.LastIndexByte(l.partial, '\n'); i >= 0 {
		out = l.mask(string(l.partial[:i+1]))
		l.partial = append(l.partial[:0], l.partial[i+1:]...)
	} else if len(l.partial) > livelog.DefaultMaxLineBytes {
		// The part ends as a line of its own, so that the other stream
		// never continues it.
		cut := l.masker.SafeCut(string(l.partial))
		out = l.mask(string(l.partial[:cut])) + "\n"
		l.partial = append(l.partial[:0], l.partial[cut:]...)
	} else {
		return len(p), nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := io.WriteString(l.w, out); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (l *lineWriter) flush() {
	if len(l.partial) == 0 {
		return
	}
	out := l.mask(string(l.partial)) + "\n"
	l.partial = nil
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = io.WriteString(l.w, out)
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
