// Package delegate is the agent that runs on a build host: it registers
// with the manager (or resumes the identity kept in its state dir, so that
// a restart resumes as the same delegate), heartbeats, refuses new work
// while the host is over its load or memory thresholds, and runs a
// poller.Poller that acquires and runs the tasks. Stopping drains running
// tasks, runs the embedder's shutdown hooks and deregisters.
//
// Another program embeds it with its own handlers:
//
//	r := router.New()
//	r.Handle("build.compile", compileHandler) // any http.Handler
//	d, err := delegate.New(delegate.Config{Manager: url, Token: regToken, StateDir: dir}, r)
//	if err != nil { … }
//	if err := d.Start(ctx); err != nil { … } // registered, taking work
//	…
//	err = d.Stop(ctx) // drain, hooks, deregister
//
// Run(ctx) does the same for a main function: Start, then Stop once ctx
// ends.
package delegate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/clock"
	"github.com/errandci/errand/poller"
	"github.com/errandci/errand/router"
)

// hookTimeout bounds each shutdown hook and the deregistration.
const hookTimeout = 30 * time.Second

// Delegate is the agent. Create it with New; run it with Start and Stop
// (or Run).
type Delegate struct {
	cfg    Config
	req    client.RegisterRequest
	reg    client.DelegateClient
	ids    IdentityStore
	poller *poller.Poller
	log    *logrus.Entry
	clock  clock.Clock
	retry  client.Retrier

	mu         sync.Mutex
	id         string
	dc         client.DelegateClient
	interval   time.Duration
	hooks      []func(context.Context) error
	startHooks []func(context.Context) error

	started   atomic.Bool
	live      atomic.Bool
	ready     chan struct{}
	stopBeats context.CancelFunc
	beatsDone chan struct{}
	stopping  chan struct{}
	stopOnce  sync.Once
	done      chan struct{}
	err       error
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
	reg := cfg.Client
	if reg == nil {
		reg = client.New(cfg.Manager, cfg.Token, client.WithLogger(log))
	}
	ids := cfg.Identity
	if ids == nil {
		ids = &identityFile{path: identityPath(cfg.StateDir, cfg.Name), manager: cfg.Manager}
	}
	d := &Delegate{
		cfg: cfg,
		req: client.RegisterRequest{
			Name: cfg.Name, Hostname: cfg.Hostname, Group: cfg.Group, Labels: cfg.Labels,
			Archs: cfg.Archs, Capacity: cfg.Capacity, TaskTypes: types, Dynamic: cfg.Dynamic,
			Version: cfg.Version,
		},
		reg:       reg,
		ids:       ids,
		log:       log,
		clock:     clock.OrReal(cfg.Clock),
		interval:  cfg.HeartbeatInterval,
		ready:     make(chan struct{}),
		beatsDone: make(chan struct{}),
		stopping:  make(chan struct{}),
		done:      make(chan struct{}),
	}
	newBackOff := cfg.Poller.NewBackOff
	if newBackOff == nil {
		newBackOff = poller.DefaultBackOff
	}
	d.retry = client.Retrier{NewBackOff: newBackOff, Timer: func() backoff.Timer { return clock.BackOffTimer(d.clock) }}
	res := &resources{
		procDir: cfg.ProcDir, maxLoad: cfg.MaxLoad, minFree: cfg.MinFreeMemory, clock: d.clock,
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
	pc := cfg.Poller
	pc.Session, pc.Router, pc.Capacity, pc.Overloaded = session{d}, r, cfg.Capacity, res.Overloaded
	pc.NewBackOff, pc.Clock, pc.Logger = newBackOff, d.clock, log
	p, err := poller.New(pc)
	if err != nil {
		return nil, fmt.Errorf("delegate: %w", err)
	}
	d.poller = p
	return d, nil
}

// OnShutdown adds a hook run when the delegate stops, after running tasks
// ended and before it deregisters. Hooks run in the order added; each gets
// a context bounded by a timeout.
func (d *Delegate) OnShutdown(f func(ctx context.Context) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hooks = append(d.hooks, f)
}

// OnStart adds a hook run when the delegate starts, before it registers
// and takes work: e.g. killing what a previous process on the same state
// dir left running. Hooks run in the order added; each gets a context
// bounded by a timeout. A hook that fails is logged and the delegate
// starts all the same.
func (d *Delegate) OnStart(f func(ctx context.Context) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.startHooks = append(d.startHooks, f)
}

// ID returns the delegate's id once registered, "" before.
func (d *Delegate) ID() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.id
}

// Client returns the client that speaks as the delegate (with its own
// token) once registered, nil before: e.g. to list the delegate's group.
func (d *Delegate) Client() client.DelegateClient {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dc
}

// Ready is closed once the delegate is registered or resumed.
func (d *Delegate) Ready() <-chan struct{} { return d.ready }

