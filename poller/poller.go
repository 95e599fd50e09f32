// Package poller is the delegate's acquire loop: it registers (or resumes
// a persisted identity), long-polls the manager for as many tasks as it has
// free slots, runs each through a router on a bounded worker pool, ships
// its log, reports its outcome under its lease, and heartbeats on a loop of
// its own that carries the running tasks, the draining and overloaded
// flags and brings back cancellations.
package poller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/livelog"
	"github.com/errandci/errand/router"
)

// Defaults of a Config.
const (
	DefaultWait              = 30 * time.Second
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultReportTimeout     = 10 * time.Minute
	DefaultMaxPendingReports = 256
	DefaultShutdownTimeout   = 15 * time.Second
	// overloadedWait bounds a long-poll while the host is overloaded, so
	// that work is taken again soon after the load drops.
	overloadedWait = 5 * time.Second
)

// Identity is who the delegate is to the manager: its id and its own token.
type Identity struct {
	ID    string `json:"id"`
	Token string `json:"token"`
}

// IdentityStore keeps the identity across restarts, so that a delegate
// that restarts resumes as itself and keeps its leases.
type IdentityStore interface {
	// Load returns the stored identity, or nil and no error when there is
	// none.
	Load() (*Identity, error)
	// Save stores the identity.
	Save(*Identity) error
	// Clear forgets the identity.
	Clear() error
}

// MemoryIdentity is an IdentityStore that forgets on exit.
type MemoryIdentity struct {
	mu sync.Mutex
	id *Identity
}

// Load returns the identity saved last.
func (m *MemoryIdentity) Load() (*Identity, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.id, nil
}

// Save keeps id.
func (m *MemoryIdentity) Save(id *Identity) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.id = id
	return nil
}

// Clear forgets the identity.
func (m *MemoryIdentity) Clear() error { return m.Save(nil) }

// Config configures a Poller. Zero values take the defaults.
type Config struct {
	// Delegate describes the delegate at registration. Its Capacity is the
	// number of tasks run at once (at least 1).
	Delegate client.RegisterRequest
	// Identity keeps the delegate's identity; in memory when nil.
	Identity IdentityStore
	// Authenticate returns a client that sends the delegate's own token.
	// The client given to New (which sends the registration token) is
	// used for everything when it is nil.
	Authenticate func(token string) client.Client
	// Pool runs the tasks; NewPool(capacity) when nil.
	Pool Pool
	// Wait is how long one acquire long-polls.
	Wait time.Duration
	// HeartbeatInterval is kept until the manager says otherwise.
	HeartbeatInterval time.Duration
	// Overloaded, when set, is asked before each acquire: while it says
	// true no new work is taken and heartbeats say so.
	Overloaded func() bool
	// ReportTimeout is how long an outcome is retried while the manager
	// is unreachable before it is abandoned.
	ReportTimeout time.Duration
	// MaxPendingReports bounds the outcomes kept while the manager is
	// unreachable; beyond it they are abandoned.
	MaxPendingReports int
	// ShutdownTimeout bounds the reports still sent after Run's context
	// ended.
	ShutdownTimeout time.Duration
	// Log configures the batching of task logs; TaskID, Lease, Offset and
	// OnLeaseLost are set per task.
	Log livelog.Config
	// NewBackOff returns the wait policy after failed manager calls;
	// exponential with jitter when nil.
	NewBackOff func() backoff.BackOff
	// Logger receives the poller's log.
	Logger logrus.FieldLogger
}

// errLeaseLost is the cause a task's context is cancelled with when the
// manager gave the task to someone else.
var errLeaseLost = errand.Errorf(errand.CodeLeaseLost, "the manager refused the task's lease")

// errStopped is the cause when the delegate stops before a task ends.
var errStopped = errand.Errorf(errand.CodeCancelled, "the delegate stopped before the task ended")

