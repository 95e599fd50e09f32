package docker

import (
	"context"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	dockerclient "github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/tasks/runtime"
)

// outputDrain bounds the wait for a step's last output once its container
// has exited.
const outputDrain = 2 * time.Second

// Start runs one step in a container of its own: the stage image (or
// the step's), the workspace (the stage's volume, or the bound source
// directory) mounted at Workspace, the stage network, the step's
// environment and secrets as container environment, and its script read
// by the shell. Stdout and stderr are streams of their own.
func (d driver) Start(ctx context.Context, s *runtime.Step) (runtime.Handle, error) {
	h, data, init := d.h, s.Data, s.Stage
	if data.Privileged && !h.cfg.AllowPrivileged {
		return nil, errand.Errorf(CodePrivilegedNotAllowed,
			"step %s asks for a privileged container; this delegate was not started with --allow-privileged", data.Step)
	}
	ws, err := h.workspaceMount(init.Volume)
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
	if img != init.Image {
		if err := h.ensureImage(ctx, img, PullIfNotPresent, s.Log); err != nil {
			return nil, err
		}
	}
	labels, err := h.labels(ctx, s.Task, data.Stage, s.InitID)
	if err != nil {
		return nil, err
	}
	labels[LabelStep] = data.Step
	cfg := &container.Config{
		Image:        img,
		Entrypoint:   append(s.Shell[:len(s.Shell):len(s.Shell)], "-c", s.Script),
		Env:          s.Env(Workspace),
		WorkingDir:   path.Join(Workspace, s.WorkingDir),
		Labels:       labels,
		AttachStdout: true,
		AttachStderr: true,
	}
	host := &container.HostConfig{
		NetworkMode: container.NetworkMode(init.Network),
		Mounts:      []mount.Mount{ws},
		Privileged:  data.Privileged,
		Init:        boolPtr(true),
		Resources:   resources(data.Resources),
	}
	return h.start(ctx, s, cfg, host)
}

// step is a started step container.
type step struct {
	h       *Handlers
	id      string
	log     logrus.FieldLogger
	ctx     context.Context // the step's, for its removal's values
	started time.Time
	att     interface{ Close() error }
	waitC   <-chan container.WaitResponse
	errC    <-chan error
	copied  chan struct{}

	mu     sync.Mutex
	exited bool // its exit is known: it is removed after the outcome
	waited bool // the wait's answer was read
	once   sync.Once
}

// start creates, attaches to and starts the step container. Attach and
// wait come before the start so that no output and no exit is missed,
// however short the step.
func (h *Handlers) start(ctx context.Context, s *runtime.Step, cfg *container.Config, host *container.HostConfig) (*step, error) {
	actx, cancel := h.api(ctx)
	created, err := h.docker.ContainerCreate(actx, cfg, host, nil, nil, "")
	cancel()
	if err != nil {
		return nil, failure("create step container", err)
	}
	st := &step{h: h, id: created.ID, ctx: ctx, log: h.cfg.Log.WithFields(logFields(s.Task)), copied: make(chan struct{})}
	att, err := h.docker.ContainerAttach(ctx, st.id, container.AttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		st.remove()
		return nil, failure("attach to step container", err)
	}
	st.att = att.Conn
	st.waitC, st.errC = h.docker.ContainerWait(ctx, st.id, container.WaitConditionNextExit)
	stdout, stderr := s.Output.Stream(), s.Output.Stream()
	go func() {
		defer close(st.copied)
		_, _ = stdcopy.StdCopy(stdout, stderr, att.Reader)
	}()
	st.started = time.Now()
	// A task cancelled while the start is under way is stopped with its
	// grace once it started, not killed by a start cut short.
	actx, cancel = h.api(context.WithoutCancel(ctx))
	err = h.docker.ContainerStart(actx, st.id, container.StartOptions{})
	cancel()
	if err != nil {
		_ = st.att.Close()
		<-st.copied
		st.reap()
		if strings.Contains(err.Error(), "executable file not found") || strings.Contains(err.Error(), "no such file or directory") {
			return nil, fmt.Errorf("start step container: %w", runtime.ErrShellNotFound)
		}
		return nil, failure("start step container", err)
	}
	return st, nil
}