// Running returns the ids of the tasks the delegate holds: handlers
// running or outcomes not yet reported.
func (d *Delegate) Running() []string { return d.poller.Running() }

// Drain stops taking new work; running tasks go on, and heartbeats say
// the delegate is draining.
func (d *Delegate) Drain() { d.poller.Drain() }

// Start runs the start hooks, then registers the delegate (or resumes
// its stored identity), retrying while the manager is unreachable, and
// starts heartbeating and taking work. It returns once the delegate is
// registered, with an error when the manager refuses the registration
// token or ctx ends first. The delegate then runs until Stop.
func (d *Delegate) Start(ctx context.Context) error {
	if !d.started.CompareAndSwap(false, true) {
		return errors.New("delegate: started twice")
	}
	d.mu.Lock()
	starts := slices.Clone(d.startHooks)
	d.mu.Unlock()
	_ = d.runEach(ctx, starts, "start hook")
	if err := d.identify(ctx); err != nil {
		return err
	}
	close(d.ready)
	bg := context.WithoutCancel(ctx)
	beats, stopBeats := context.WithCancel(bg)
	d.stopBeats = stopBeats
	go func() {
		defer close(d.beatsDone)
		d.heartbeatLoop(beats)
	}()
	if err := d.poller.Start(bg); err != nil {
		stopBeats()
		<-d.beatsDone
		return fmt.Errorf("delegate: %w", err)
	}
	d.live.Store(true)
	// A poller refused for good stops the delegate.
	go func() {
		select {
		case <-d.poller.Done():
			d.stop(bg)
		case <-d.stopping:
		}
	}()
	return nil
}

// Stop stops taking work, lets running tasks finish for up to the drain
// timeout (or until ctx ends), cancels and reports those left, runs the
// shutdown hooks and deregisters. It returns what failed, including why
// the delegate stopped by itself if it did.
func (d *Delegate) Stop(ctx context.Context) error {
	if !d.live.Load() {
		return nil
	}
	d.stop(ctx)
	<-d.done
	return d.Err()
}

// Done is closed once the delegate has stopped, after Stop or by itself
// (the manager refused it for good; see Err).
func (d *Delegate) Done() <-chan struct{} { return d.done }

// Err returns what stopped the delegate, once Done is closed.
func (d *Delegate) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// Run starts the delegate, runs it until ctx ends or it stops by itself,
// then stops it. It returns at once with an error when the manager
// refuses the registration token, and nil when ctx ends before the
// delegate registered.
func (d *Delegate) Run(ctx context.Context) error {
	bg := context.WithoutCancel(ctx)
	if err := d.Start(ctx); err != nil {
		hooks := d.runHooks(bg)
		if ctx.Err() != nil {
			return hooks
		}
		return errors.Join(err, hooks)
	}
	select {
	case <-ctx.Done():
	case <-d.Done():
	}
	return d.Stop(bg)
}

func (d *Delegate) stop(ctx context.Context) {
	d.stopOnce.Do(func() {
		close(d.stopping)
		bg := context.WithoutCancel(ctx)
		d.drain(ctx)
		perr := d.poller.Stop(bg)
		d.stopBeats()
		<-d.beatsDone
		errs := []error{perr, d.runHooks(bg)}
		if perr == nil {
			dctx, cancel := context.WithTimeout(bg, hookTimeout)
			errs = append(errs, d.deregister(dctx))
			cancel()
		}
		d.mu.Lock()
		d.err = errors.Join(errs...)
		d.mu.Unlock()
		close(d.done)
	})
}

// drain stops taking work and waits for running tasks up to the drain
// timeout.
func (d *Delegate) drain(ctx context.Context) {
	select {
	case <-d.poller.Done():
		return
	default:
	}
	d.poller.Drain()
	n := len(d.poller.Running())
	d.log.WithFields(logrus.Fields{"running": n, "drain_timeout": d.cfg.DrainTimeout}).Info("stopping: waiting for running tasks")
	wctx, cancel := context.WithTimeout(ctx, d.cfg.DrainTimeout)
	defer cancel()
	if err := d.poller.WaitIdle(wctx); err != nil {
		d.log.WithField("running", d.poller.Running()).Warn("drain timeout: cancelling the tasks still running")
	}
}

// deregister removes the delegate from the manager and forgets its
// identity.
func (d *Delegate) deregister(ctx context.Context) error {
	id, dc := d.identity()
	if id == "" {
		return nil
	}
	err := d.retry.Do(ctx, func() error { return dc.Deregister(ctx, id) })
	if err != nil && !errors.Is(err, errand.ErrNotFound) {
		return fmt.Errorf("deregister: %w", err)
	}
	if err := d.ids.Clear(); err != nil {
		return fmt.Errorf("forget identity: %w", err)
	}
	d.log.WithField("delegate_id", id).Info("deregistered")
	return nil
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