// Poller acquires and runs tasks. Create it with New; run it with Run.
type Poller struct {
	cfg    Config
	reg    client.Client
	router *router.Router
	log    atomic.Pointer[logrus.FieldLogger]
	pool   Pool

	mu      sync.Mutex
	dc      client.Client
	id      string
	running map[string]*job
	// polling is true while an acquire is in flight. An idle delegate's
	// polls tell the manager it is alive, so its periodic heartbeats are
	// skipped meanwhile: at rest a delegate costs one call per poll.
	polling    atomic.Bool
	reporting  map[string]bool
	draining   bool
	overloaded bool
	interval   time.Duration

	reports chan *report
	wake    chan struct{}
	beatNow chan struct{}
	ready   chan struct{}
}

type job struct {
	task   *errand.Task
	cancel context.CancelCauseFunc
}

type report struct {
	task *errand.Task
	out  router.Outcome
	at   time.Time
}

// New returns a Poller that registers through c and runs tasks through r.
func New(cfg Config, c client.Client, r *router.Router) *Poller {
	if cfg.Delegate.Capacity < 1 {
		cfg.Delegate.Capacity = 1
	}
	if len(cfg.Delegate.TaskTypes) == 0 && r != nil {
		cfg.Delegate.TaskTypes = r.Types()
		sort.Strings(cfg.Delegate.TaskTypes)
	}
	if cfg.Identity == nil {
		cfg.Identity = &MemoryIdentity{}
	}
	if cfg.Pool == nil {
		cfg.Pool = NewPool(cfg.Delegate.Capacity)
	}
	if cfg.Wait <= 0 {
		cfg.Wait = DefaultWait
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.ReportTimeout <= 0 {
		cfg.ReportTimeout = DefaultReportTimeout
	}
	if cfg.MaxPendingReports <= 0 {
		cfg.MaxPendingReports = DefaultMaxPendingReports
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.NewBackOff == nil {
		cfg.NewBackOff = func() backoff.BackOff {
			b := backoff.NewExponentialBackOff()
			b.InitialInterval = 250 * time.Millisecond
			b.MaxInterval = 30 * time.Second
			b.MaxElapsedTime = 0
			return b
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = logrus.StandardLogger()
	}
	p := &Poller{
		cfg:       cfg,
		reg:       c,
		dc:        c,
		router:    r,
		pool:      cfg.Pool,
		running:   map[string]*job{},
		reporting: map[string]bool{},
		interval:  cfg.HeartbeatInterval,
		reports:   make(chan *report, cfg.MaxPendingReports),
		wake:      make(chan struct{}, 1),
		beatNow:   make(chan struct{}, 1),
		ready:     make(chan struct{}),
	}
	p.log.Store(&cfg.Logger)
	return p
}

// logger returns the poller's logger, which carries the delegate's id once
// it is known.
func (p *Poller) logger() logrus.FieldLogger { return *p.log.Load() }

// ID returns the delegate's id once registered, "" before.
func (p *Poller) ID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.id
}

// Ready is closed once the delegate is registered or resumed.
func (p *Poller) Ready() <-chan struct{} { return p.ready }

// Client returns the client that speaks as the delegate.
func (p *Poller) Client() client.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dc
}

// Drain stops taking new work; running tasks go on. Heartbeats say the
// delegate is draining.
func (p *Poller) Drain() {
	p.mu.Lock()
	was := p.draining
	p.draining = true
	p.mu.Unlock()
	if !was {
		p.logger().WithField("delegate_id", p.ID()).Info("draining: no new tasks are taken")
		signal(p.beatNow)
	}
}

// Draining reports whether Drain was called or the manager asked for it.
func (p *Poller) Draining() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.draining
}

