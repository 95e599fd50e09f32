// Package docker runs a stage's steps in containers through the Docker
// Engine API: docker.initialize creates the stage's network and workspace
// volume, makes the image present and starts the service containers;
// docker.execute runs one step in a container of its own with the
// workspace mounted (the stage's volume, which may start as a copy of the
// project, or the project directory itself: see Config.Source);
// docker.cleanup removes everything the stage created.
//
// The handlers keep no state between tasks. Every resource carries labels
// (errand.run, errand.stage, errand.delegate, errand.group,
// errand.manager, errand.initialize and errand.managed=true) so that
// cleanup finds it by label after a half-failed initialize or a delegate
// restart, and so that a sibling delegate of the same manager and group
// can remove what a lost dynamic delegate left behind (see Siblings).
// Resources of errand run carry errand.local instead of errand.manager,
// naming the process that owns them: no delegate ever touches them, and
// errand prune removes them once that process is gone (see LocalOwner,
// Managed and Remove).
//
// The package is a tasks/runtime driver: the task handlers (decoding,
// exit codes, output and masking, stopping) are the runtime's, served by
// Handlers.Register and Handlers.Runtime.
package docker

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/filters"
	dockerclient "github.com/docker/docker/client"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/router"
	"github.com/errandci/errand/tasks/runtime"
)

// Error codes of the docker runtime, found in a task's error.
const (
	// CodeImageNotFound: the image is not present and could not (or, with
	// pull policy never, may not) be pulled.
	CodeImageNotFound = "image_not_found"
	// CodeDockerUnavailable: the Docker daemon does not answer.
	CodeDockerUnavailable = errand.CodeDockerUnavailable
	// CodePullFailed: the pull policy asked for a pull and it failed,
	// although the image may be present on the host.
	CodePullFailed = "image_pull_failed"
	// CodePrivilegedNotAllowed: a stage asked for privileged containers on
	// a delegate not started with --allow-privileged.
	CodePrivilegedNotAllowed = "privileged_not_allowed"
)

// Labels put on every container, network and volume the runtime creates.
const (
	LabelManaged    = "errand.managed"
	LabelRun        = "errand.run"
	LabelStage      = "errand.stage"
	LabelDelegate   = "errand.delegate"
	LabelGroup      = "errand.group"
	LabelInitialize = "errand.initialize"
	LabelStep       = "errand.step"
	// LabelManager is the identity of the manager whose delegate created
	// the resource.
	LabelManager = "errand.manager"
	// LabelLocal marks a resource of errand run; its value names the
	// process that owns it (see LocalOwner).
	LabelLocal = "errand.local"
)

// Pull policies of a stage's images.
const (
	PullIfNotPresent = "if-not-present"
	PullAlways       = "always"
	PullNever        = "never"
)

// Workspace is where the stage's workspace volume is mounted in every step
// container; steps start there.
const Workspace = "/errand/workspace"

// DefaultShell reads a step's commands: the first that fails ends it.
const DefaultShell = runtime.DefaultShell

// Defaults of a Config.
const (
	DefaultStopGrace        = 10 * time.Second
	DefaultAPITimeout       = 30 * time.Second
	DefaultPullTimeout      = 10 * time.Minute
	DefaultReadinessTimeout = 2 * time.Minute
	DefaultMaxStep          = 24 * time.Hour
	DefaultPingTimeout      = 5 * time.Second
)