// Wait waits for the container to exit. The output ends when the
// container's process exits: its exit code is then known, earlier than
// the wait answers (which comes after the daemon tore the container's
// network down).
func (s *step) Wait(ctx context.Context) (runtime.Exit, error) {
	output := s.copied
	for {
		select {
		case <-output:
			output = nil
			if code, ok := s.h.exited(ctx, s.id); ok {
				s.setExited()
				return runtime.Exit{Code: code}, nil
			}
		case wr := <-s.waitC:
			s.setWaited()
			s.setExited()
			if wr.Error != nil && wr.Error.Message != "" {
				return runtime.Exit{}, errand.Errorf(errand.CodeTaskFailed, "wait for step container: %s", wr.Error.Message)
			}
			return runtime.Exit{Code: int(wr.StatusCode)}, nil
		case err := <-s.errC:
			s.setWaited()
			if ctx.Err() == nil {
				return runtime.Exit{}, failure("wait for step container", err)
			}
			return runtime.Exit{}, ctx.Err()
		case <-ctx.Done():
			return runtime.Exit{}, ctx.Err()
		}
	}
}

func (s *step) setWaited() {
	s.mu.Lock()
	s.waited = true
	s.mu.Unlock()
}

func (s *step) setExited() {
	s.mu.Lock()
	s.exited = true
	s.mu.Unlock()
}

// Stop stops the container: SIGTERM, then SIGKILL after the grace.
func (s *step) Stop(ctx context.Context, grace time.Duration) error {
	secs := int(grace.Round(time.Second) / time.Second)
	if secs < 1 && grace > 0 {
		secs = 1
	}
	sctx, cancel := context.WithTimeout(ctx, grace+s.h.cfg.APITimeout)
	defer cancel()
	if err := s.h.docker.ContainerStop(sctx, s.id, container.StopOptions{Timeout: &secs}); err != nil {
		return fmt.Errorf("stop step container %s: %w", shortID(s.id), err)
	}
	return nil
}

// Destroy waits, for a bounded time, for the end of the output and
// removes the container: at once when it was stopped, after the outcome
// is known when it exited, so that the next step need not wait for it.
func (s *step) Destroy(context.Context) error {
	s.once.Do(func() {
		select {
		case <-s.copied:
		case <-time.After(outputDrain):
			_ = s.att.Close()
			<-s.copied
		}
		_ = s.att.Close()
		s.mu.Lock()
		exited := s.exited
		s.mu.Unlock()
		if !exited {
			s.reap()
			return
		}
		s.h.removals.Add(1)
		go func() {
			defer s.h.removals.Done()
			s.reap()
		}()
	})
	return nil
}

// reap removes the container and reads the answer of its wait, which
// the Docker client's goroutine holds until it is read.
func (s *step) reap() {
	s.remove()
	s.mu.Lock()
	waited := s.waited
	s.mu.Unlock()
	if waited || s.waitC == nil {
		return
	}
	select {
	case <-s.waitC:
	case <-s.errC:
	case <-time.After(s.h.cfg.APITimeout):
		s.log.WithField("container", shortID(s.id)).Warn("the wait for a removed step container did not end")
	}
}

// remove removes the container; one already gone is not an error.
func (s *step) remove() {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), s.h.cfg.APITimeout)
	defer cancel()
	if err := s.h.docker.ContainerRemove(rctx, s.id, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !dockerclient.IsErrNotFound(err) {
		s.log.WithError(err).WithField("container", shortID(s.id)).Warn("remove step container")
	}
}

// Inspect asks the daemon whether the container runs.
func (s *step) Inspect(ctx context.Context) (runtime.Status, error) {
	actx, cancel := s.h.api(ctx)
	defer cancel()
	info, err := s.h.docker.ContainerInspect(actx, s.id)
	if err != nil {
		return runtime.Status{}, failure("inspect step container", err)
	}
	st := runtime.Status{StartedAt: s.started}
	if info.State != nil {
		st.Running = info.State.Running
		if !st.Running && info.State.FinishedAt != "" && !strings.HasPrefix(info.State.FinishedAt, "0001-") {
			st.Exit = &runtime.Exit{Code: info.State.ExitCode}
		}
	}
	return st, nil
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