// Running returns the ids of the tasks whose handlers run or whose outcome
// is not yet reported, sorted.
func (p *Poller) Running() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := make([]string, 0, len(p.running)+len(p.reporting))
	for id := range p.running {
		ids = append(ids, id)
	}
	for id := range p.reporting {
		if p.running[id] == nil {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// WaitIdle blocks until no task runs and every outcome was reported or
// abandoned, or ctx ends.
func (p *Poller) WaitIdle(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for len(p.Running()) > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d running tasks: %w", len(p.Running()), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Cancel cancels the running tasks with ids, as a cancel from the manager
// does: their handlers' contexts end and they are reported cancelled.
func (p *Poller) Cancel(ids ...string) { p.cancel(router.ErrCancelled, ids...) }

func (p *Poller) cancel(cause error, ids ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		if j := p.running[id]; j != nil {
			p.logger().WithFields(logrus.Fields{"task_id": id, "cause": cause}).Info("stopping task")
			j.cancel(cause)
		}
	}
}

func (p *Poller) cancelAll(cause error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, j := range p.running {
		j.cancel(cause)
	}
}

// Deregister removes the delegate from the manager and forgets its
// identity. Call it after Run returned.
func (p *Poller) Deregister(ctx context.Context) error {
	id := p.ID()
	if id == "" {
		return nil
	}
	if err := p.Client().Deregister(ctx, id); err != nil && !errors.Is(err, errand.ErrNotFound) {
		return fmt.Errorf("deregister: %w", err)
	}
	if err := p.cfg.Identity.Clear(); err != nil {
		return fmt.Errorf("forget identity: %w", err)
	}
	p.logger().WithField("delegate_id", id).Info("deregistered")
	return nil
}

// Run registers or resumes the delegate, then acquires and runs tasks until
// ctx ends. Then it cancels the tasks still running, waits for their
// handlers, sends what outcomes it can within the shutdown timeout and
// returns. It returns an error when the manager refuses the delegate (a
// wrong registration token) and nil after ctx ended.
func (p *Poller) Run(ctx context.Context) error {
	if err := p.identify(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	close(p.ready)
	bg := context.WithoutCancel(ctx)
	loops, stopLoops := context.WithCancel(bg)
	defer stopLoops()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		p.heartbeatLoop(loops)
	}()
	go func() {
		defer wg.Done()
		p.reportLoop(loops)
	}()

	err := p.acquireLoop(ctx)

	p.cancelAll(errStopped)
	p.pool.Wait()
	idle, cancel := context.WithTimeout(bg, p.cfg.ShutdownTimeout)
	if werr := p.WaitIdle(idle); werr != nil {
		p.logger().WithError(werr).Warn("gave up reporting outcomes at shutdown")
	}
	cancel()
	stopLoops()
	wg.Wait()
	return err
}

// identify resumes a stored identity if the manager still knows it, or
// registers anew. It retries while the manager is unreachable and fails at
// once when the manager refuses the registration token.
func (p *Poller) identify(ctx context.Context) error {
	stored, err := p.cfg.Identity.Load()
	if err != nil {
		return fmt.Errorf("load delegate identity: %w", err)
	}
	b := backoff.WithContext(p.cfg.NewBackOff(), ctx)
	if stored != nil && stored.ID != "" {
		dc := p.authenticated(stored.Token)
		// The first word of this process: what it holds is all it holds
		// (nothing, unless an embedder ran tasks before), so the leases
		// a previous process left end at once rather than being renewed
		// by this one's heartbeats.
		err := backoff.Retry(func() error {
			resp, err := dc.Heartbeat(ctx, stored.ID, &client.HeartbeatRequest{Resumed: true, Running: p.Running()})
			if err == nil {
				p.setInterval(resp.HeartbeatInterval)
				return nil
			}
			if refused(err) {
				return backoff.Permanent(err)
			}
			p.logger().WithError(err).Warn("manager unreachable; retrying")
			return err
		}, b)
		switch {
		case err == nil:
			p.setIdentity(stored.ID, dc)
			p.logger().WithField("delegate_id", stored.ID).Info("resumed as a registered delegate")
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		}
		p.logger().WithError(err).WithField("delegate_id", stored.ID).Warn("manager no longer knows this delegate; registering anew")
		if err := p.cfg.Identity.Clear(); err != nil {
			return fmt.Errorf("forget delegate identity: %w", err)
		}
		b.Reset()
	}
	return p.register(ctx, b)
}

func (p *Poller) register(ctx context.Context, b backoff.BackOff) error {
	var reg *client.Registration
	err := backoff.Retry(func() error {
		var err error
		reg, err = p.reg.Register(ctx, &p.cfg.Delegate)
		if err == nil {
			return nil
		}
		if refused(err) || errors.Is(err, errand.ErrInvalid) {
			return backoff.Permanent(err)
		}
		p.logger().WithError(err).Warn("manager unreachable; retrying registration")
		return err
	}, b)
	if err != nil {
		if errors.Is(err, errand.ErrUnauthorized) || errors.Is(err, errand.ErrForbidden) {
			return fmt.Errorf("the manager refused the registration token (check --token / ERRAND_TOKEN): %w", err)
		}
		return fmt.Errorf("register delegate %q: %w", p.cfg.Delegate.Name, err)
	}
	if err := p.cfg.Identity.Save(&Identity{ID: reg.ID, Token: reg.Token}); err != nil {
		return fmt.Errorf("save delegate identity: %w", err)
	}
	p.setIdentity(reg.ID, p.authenticated(reg.Token))
	p.setInterval(reg.HeartbeatInterval)
	p.logger().WithFields(logrus.Fields{"delegate_id": reg.ID, "name": reg.Name}).Info("registered")
	return nil
}

// refused reports whether the manager refused who we are, as opposed to
// not answering.
func refused(err error) bool {
	return errors.Is(err, errand.ErrUnauthorized) || errors.Is(err, errand.ErrForbidden) || errors.Is(err, errand.ErrNotFound)
}

func (p *Poller) authenticated(token string) client.Client {
	if p.cfg.Authenticate == nil {
		return p.reg
	}
	return p.cfg.Authenticate(token)
}

func (p *Poller) setIdentity(id string, dc client.Client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.id, p.dc = id, dc
	l := p.cfg.Logger.WithField("delegate_id", id)
	var fl logrus.FieldLogger = l
	p.log.Store(&fl)
}

func (p *Poller) setInterval(d errand.Duration) {
	if d <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.interval = time.Duration(d)
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// slots returns how many tasks to ask for now, and whether an acquire
// asking for none should be cut short when a slot frees.
func (p *Poller) slots() (n int, overloaded bool) {
	over := p.cfg.Overloaded != nil && p.cfg.Overloaded()
	p.mu.Lock()
	defer p.mu.Unlock()
	if over != p.overloaded {
		p.overloaded = over
		if over {
			p.logger().Warn("host over its load or memory threshold: refusing new tasks")
		} else {
			p.logger().Info("host back under its thresholds: taking tasks again")
		}
		signal(p.beatNow)
	}
	if p.draining || over {
		return 0, over
	}
	return max(p.cfg.Delegate.Capacity-len(p.running), 0), false
}

func (p *Poller) acquireLoop(ctx context.Context) error {
	b := backoff.WithContext(p.cfg.NewBackOff(), ctx)
	for ctx.Err() == nil {
		n, overloaded := p.slots()
		wait := p.cfg.Wait
		if overloaded {
			wait = min(wait, overloadedWait)
		}
		actx, cancel := context.WithCancel(ctx)
		if n == 0 {
			// Asking for nothing waits only for cancels and drains; a slot
			// that frees meanwhile should not wait for the poll to end.
			go func() {
				select {
				case <-p.wake:
					cancel()
				case <-actx.Done():
				}
			}()
		}
		p.polling.Store(true)
		resp, err := p.Client().Acquire(actx, p.ID(), &client.AcquireRequest{Wait: errand.Duration(wait), Max: n})
		p.polling.Store(false)
		woken := actx.Err() != nil && ctx.Err() == nil
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if woken {
				continue
			}
			if refused(err) {
				p.logger().WithError(err).Warn("manager refused the delegate's token; registering anew")
				if err := p.cfg.Identity.Clear(); err != nil {
					return fmt.Errorf("forget delegate identity: %w", err)
				}
				if err := p.register(ctx, backoff.WithContext(p.cfg.NewBackOff(), ctx)); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				continue
			}
			d := b.NextBackOff()
			p.logger().WithError(err).WithField("retry_in", d).Warn("acquire failed")
			if !sleep(ctx, d) {
				return nil
			}
			continue
		}
		b.Reset()
		p.apply(resp.Cancel, resp.Drain)
		for _, t := range resp.Tasks {
			if err := p.start(ctx, t); err != nil {
				return nil
			}
		}
	}
	return nil
}

// sleep waits d or until ctx ends; it reports whether the wait was whole.
func sleep(ctx context.Context, d time.Duration) bool {
	if d == backoff.Stop {
		d = time.Minute
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (p *Poller) apply(cancel []string, drain bool) {
	if len(cancel) > 0 {
		p.Cancel(cancel...)
	}
	if drain {
		p.Drain()
	}
}

// start runs t on the pool.
func (p *Poller) start(ctx context.Context, t *errand.Task) error {
	tctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	p.mu.Lock()
	p.running[t.ID] = &job{task: t, cancel: cancel}
	p.mu.Unlock()
	err := p.pool.Go(ctx, func() { p.work(tctx, t) })
	if err != nil {
		// Never started: the lease expires and the manager retries it.
		cancel(errStopped)
		p.finish(t.ID)
	}
	return err
}

func (p *Poller) finish(id string) {
	p.mu.Lock()
	delete(p.running, id)
	p.mu.Unlock()
	signal(p.wake)
}

// work runs one task and queues its outcome.
func (p *Poller) work(ctx context.Context, t *errand.Task) {
	log := p.logger().WithFields(logrus.Fields{"task_id": t.ID, "task_type": t.Type, "attempt": t.Attempt})
	defer p.finish(t.ID)
	p.mu.Lock()
	cancel := p.running[t.ID].cancel
	dc := p.dc
	p.mu.Unlock()
	defer cancel(nil)
	if t.Timeout > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeoutCause(ctx, time.Duration(t.Timeout), router.TimedOut(time.Duration(t.Timeout)))
		defer stop()
	}
	lease := ""
	if t.Lease != nil {
		lease = t.Lease.Token
	}
	lc := p.cfg.Log
	lc.TaskID, lc.Lease, lc.Offset = t.ID, lease, t.LogLines
	lc.OnLeaseLost = func() { cancel(errLeaseLost) }
	if lc.Log == nil {
		lc.Log = p.logger()
	}
	logs := livelog.New(context.WithoutCancel(ctx), dc, lc)

	log.Info("task started")
	_, err := dc.UpdateStatus(ctx, t.ID, &client.StatusUpdate{Lease: lease, State: errand.StateRunning})
	switch {
	case errors.Is(err, errand.ErrLeaseLost):
		cancel(errLeaseLost)
	case err != nil && ctx.Err() == nil:
		// The outcome can still be reported from leased; run the task.
		log.WithError(err).Warn("could not report running")
	}

	var out router.Outcome
	if ctx.Err() == nil {
		out = p.router.Serve(ctx, t, logs)
	}
	closeCtx, stop := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.ShutdownTimeout)
	if err := logs.Close(closeCtx); err != nil && !errors.Is(err, errand.ErrLeaseLost) {
		log.WithError(err).Warn("task log incomplete")
	}
	stop()
	if errors.Is(context.Cause(ctx), errLeaseLost) || logs.LeaseLost() {
		log.Warn("lease lost: the task was given to another delegate; its outcome is not reported")
		return
	}
	if out.State == "" {
		out = router.Stopped(ctx)
	}
	log.WithField("state", out.State).Info("task ended")
	p.queueReport(&report{task: t, out: out, at: time.Now()})
}

// queueReport keeps an outcome for the report loop, or abandons it when
// too many wait already.
func (p *Poller) queueReport(r *report) {
	p.mu.Lock()
	p.reporting[r.task.ID] = true
	p.mu.Unlock()
	select {
	case p.reports <- r:
	default:
		p.logger().WithFields(logrus.Fields{"task_id": r.task.ID, "state": r.out.State}).
			Error("outcome abandoned: too many outcomes wait for an unreachable manager; the lease will expire and the manager decides")
		p.reported(r.task.ID)
	}
}

func (p *Poller) reported(id string) {
	p.mu.Lock()
	delete(p.reporting, id)
	p.mu.Unlock()
}

// reportLoop sends outcomes in order, retrying each until it is accepted,
// refused, or too old.
func (p *Poller) reportLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-p.reports:
			p.send(ctx, r)
		}
	}
}