// Config configures the docker handlers.
type Config struct {
	// Group is the delegate's group, put on every resource so that
	// siblings of the same group clean up for each other.
	Group string
	// AllowPrivileged lets stages run privileged containers; otherwise
	// they are refused with privileged_not_allowed.
	AllowPrivileged bool
	// StopGrace is the time a step container has between SIGTERM and
	// SIGKILL when its task is cancelled or times out.
	StopGrace time.Duration
	// APITimeout bounds each short Docker API call.
	APITimeout time.Duration
	// PullTimeout bounds an image pull.
	PullTimeout time.Duration
	// ReadinessTimeout bounds the wait for a service's readiness command.
	ReadinessTimeout time.Duration
	// MaxStep bounds a step container's run when its task has no timeout
	// of its own.
	MaxStep time.Duration
	// PingTimeout bounds the check that the daemon answers, done first by
	// every initialize, so that an unreachable daemon fails the stage in
	// seconds.
	PingTimeout time.Duration
	// ManagerID returns the identity of the manager the delegate serves,
	// put on every resource (errand.manager) so that delegates of another
	// manager sharing the Docker daemon never touch them. It is called
	// until it succeeds once. Nil (or "") puts no manager on resources,
	// and Siblings then removes nothing.
	ManagerID func(ctx context.Context) (string, error)
	// Local marks the resources as errand run's: they carry errand.local
	// with this process's LocalOwner, no delegate ever removes them, and
	// errand prune removes them once the process is gone.
	Local bool
	// Source, when set, is the project directory a stage's workspace
	// starts as: each stage's volume is filled with a copy of its files
	// (what internal/workspace lists: Git-aware, links kept as links). It
	// is the delegate's configuration, never taken from a task.
	Source string
	// Bind mounts Source itself as every step's workspace instead of a
	// copy in a volume: steps change the project's files.
	Bind bool
	// Exclude are absolute paths under Source left out of the copy
	// (e.g. a data dir inside the project).
	Exclude []string
	// Git configures the checkout of a stage's Git source: git runs on
	// this host, in a directory under CheckoutDir (the system's
	// temporary directory when empty), and the checkout, .git
	// included, is copied into the stage's volume.
	Git         runtime.GitOptions
	CheckoutDir string
	// Client is the Docker client; when nil one is made from the
	// environment (DOCKER_HOST, …) with API version negotiation.
	Client *dockerclient.Client
	// Log receives the handlers' own log (never a step's output or
	// environment); logrus.StandardLogger() when nil.
	Log logrus.FieldLogger
	// Artifacts moves the stages' artifacts to and from the manager.
	Artifacts runtime.ArtifactTransfer
}

func (c *Config) setDefaults() {
	if c.StopGrace <= 0 {
		c.StopGrace = DefaultStopGrace
	}
	if c.APITimeout <= 0 {
		c.APITimeout = DefaultAPITimeout
	}
	if c.PullTimeout <= 0 {
		c.PullTimeout = DefaultPullTimeout
	}
	if c.ReadinessTimeout <= 0 {
		c.ReadinessTimeout = DefaultReadinessTimeout
	}
	if c.MaxStep <= 0 {
		c.MaxStep = DefaultMaxStep
	}
	if c.PingTimeout <= 0 {
		c.PingTimeout = DefaultPingTimeout
	}
	if c.Log == nil {
		c.Log = logrus.StandardLogger()
	}
}

// Handlers serves the docker task types.
type Handlers struct {
	cfg    Config
	docker *dockerclient.Client
	own    bool // the client was made here and is closed by Close
	// removals are the removals of exited step containers under way.
	removals sync.WaitGroup
	// local is this process's owner label value when cfg.Local.
	local string

	mu      sync.Mutex
	manager string // the manager's identity once known
}

