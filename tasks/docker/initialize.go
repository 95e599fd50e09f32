package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	dockerclient "github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/workspace"
	"github.com/errandci/errand/tasks"
	"github.com/errandci/errand/tasks/runtime"
)

// LabelService names the service a container runs.
const LabelService = "errand.service"

// readinessPoll is the pause between two runs of a readiness command.
const readinessPoll = 200 * time.Millisecond

var serviceName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Initialize creates the stage's network and workspace volume, makes the
// stage image present and starts the services. What it created is its
// result; when it fails half-way it removes what it had created, and
// cleanup looks again by label.
func (d driver) Initialize(ctx context.Context, s *runtime.Init) (*tasks.InitializeResult, error) {
	h, t := d.h, s.Task
	res, err := h.initialize(ctx, t, s.Data, s.Checkout, s.Log)
	if err != nil && res != nil {
		// Leave nothing behind: the task's context may be done already.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*h.cfg.APITimeout)
		if _, rerr := h.removeLabelled(rctx, LabelInitialize+"="+t.ID); rerr != nil {
			h.cfg.Log.WithError(rerr).WithField("task_id", t.ID).Warn("remove what a failed initialize created")
		}
		cancel()
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// initialize returns, with its error, what it created so far once it
// started creating resources, and nil before.
func (h *Handlers) initialize(ctx context.Context, t *errand.Task, data *tasks.InitializeData, co *runtime.Checkout, logs io.Writer) (*tasks.InitializeResult, error) {
	if co != nil && h.cfg.Bind {
		return nil, errand.Errorf(errand.CodeInvalid, "stage %s has a Git source; this delegate mounts its project directory as the workspace (--bind)", data.Stage.Stage)
	}
	if (data.Privileged) && !h.cfg.AllowPrivileged {
		return nil, errand.Errorf(CodePrivilegedNotAllowed,
			"stage %s asks for privileged containers; this delegate was not started with --allow-privileged", data.Stage.Stage)
	}
	if data.Image == "" {
		return nil, errand.Errorf(errand.CodeInvalid, "stage %s has no image", data.Stage.Stage)
	}
	if err := checkPull(data.Pull); err != nil {
		return nil, err
	}
	for _, s := range data.Services {
		if !serviceName.MatchString(s.Name) || s.Image == "" {
			return nil, errand.Errorf(errand.CodeInvalid, "service %q: a host name ([a-z0-9-]) and an image are required", s.Name)
		}
	}
	if err := ping(ctx, h.docker, h.cfg.PingTimeout); err != nil {
		return nil, err
	}
	labels, err := h.labels(ctx, t, data.Stage, t.ID)
	if err != nil {
		return nil, err
	}
	if err := h.ensureImage(ctx, data.Image, data.Pull, logs); err != nil {
		return nil, err
	}

	name := resourceName(t.ID)
	res := &tasks.InitializeResult{Image: data.Image}
	fail := func(err error) (*tasks.InitializeResult, error) { return res, err }

	// A stage network is what makes services reachable by name. Joining a
	// network of its own costs every container start about half a second
	// here, so a stage without services runs its steps on the default
	// bridge, like a plain docker run.
	if len(data.Services) > 0 {
		actx, cancel := h.api(ctx)
		_, err := h.docker.NetworkCreate(actx, name, network.CreateOptions{Driver: "bridge", Labels: labels})
		cancel()
		if err != nil {
			return fail(failure("create network "+name, err))
		}
		res.Network = name
		fmt.Fprintf(logs, "network %s\n", name)
	}

	// With Bind the steps work in the source directory itself: there is
	// no volume.
	if h.cfg.Bind {
		fmt.Fprintf(logs, "workspace: %s (bind-mounted)\n", h.cfg.Source)
	} else {
		actx, cancel := h.api(ctx)
		vol, err := h.docker.VolumeCreate(actx, volume.CreateOptions{Name: name, Labels: labels})
		cancel()
		if err != nil {
			return fail(failure("create volume "+name, err))
		}
		res.Volume = vol.Name
		fmt.Fprintf(logs, "volume %s\n", vol.Name)
		switch {
		case co != nil:
			if err := h.populateCheckout(ctx, co, data.Image, vol.Name, labels, logs); err != nil {
				return fail(err)
			}
		case h.cfg.Source != "":
			if err := h.populate(ctx, data.Image, vol.Name, labels, h.cfg.Source, workspace.Options{Exclude: h.cfg.Exclude}, logs); err != nil {
				return fail(err)
			}
		}
	}

	for _, s := range data.Services {
		id, err := h.startService(ctx, s, data, res, labels, logs)
		if id != "" {
			res.Containers = append(res.Containers, id)
		}
		if err != nil {
			return fail(err)
		}
	}
	return res, nil
}

// labels are the labels of every resource of the stage whose initialize
// task is initID, created while serving t: errand run's resources name
// their process, a delegate's its manager.
func (h *Handlers) labels(ctx context.Context, t *errand.Task, s tasks.Stage, initID string) (map[string]string, error) {
	run := s.RunID
	if run == "" {
		run = t.RunID
	}
	l := map[string]string{
		LabelManaged:    "true",
		LabelRun:        run,
		LabelStage:      s.Stage,
		LabelDelegate:   delegateOf(t),
		LabelGroup:      h.cfg.Group,
		LabelInitialize: initID,
	}
	if h.local != "" {
		l[LabelLocal] = h.local
		return l, nil
	}
	m, err := h.managerID(ctx)
	if err != nil {
		return nil, err
	}
	if m != "" {
		l[LabelManager] = m
	}
	return l, nil
}

func checkPull(policy string) error {
	switch policy {
	case "", PullIfNotPresent, PullAlways, PullNever:
		return nil
	}
	return errand.Errorf(errand.CodeInvalid, "pull policy %q: want %s, %s or %s", policy, PullIfNotPresent, PullAlways, PullNever)
}

// ensureImage makes ref present according to the pull policy, writing
// the pull's progress to logs.
func (h *Handlers) ensureImage(ctx context.Context, ref, policy string, logs io.Writer) error {
	present := false
	actx, cancel := h.api(ctx)
	_, err := h.docker.ImageInspect(actx, ref)
	cancel()
	switch {
	case err == nil:
		present = true
	case !dockerclient.IsErrNotFound(err):
		return failure("inspect image "+ref, err)
	}
	switch {
	case present && policy != PullAlways:
		return nil
	case !present && policy == PullNever:
		return errand.Errorf(CodeImageNotFound, "image %s is not present on this host and the pull policy is never", ref)
	}
	fmt.Fprintf(logs, "pulling image %s\n", ref)
	err = h.pull(ctx, ref, logs)
	switch {
	case err == nil:
		fmt.Fprintf(logs, "pulled image %s\n", ref)
		return nil
	case dockerclient.IsErrConnectionFailed(err):
		return failure("pull image "+ref, err)
	case ctx.Err() != nil:
		return context.Cause(ctx)
	case present:
		return errand.Errorf(CodePullFailed, "pull of image %s failed (the pull policy is always; the copy present on this host was not used): %v", ref, err)
	}
	return errand.Errorf(CodeImageNotFound, "image %s is not present on this host and its pull failed: %v", ref, err)
}

// pull pulls ref, writing each status change (not every progress tick) to
// logs, and returns the daemon's reason when it fails.
func (h *Handlers) pull(ctx context.Context, ref string, logs io.Writer) error {
	pctx, cancel := context.WithTimeout(ctx, h.cfg.PullTimeout)
	defer cancel()
	rc, err := h.docker.ImagePull(pctx, ref, image.PullOptions{})
	if err != nil {
		return err
	}
	defer rc.Close()
	dec := json.NewDecoder(rc)
	last := map[string]string{}
	for {
		var m jsonmessage.JSONMessage
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("read pull progress: %w", err)
		}
		if m.Error != nil {
			return m.Error
		}
		if m.Status == "" || last[m.ID] == m.Status {
			continue
		}
		last[m.ID] = m.Status
		if m.ID != "" {
			fmt.Fprintf(logs, "%s: %s\n", m.ID, m.Status)
		} else {
			fmt.Fprintln(logs, m.Status)
		}
	}
}

// startService starts one service container on the stage network, with
// its name as host name, and waits for its readiness commands. It returns
// the container's id as soon as one exists, even with an error.
func (h *Handlers) startService(ctx context.Context, s tasks.Service, data *tasks.InitializeData, res *tasks.InitializeResult, labels map[string]string, logs io.Writer) (string, error) {
	if err := h.ensureImage(ctx, s.Image, data.Pull, logs); err != nil {
		return "", err
	}
	cl := make(map[string]string, len(labels)+1)
	for k, v := range labels {
		cl[k] = v
	}
	cl[LabelService] = s.Name
	fmt.Fprintf(logs, "starting service %s (%s)\n", s.Name, s.Image)
	cfg := &container.Config{Image: s.Image, Env: runtime.EnvList(s.Environment), Labels: cl, Hostname: s.Name}
	if len(s.Commands) > 0 {
		cfg.Entrypoint = []string{"sh", "-c", strings.Join(s.Commands, "\n")}
		cfg.Cmd = nil
	}
	hc := &container.HostConfig{
		NetworkMode: container.NetworkMode(res.Network),
		Privileged:  data.Privileged,
		Init:        boolPtr(true),
		Resources:   resources(data.Resources),
	}
	nc := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
		res.Network: {Aliases: []string{s.Name}},
	}}
	actx, cancel := h.api(ctx)
	created, err := h.docker.ContainerCreate(actx, cfg, hc, nc, nil, "")
	cancel()
	if err != nil {
		return "", failure("create service "+s.Name, err)
	}
	actx, cancel = h.api(ctx)
	err = h.docker.ContainerStart(actx, created.ID, container.StartOptions{})
	cancel()
	if err != nil {
		return created.ID, failure("start service "+s.Name, err)
	}
	fmt.Fprintf(logs, "service %s started (%s)\n", s.Name, s.Image)
	if len(s.Readiness) == 0 {
		return created.ID, nil
	}
	fmt.Fprintf(logs, "waiting for service %s to be ready\n", s.Name)
	if err := h.waitReady(ctx, created.ID, s); err != nil {
		return created.ID, err
	}
	fmt.Fprintf(logs, "service %s ready\n", s.Name)
	return created.ID, nil
}