func (p *Poller) send(ctx context.Context, r *report) {
	defer p.reported(r.task.ID)
	log := p.logger().WithFields(logrus.Fields{"task_id": r.task.ID, "state": r.out.State})
	lease := ""
	if r.task.Lease != nil {
		lease = r.task.Lease.Token
	}
	u := &client.StatusUpdate{Lease: lease, State: r.out.State, Result: r.out.Result, Error: r.out.Error}
	rctx, cancel := context.WithDeadline(ctx, r.at.Add(p.cfg.ReportTimeout))
	defer cancel()
	err := backoff.Retry(func() error {
		_, err := p.Client().UpdateStatus(rctx, r.task.ID, u)
		if err == nil || errors.Is(err, errand.ErrLeaseLost) || errors.Is(err, errand.ErrIllegalTransition) ||
			errors.Is(err, errand.ErrInvalid) || errors.Is(err, errand.ErrNotFound) || errors.Is(err, errand.ErrTooLarge) {
			return backoff.Permanent(err)
		}
		log.WithError(err).Debug("report failed; retrying")
		return err
	}, backoff.WithContext(p.cfg.NewBackOff(), rctx))
	switch {
	case err == nil:
		log.Debug("outcome reported")
	case errors.Is(err, errand.ErrLeaseLost):
		log.Warn("outcome refused: the lease was lost")
	default:
		log.WithError(err).Error("outcome abandoned")
	}
}