// NewClient returns a Docker client configured from the environment, which
// negotiates the API version with the daemon (an older daemon speaks an
// older version than the library's).
func NewClient() (*dockerclient.Client, error) {
	c, err := dockerclient.NewClientWithOpts(dockerclient.FromEnv, dockerclient.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return c, nil
}

// New returns the handlers for cfg.
func New(cfg Config) (*Handlers, error) {
	cfg.setDefaults()
	if err := checkSource(&cfg); err != nil {
		return nil, err
	}
	h := &Handlers{cfg: cfg, docker: cfg.Client}
	if cfg.Local {
		h.local = SelfOwner().String()
	}
	if h.docker == nil {
		c, err := NewClient()
		if err != nil {
			return nil, err
		}
		h.docker, h.own = c, true
	}
	return h, nil
}

// Register adds the docker task types to r with handlers for cfg.
func Register(r *router.Router, cfg Config) error {
	h, err := New(cfg)
	if err != nil {
		return err
	}
	h.Register(r)
	return nil
}

// Register adds the docker task types to r.
func (h *Handlers) Register(r *router.Router) {
	h.Runtime().Register(r)
}

// Runtime returns the handlers of the docker task types: the runtime's
// handlers over this driver.
func (h *Handlers) Runtime() *runtime.Handlers {
	return &runtime.Handlers{Driver: driver{h}, StopGrace: h.cfg.StopGrace, MaxStep: h.cfg.MaxStep, Log: h.cfg.Log, Git: h.cfg.Git,
		Artifacts: h.cfg.Artifacts}
}

// driver is the docker runtime.Driver: the name of its task types is
// "docker".
type driver struct{ h *Handlers }

func (driver) Name() string { return "docker" }

// Close waits for the removals of exited step containers under way and
// releases the Docker client if New made it.
func (h *Handlers) Close() error {
	h.removals.Wait()
	if h.own {
		return h.docker.Close()
	}
	return nil
}

// Available reports whether a Docker daemon answers, with a hint on how to
// start one when none does.
func Available(ctx context.Context) error {
	c, err := NewClient()
	if err != nil {
		return errand.Errorf(CodeDockerUnavailable, "%v", err)
	}
	defer c.Close()
	return ping(ctx, c, DefaultPingTimeout)
}

// ping checks that the daemon answers within timeout.
func ping(ctx context.Context, c *dockerclient.Client, timeout time.Duration) error {
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := c.Ping(pctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return unavailable(c.DaemonHost(), err)
	}
	return nil
}

// unavailable is the error of a daemon that does not answer, with a hint.
func unavailable(host string, err error) error {
	if host != "" {
		host = " at " + host
	}
	return errand.Errorf(CodeDockerUnavailable,
		"the Docker daemon%s does not answer (%v): is dockerd running (e.g. `dockerd &`, or scripts/test which installs and starts it)? Is DOCKER_HOST right?",
		host, err)
}

// managerID returns the manager's identity, asked once.
func (h *Handlers) managerID(ctx context.Context) (string, error) {
	if h.cfg.ManagerID == nil {
		return "", nil
	}
	h.mu.Lock()
	id := h.manager
	h.mu.Unlock()
	if id != "" {
		return id, nil
	}
	actx, cancel := h.api(ctx)
	defer cancel()
	id, err := h.cfg.ManagerID(actx)
	if err != nil {
		return "", errand.Errorf(errand.CodeTaskFailed, "ask the manager for its identity (put on every Docker resource): %v", err)
	}
	h.mu.Lock()
	h.manager = id
	h.mu.Unlock()
	return id, nil
}

// api returns a context for one short Docker API call.
func (h *Handlers) api(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, h.cfg.APITimeout)
}

// delegateOf is the delegate running t: the lease holder.
func delegateOf(t *errand.Task) string {
	if t.Lease != nil && t.Lease.DelegateID != "" {
		return t.Lease.DelegateID
	}
	return t.DelegateID
}

var unsafeName = regexp.MustCompile(`[^a-z0-9_.-]+`)

// resourceName makes a Docker object name from an initialize task id.
func resourceName(initID string) string {
	s := unsafeName.ReplaceAllString(strings.ToLower(initID), "-")
	s = strings.Trim(s, "-._")
	if len(s) > 64 {
		s = s[:64]
	}
	return "errand-" + s
}

// labelFilter selects objects carrying every label given as key=value.
func labelFilter(labels ...string) filters.Args {
	f := filters.NewArgs()
	for _, l := range labels {
		f.Add("label", l)
	}
	return f
}

// failure turns a Docker error into the task's error: a daemon that does
// not answer is docker_unavailable, anything else task_failed with what.
func failure(what string, err error) error {
	var e *errand.Error
	if errors.As(err, &e) {
		return err
	}
	if dockerclient.IsErrConnectionFailed(err) {
		return unavailable("", fmt.Errorf("%s: %w", what, err))
	}
	return errand.Errorf(errand.CodeTaskFailed, "%s: %v", what, err)
}