// waitReady runs the service's readiness commands in it until they exit
// 0, for up to the readiness timeout.
func (h *Handlers) waitReady(ctx context.Context, id string, s tasks.Service) error {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.ReadinessTimeout)
	defer cancel()
	script := strings.Join(s.Readiness, "\n")
	last := -1
	for {
		code, err := h.execIn(ctx, id, []string{"sh", "-e", "-c", script})
		if err == nil && code == 0 {
			return nil
		}
		if err == nil {
			last = code
		}
		actx, acancel := h.api(ctx)
		info, ierr := h.docker.ContainerInspect(actx, id)
		acancel()
		if ierr == nil && info.State != nil && !info.State.Running {
			return errand.Errorf(errand.CodeTaskFailed, "service %s exited with code %d before it was ready", s.Name, info.State.ExitCode)
		}
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return errand.Errorf(errand.CodeTaskFailed, "service %s not ready after %s (readiness exit code %d)", s.Name, h.cfg.ReadinessTimeout, last)
			}
			return ctx.Err()
		case <-time.After(readinessPoll):
		}
	}
}

// execIn runs cmd in a running container and returns its exit code; its
// output is discarded.
func (h *Handlers) execIn(ctx context.Context, id string, cmd []string) (int, error) {
	actx, cancel := h.api(ctx)
	defer cancel()
	ex, err := h.docker.ContainerExecCreate(actx, id, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	att, err := h.docker.ContainerExecAttach(actx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return -1, fmt.Errorf("attach to exec in %s: %w", id, err)
	}
	_, _ = io.Copy(io.Discard, att.Reader)
	att.Close()
	info, err := h.docker.ContainerExecInspect(actx, ex.ID)
	if err != nil {
		return -1, fmt.Errorf("inspect exec in %s: %w", id, err)
	}
	return info.ExitCode, nil
}

func boolPtr(b bool) *bool { return &b }

func resources(r tasks.Resources) container.Resources {
	return container.Resources{Memory: r.MemoryBytes, NanoCPUs: int64(r.CPUs * 1e9)}
}

// logFields are the fields of the handlers' own log lines about a task.
func logFields(t *errand.Task) logrus.Fields {
	return logrus.Fields{"task_id": t.ID, "run_id": t.RunID}
}