func (p *Poller) heartbeatLoop(ctx context.Context) {
	for {
		p.mu.Lock()
		interval := p.interval
		p.mu.Unlock()
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
			if p.restingInPoll() {
				continue
			}
		case <-p.beatNow:
			t.Stop()
		}
		p.heartbeat(ctx)
	}
}

// restingInPoll reports whether the delegate runs nothing, is not
// draining and has an acquire in flight: the poll stands for its
// heartbeat (the manager ends every poll within half the lease TTL, and
// a change of state asks for a heartbeat of its own).
func (p *Poller) restingInPoll() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.polling.Load() && len(p.running) == 0 && !p.draining
}

func (p *Poller) heartbeat(ctx context.Context) {
	p.mu.Lock()
	req := &client.HeartbeatRequest{Draining: p.draining, Overloaded: p.overloaded}
	interval := p.interval
	p.mu.Unlock()
	req.Running = p.Running()
	hctx, cancel := context.WithTimeout(ctx, interval)
	defer cancel()
	resp, err := p.Client().Heartbeat(hctx, p.ID(), req)
	if err != nil {
		if ctx.Err() == nil {
			p.logger().WithError(err).Warn("heartbeat failed")
		}
		return
	}
	p.setInterval(resp.HeartbeatInterval)
	p.apply(resp.Cancel, resp.Drain)
}
