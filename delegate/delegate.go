// Package delegate is the daemon that runs on a build host: one Config for
// everything, an identity kept in the state dir so that a restart resumes
// as the same delegate, refusal of new work while the host is over its
// load or memory thresholds, and a graceful stop that drains running
// tasks, runs the embedder's shutdown hooks and deregisters.
package delegate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/poller"
	"github.com/errandci/errand/router"
)

// hookTimeout bounds each shutdown hook and the deregistration.
const hookTimeout = 30 * time.Second

// Delegate is the daemon. Create it with New and run it with Run.
type Delegate struct {
	cfg    Config
	poller *poller.Poller
	log    *logrus.Entry

	mu         sync.Mutex
	hooks      []func(context.Context) error
	startHooks []func(context.Context) error
}

// New checks cfg and prepares a delegate that runs tasks through r.
func New(cfg Config, r *router.Router) (*Delegate, error) {
	if r == nil {
		return nil, errors.New("delegate: a router is required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("delegate configuration: %w", err)
	}
	served := r.Types()
	types := cfg.TaskTypes
	if len(types) == 0 {
		types = served
	}
	for _, t := range types {
		if !slices.Contains(served, t) {
			return nil, fmt.Errorf("delegate configuration: task type %q has no handler; this delegate serves %v", t, served)
		}
	}
	if len(types) == 0 {
		return nil, errors.New("delegate configuration: the router serves no task type")
	}
	sort.Strings(types)
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	log := cfg.Log.WithField("name", cfg.Name)
	c, auth := cfg.Client, cfg.Authenticate
	if c == nil {
		hc := client.New(cfg.Manager, cfg.Token, client.WithLogger(log))
		c = hc
		auth = func(token string) client.Client { return hc.WithToken(token) }
	}
	res := &resources{
		procDir: cfg.ProcDir, maxLoad: cfg.MaxLoad, minFree: cfg.MinFreeMemory,
		onErr: func(err error) { log.WithError(err).Warn("cannot read host resources") },
		onChange: func(over bool, reason string) {
			if over {
				log.WithFields(logrus.Fields{"limit": limitOf(reason), "reason": reason}).
					Warn("refusing new tasks: the host is over a resource limit")
			} else {
				log.Info("host back under its --max-load and --min-free-memory limits")
			}
		},
	}
	p := poller.New(poller.Config{
		Delegate: client.RegisterRequest{
			Name: cfg.Name, Hostname: cfg.Hostname, Group: cfg.Group, Labels: cfg.Labels,
			Archs: cfg.Archs, Capacity: cfg.Capacity, TaskTypes: types, Dynamic: cfg.Dynamic,
			Version: cfg.Version,
		},
		Identity:     &identityFile{path: identityPath(cfg.StateDir, cfg.Name), manager: cfg.Manager},
		Authenticate: auth,
		Overloaded:   res.Overloaded,
		Logger:       log,
	}, c, r)
	return &Delegate{cfg: cfg, poller: p, log: log}, nil
}

// identityPath is where a delegate keeps its identity: one file per name,
// so that sibling delegates on one host may share a state dir and its
// workspaces (and clean up after each other) while each stays itself.
func identityPath(stateDir, name string) string {
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, name)
	return filepath.Join(stateDir, "identity-"+strings.TrimLeft(safe, ".")+".json")
}

// OnShutdown adds a hook run when the delegate stops, after running tasks
// ended and before it deregisters. Hooks run in the order added; each gets
// a context bounded by a timeout.
func (d *Delegate) OnShutdown(f func(ctx context.Context) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hooks = append(d.hooks, f)
}

// OnStart adds a hook run when Run starts, before the delegate registers
// and takes work: e.g. killing what a previous process on the same state
// dir left running. Hooks run in the order added; each gets a context
// bounded by a timeout. A hook that fails is logged and the delegate
// starts all the same.
func (d *Delegate) OnStart(f func(ctx context.Context) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.startHooks = append(d.startHooks, f)
}

// Poller returns the delegate's poller: its ID once registered, the tasks
// it runs.
func (d *Delegate) Poller() *poller.Poller { return d.poller }

// Run registers (or resumes) the delegate and runs tasks until ctx ends.
// Then it stops taking work, lets running tasks finish for up to the drain
// timeout, cancels and reports those left, runs the shutdown hooks and
// deregisters. It returns at once with an error when the manager refuses
// the registration token.
func (d *Delegate) Run(ctx context.Context) error {
	d.mu.Lock()
	starts := slices.Clone(d.startHooks)
	d.mu.Unlock()
	_ = d.runEach(ctx, starts, "start hook")
	pctx, stopPolling := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPolling()
	errc := make(chan error, 1)
	go func() { errc <- d.poller.Run(pctx) }()

	var runErr error
	select {
	case runErr = <-errc:
		stopPolling()
	case <-ctx.Done():
		d.drain()
		stopPolling()
		runErr = <-errc
	}
	bg := context.WithoutCancel(ctx)
	errs := []error{runErr}
	errs = append(errs, d.runHooks(bg))
	if runErr == nil {
		dctx, cancel := context.WithTimeout(bg, hookTimeout)
		if err := d.poller.Deregister(dctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	return errors.Join(errs...)
}

// drain stops taking work and waits for running tasks up to the drain
// timeout.
func (d *Delegate) drain() {
	select {
	case <-d.poller.Ready():
	default:
		return
	}
	d.poller.Drain()
	n := len(d.poller.Running())
	d.log.WithFields(logrus.Fields{"running": n, "drain_timeout": d.cfg.DrainTimeout}).Info("stopping: waiting for running tasks")
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.DrainTimeout)
	defer cancel()
	if err := d.poller.WaitIdle(ctx); err != nil {
		d.log.WithField("running", d.poller.Running()).Warn("drain timeout: cancelling the tasks still running")
	}
}

func (d *Delegate) runHooks(ctx context.Context) error {
	d.mu.Lock()
	hooks := slices.Clone(d.hooks)
	d.mu.Unlock()
	return d.runEach(ctx, hooks, "shutdown hook")
}

// runEach runs hooks in order, each bounded by the hook timeout, logs
// those that fail and returns their errors; kind names them.
func (d *Delegate) runEach(ctx context.Context, hooks []func(context.Context) error, kind string) error {
	var errs []error
	for i, h := range hooks {
		hctx, cancel := context.WithTimeout(ctx, hookTimeout)
		if err := h(hctx); err != nil {
			d.log.WithError(err).WithField("hook", i).Warn(kind + " failed")
			errs = append(errs, fmt.Errorf("%s %d: %w", kind, i, err))
		}
		cancel()
	}
	return errors.Join(errs...)
}
