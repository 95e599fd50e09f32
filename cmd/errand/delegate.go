package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/alecthomas/units"

	"github.com/errandci/errand"
	"github.com/errandci/errand/delegate"
	"github.com/errandci/errand/manager"
	"github.com/errandci/errand/router"
	"github.com/errandci/errand/tasks/docker"
	"github.com/errandci/errand/tasks/exec"
	"github.com/errandci/errand/tasks/runtime"
)

func init() { commands = append(commands, addDelegateCommand) }

func addDelegateCommand(app *kingpin.Application, g *globals) {
	cmd := app.Command("delegate", "Run a delegate: register with the manager and run its tasks on this host.")
	var (
		cfg     delegate.Config
		minFree units.Base2Bytes
		dataDir string
		dk      dockerSettings
	)
	cfg.Labels = map[string]string{} // the --label flag adds to it
	cmd.Flag("manager", "URL of the manager (http:// or https://).").Envar("ERRAND_MANAGER").
		Default("http://127.0.0.1:7700").SetValue(&managerURL{&cfg.Manager})
	cmd.Flag("token", "Registration token (default: the registration.token file in --data-dir).").Envar("ERRAND_TOKEN").
		StringVar(&cfg.Token)
	cmd.Flag("data-dir", "The manager's data directory, where its generated registration token is found when --token is not given.").
		Envar("ERRAND_DATA_DIR").Default("./errand-data").StringVar(&dataDir)
	cmd.Flag("name", "Name of the delegate (default: the hostname).").Envar("ERRAND_NAME").StringVar(&cfg.Name)
	cmd.Flag("group", "Group of the delegate: tasks may select it, and dynamic siblings clean up for each other.").
		Envar("ERRAND_GROUP").StringVar(&cfg.Group)
	cmd.Flag("label", "Label k=v that task selectors match (repeat for more; in ERRAND_LABEL, one per line).").Envar("ERRAND_LABEL").
		SetValue(labelsValue(cfg.Labels))
	cmd.Flag("arch", "Architecture served (repeat for more; default: this binary's).").Envar("ERRAND_ARCH").
		StringsVar(&cfg.Archs)
	cmd.Flag("capacity", "Number of tasks run at once.").Envar("ERRAND_CAPACITY").
		Default(fmt.Sprint(delegate.DefaultCapacity)).IntVar(&cfg.Capacity)
	cmd.Flag("task-type", "Task type offered (repeat for more; default: every type this delegate serves).").
		Envar("ERRAND_TASK_TYPE").StringsVar(&cfg.TaskTypes)
	cmd.Flag("dynamic", "Let the manager remove this delegate when it stops heartbeating.").Envar("ERRAND_DYNAMIC").
		BoolVar(&cfg.Dynamic)
	cmd.Flag("state-dir", "Directory of the delegate's identity and of exec workspaces (default: ~/.errand/delegate).").
		Envar("ERRAND_STATE_DIR").StringVar(&cfg.StateDir)
	cmd.Flag("max-load", "Refuse new tasks while the 1-minute load average per CPU is above this (0: no limit).").
		Envar("ERRAND_MAX_LOAD").Default("0").Float64Var(&cfg.MaxLoad)
	cmd.Flag("min-free-memory", "Refuse new tasks while less memory than this is available, e.g. 512MiB (0: no limit).").
		Envar("ERRAND_MIN_FREE_MEMORY").Default("0").BytesVar(&minFree)
	cmd.Flag("drain-timeout", "On SIGTERM or SIGINT, how long running tasks may go on before they are cancelled.").
		Envar("ERRAND_DRAIN_TIMEOUT").Default(delegate.DefaultDrainTimeout.String()).DurationVar(&cfg.DrainTimeout)
	cmd.Flag("allow-privileged", "Allow stages that ask for privileged containers.").Envar("ERRAND_ALLOW_PRIVILEGED").
		BoolVar(&cfg.AllowPrivileged)
	cmd.Flag("docker-stop-grace", "Time a cancelled step's container has between SIGTERM and SIGKILL.").
		Envar("ERRAND_DOCKER_STOP_GRACE").Default(docker.DefaultStopGrace.String()).DurationVar(&dk.stopGrace)
	cmd.Flag("sibling-cleanup-interval", "How often to remove Docker resources left by lost dynamic delegates of the group (0: never).").
		Envar("ERRAND_SIBLING_CLEANUP_INTERVAL").Default(docker.DefaultSiblingInterval.String()).DurationVar(&dk.siblingInterval)
	cmd.Flag("allow-file-sources", "Let a stage's Git source be a file:// URL, read from this host (tests, local use).").
		Envar("ERRAND_ALLOW_FILE_SOURCES").BoolVar(&dk.git.AllowFile)
	lf := addLogFlags(cmd)

	cmd.Action(g.action(func(ctx context.Context) error {
		if cfg.Capacity < 1 { // 0 would mean the default to the library
			return usageErrorf("--capacity: %d; at least 1", cfg.Capacity)
		}
		cfg.Log = lf.logger(g.Stderr)
		cfg.MinFreeMemory = int64(minFree)
		cfg.Version = version
		if cfg.Token == "" {
			_, reg := manager.TokenPaths(dataDir)
			if b, err := os.ReadFile(reg); err == nil {
				cfg.Token = strings.TrimSpace(string(b))
			}
		}
		return runDelegate(ctx, cfg, dk)
	}))
}

// dockerSettings are the delegate's settings of the docker runtime,
// and of the checkouts of Git sources (both runtimes).
type dockerSettings struct {
	stopGrace       time.Duration
	siblingInterval time.Duration
	git             runtime.GitOptions
}

// dockerProbeTimeout bounds the check for a Docker daemon at start-up.
const dockerProbeTimeout = 5 * time.Second

// runDelegate runs the delegate with the built-in handlers until ctx ends
// (SIGINT, SIGTERM), then drains it. The docker task types are served
// when a Docker daemon answers at start-up; the delegate then also removes
// what lost dynamic siblings of its group left on the Docker host.
func runDelegate(ctx context.Context, cfg delegate.Config, dk dockerSettings) error {
	if err := cfg.Validate(); err != nil {
		return usageErrorf("%v", err)
	}
	r := router.New(router.WithLogger(cfg.Log))
	var d *delegate.Delegate
	h := exec.New(cfg.StateDir)
	h.AllowPrivileged = cfg.AllowPrivileged
	h.Log = cfg.Log
	h.Git = dk.git
	h.Artifacts = artifactsVia(&d)
	h.Register(r)
	// The docker handlers ask the manager for its identity once the
	// delegate is registered, before their first resource.
	managerID := func(ctx context.Context) (string, error) {
		if d == nil || d.Client() == nil {
			return "", fmt.Errorf("not registered yet")
		}
		l, err := d.Client().ListDelegates(ctx)
		if err != nil {
			return "", err
		}
		return l.ManagerID, nil
	}
	dh, err := dockerHandlers(ctx, cfg, dk, managerID, h.Artifacts)
	if err != nil {
		return err
	}
	if dh != nil {
		defer dh.Close()
		dh.Register(r)
	}
	d, err = delegate.New(cfg, r)
	if err != nil {
		return err
	}
	// Steps a previous process on this state dir left running (it was
	// killed) die before this one takes work or cleans up their stages.
	d.OnStart(h.KillLeftovers)
	if dh != nil && dk.siblingInterval > 0 {
		s := &docker.Siblings{
			Handlers:  dh,
			Self:      d.ID,
			Delegates: groupLister(cfg, d),
			Interval:  dk.siblingInterval,
			Log:       cfg.Log.WithField("group", cfg.Group),
		}
		if err := s.Start(ctx); err != nil {
			return err
		}
		defer func() { _ = s.Stop(context.Background()) }()
	}
	return d.Run(ctx)
}

// dockerHandlers returns the docker handlers when a daemon answers, nil
// when none does.
func dockerHandlers(ctx context.Context, cfg delegate.Config, dk dockerSettings, managerID func(context.Context) (string, error),
	artifacts runtime.ArtifactTransfer) (*docker.Handlers, error) {
	pctx, cancel := context.WithTimeout(ctx, dockerProbeTimeout)
	defer cancel()
	if err := docker.Available(pctx); err != nil {
		cfg.Log.WithField("reason", err.Error()).Info("no Docker daemon answers: docker stages are not served")
		return nil, nil
	}
	dh, err := docker.New(docker.Config{
		Group: cfg.Group, AllowPrivileged: cfg.AllowPrivileged, StopGrace: dk.stopGrace, Log: cfg.Log,
		ManagerID: managerID, Git: dk.git, Artifacts: artifacts,
	})
	if err != nil {
		return nil, fmt.Errorf("docker runtime: %w", err)
	}
	return dh, nil
}

// artifactsVia moves artifacts through the delegate's own client, once
// *d is registered.
func artifactsVia(d **delegate.Delegate) runtime.ArtifactTransfer {
	return runtime.ArtifactsFunc(func() (runtime.ArtifactTransfer, error) {
		if *d == nil || (*d).Client() == nil {
			return nil, fmt.Errorf("the delegate is not registered yet")
		}
		t, ok := (*d).Client().(runtime.ArtifactTransfer)
		if !ok {
			return nil, fmt.Errorf("the delegate's client moves no artifacts")
		}
		return t, nil
	})
}

// groupLister lists the delegates of the group for sibling cleanup, with
// the delegate's own token: the manager shows a delegate its own group.
func groupLister(cfg delegate.Config, d *delegate.Delegate) func(context.Context) ([]*errand.Delegate, error) {
	return func(ctx context.Context) ([]*errand.Delegate, error) {
		c := d.Client()
		if c == nil {
			return nil, fmt.Errorf("not registered yet")
		}
		l, err := c.ListDelegates(ctx)
		if err != nil {
			return nil, err
		}
		out := l.Items[:0:0]
		for _, x := range l.Items {
			if x.Group == cfg.Group {
				out = append(out, x)
			}
		}
		return out, nil
	}
}

// labelsValue is the value of --label: repeatable key=value pairs added
// to a map.
type labelsValue map[string]string

func (l labelsValue) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("%q is not a label: want key=value, e.g. --label os=linux", v)
	}
	l[k] = val
	return nil
}

func (l labelsValue) String() string {
	pairs := make([]string, 0, len(l))
	for k, v := range l {
		pairs = append(pairs, k+"="+v)
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

// IsCumulative lets --label be repeated.
func (l labelsValue) IsCumulative() bool { return true }
