// Package poller is the delegate's acquire loop: it long-polls the manager
// for as many tasks as it has free slots, runs each through a router on a
// bounded worker pool, ships its log and reports its state under its
// lease, in batches (see reports.go). It works for a registered delegate, its Session: the delegate
// package registers, heartbeats, drains and checks the host's resources,
// and runs a Poller inside.
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
	"github.com/errandci/errand/internal/clock"
	"github.com/errandci/errand/livelog"
	"github.com/errandci/errand/router"
)

// Defaults of a Config.
const (
	DefaultWait              = 30 * time.Second
	DefaultReportTimeout     = 10 * time.Minute
	DefaultMaxPendingReports = 256
	DefaultShutdownTimeout   = 15 * time.Second
	// overloadedWait bounds a long-poll while the host is overloaded, so
	// that work is taken again soon after the load drops.
	overloadedWait = 5 * time.Second
	// runningReportTimeout bounds the retries of a task's running report;
	// the task runs whether or not it got through.
	runningReportTimeout = client.DefaultRetry
)

// Client is the part of client.DelegateClient the poller speaks, as the
// registered delegate.
type Client interface {
	// Acquire long-polls for tasks.
	Acquire(ctx context.Context, delegateID string, r *client.AcquireRequest) (*client.AcquireResponse, error)
	// Reports sends many status reports in one call.
	Reports(ctx context.Context, delegateID string, reports []*client.Report) ([]*client.ReportResult, error)
	// AppendLogs appends log lines under a task's lease.
	AppendLogs(ctx context.Context, taskID string, a *client.LogAppend) (*client.LogAppendResult, error)
}

// Session is the registered delegate a Poller works for.
type Session interface {
	// Delegate returns the delegate's id and a client that speaks as it.
	Delegate() (id string, c Client)
	// Refused is told that the manager refused the delegate's identity
	// (its token or its id). It returns once the delegate is registered
	// anew, after which Delegate returns the new identity, or with the
	// error that stops the poller.
	Refused(ctx context.Context, err error) error
}

// Config configures a Poller. Session and Router are required; zero values
// take the defaults.
type Config struct {
	// Session is the delegate the poller acquires for.
	Session Session
	// Router runs the tasks.
	Router *router.Router
	// Capacity is the number of tasks run at once (at least 1).
	Capacity int
	// Pool runs the tasks; NewPool(Capacity) when nil.
	Pool Pool
	// Wait is how long one acquire long-polls.
	Wait time.Duration
	// Overloaded, when set, is asked before each acquire: while it says
	// true no new work is taken.
	Overloaded func() bool
	// ReportTimeout is how long an outcome is retried while the manager
	// is unreachable before it is abandoned.
	ReportTimeout time.Duration
	// MaxPendingReports bounds the outcomes kept while the manager is
	// unreachable; beyond it they are abandoned.
	MaxPendingReports int
	// ShutdownTimeout bounds the reports still sent once Stop is called.
	ShutdownTimeout time.Duration
	// Log configures the batching of task logs; TaskID, Lease, Offset and
	// OnLeaseLost are set per task.
	Log livelog.Config
	// NewBackOff returns the wait policy after failed manager calls;
	// exponential with jitter when nil.
	NewBackOff func() backoff.BackOff
	// Clock is the time of the waits between attempts; the system's
	// when nil.
	Clock clock.Clock
	// Logger receives the poller's log.
	Logger logrus.FieldLogger
}

// errLeaseLost is the cause a task's context is cancelled with when the
// manager gave the task to someone else.
var errLeaseLost = errand.Errorf(errand.CodeLeaseLost, "the manager refused the task's lease")

// errStopped is the cause when the delegate stops before a task ends.
var errStopped = errand.Errorf(errand.CodeCancelled, "the delegate stopped before the task ended")

// Poller acquires and runs tasks. Create it with New, run it with Start
// and Stop.
type Poller struct {
	cfg   Config
	clock clock.Clock

	mu      sync.Mutex
	running map[string]*job
	// reporting counts the reports of each task not yet delivered;
	// outcomes those that are outcomes.
	reporting  map[string]int
	outcomes   int
	draining   bool
	overloaded bool
	idle       chan struct{} // closed while nothing runs or waits to be reported
	idleClosed bool
	// polling is true while an acquire is in flight. An idle delegate's
	// polls tell the manager it is alive (see Resting).
	polling atomic.Bool

	out     *outbox
	wake    chan struct{}
	changed chan struct{}

	started     atomic.Bool
	stopAcquire context.CancelFunc
	stopReports context.CancelFunc
	acquireDone chan struct{}
	reportsDone chan struct{}
	stopOnce    sync.Once
	done        chan struct{}
	err         error
}

type job struct {
	task   *errand.Task
	cancel context.CancelCauseFunc
}

// New checks cfg and returns a Poller, not yet started.
func New(cfg Config) (*Poller, error) {
	if cfg.Session == nil {
		return nil, errors.New("poller: a session is required")
	}
	if cfg.Router == nil {
		return nil, errors.New("poller: a router is required")
	}
	if cfg.Capacity < 1 {
		cfg.Capacity = 1
	}
	if cfg.Pool == nil {
		cfg.Pool = NewPool(cfg.Capacity)
	}
	if cfg.Wait <= 0 {
		cfg.Wait = DefaultWait
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
		cfg.NewBackOff = DefaultBackOff
	}
	if cfg.Logger == nil {
		cfg.Logger = logrus.StandardLogger()
	}
	p := &Poller{
		cfg:         cfg,
		clock:       clock.OrReal(cfg.Clock),
		running:     map[string]*job{},
		reporting:   map[string]int{},
		idle:        make(chan struct{}),
		idleClosed:  true,
		out:         newOutbox(),
		wake:        make(chan struct{}, 1),
		changed:     make(chan struct{}, 1),
		acquireDone: make(chan struct{}),
		reportsDone: make(chan struct{}),
		done:        make(chan struct{}),
	}
	close(p.idle)
	return p, nil
}

// DefaultBackOff is the wait policy after failed manager calls when a
// Config names none: exponential with jitter from 250ms up to 30s, with
// no end.
func DefaultBackOff() backoff.BackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(250*time.Millisecond),
		backoff.WithMaxInterval(30*time.Second),
		backoff.WithMaxElapsedTime(0),
	)
}

// logger returns the poller's logger with the delegate's id.
func (p *Poller) logger() logrus.FieldLogger {
	id, _ := p.cfg.Session.Delegate()
	return p.cfg.Logger.WithField("delegate_id", id)
}

// Start starts the acquire loop and the report loop, which run until
// Stop; ctx gives them its values, not its end.
func (p *Poller) Start(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return errors.New("poller: started twice")
	}
	bg := context.WithoutCancel(ctx)
	actx, stopAcquire := context.WithCancel(bg)
	rctx, stopReports := context.WithCancel(bg)
	p.stopAcquire, p.stopReports = stopAcquire, stopReports
	go func() {
		err := p.acquireLoop(actx)
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.acquireDone)
		if err != nil {
			// The delegate is refused for good: stop as Stop does.
			p.stop(bg)
		}
	}()
	go func() {
		defer close(p.reportsDone)
		p.reportLoop(rctx)
	}()
	return nil
}

// Stop stops taking work, cancels the tasks still running, waits for
// their handlers and sends what outcomes it can within ctx and the
// shutdown timeout. It returns the error that stopped the poller before,
// if any (the manager refused the delegate for good).
func (p *Poller) Stop(ctx context.Context) error {
	if !p.started.Load() {
		return nil
	}
	p.stop(ctx)
	<-p.done
	return p.Err()
}

// Done is closed once the poller has stopped: after Stop, or when the
// manager refused the delegate for good (see Err).
func (p *Poller) Done() <-chan struct{} { return p.done }

// Err returns why the poller stopped by itself, nil otherwise.
func (p *Poller) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *Poller) stop(ctx context.Context) {
	p.stopOnce.Do(func() {
		defer close(p.done)
		p.stopAcquire()
		<-p.acquireDone
		p.cancelAll(errStopped)
		p.cfg.Pool.Wait()
		idle, cancel := context.WithTimeout(ctx, p.cfg.ShutdownTimeout)
		if err := p.WaitIdle(idle); err != nil {
			p.logger().WithError(err).Warn("gave up reporting outcomes at shutdown")
		}
		cancel()
		p.stopReports()
		<-p.reportsDone
	})
}

// Changed receives a value when the poller stops or starts taking work
// (a drain, the host going over or back under its thresholds): the
// delegate heartbeats at once to say so.
func (p *Poller) Changed() <-chan struct{} { return p.changed }

// Drain stops taking new work; running tasks go on.
func (p *Poller) Drain() {
	p.mu.Lock()
	was := p.draining
	p.draining = true
	p.mu.Unlock()
	if !was {
		p.logger().Info("draining: no new tasks are taken")
		signal(p.changed)
	}
}

// Draining reports whether Drain was called or the manager asked for it.
func (p *Poller) Draining() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.draining
}

// Overloaded reports whether the last check before an acquire found the
// host over its thresholds.
func (p *Poller) Overloaded() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.overloaded
}

// Resting reports whether the delegate runs nothing, is not draining and
// has an acquire in flight: the poll stands for its heartbeat (the
// manager ends every poll within half the lease TTL, and a change of
// state asks for a heartbeat of its own), so at rest a delegate costs one
// call per poll.
func (p *Poller) Resting() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.polling.Load() && len(p.running) == 0 && !p.draining
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
	p.mu.Lock()
	idle := p.idle
	p.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for %d running tasks: %w", len(p.Running()), ctx.Err())
	}
}

// busyChangedLocked keeps the idle channel in step with the running and
// reporting sets; p.mu is held.
func (p *Poller) busyChangedLocked() {
	busy := len(p.running)+len(p.reporting) > 0
	switch {
	case busy && p.idleClosed:
		p.idle, p.idleClosed = make(chan struct{}), false
	case !busy && !p.idleClosed:
		close(p.idle)
		p.idleClosed = true
	}
}

// Cancel cancels the running tasks with ids, as a cancel from the manager
// does: their handlers' contexts end and they are reported cancelled.
func (p *Poller) Cancel(ids ...string) { p.cancel(router.ErrCancelled, ids...) }

func (p *Poller) cancel(cause error, ids ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		if j := p.running[id]; j != nil {
			p.cfg.Logger.WithFields(logrus.Fields{"task_id": id, "cause": cause}).Info("stopping task")
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

// refused reports whether the manager refused who the delegate is, as
// opposed to not answering.
func refused(err error) bool {
	return errors.Is(err, errand.ErrUnauthorized) || errors.Is(err, errand.ErrForbidden) || errors.Is(err, errand.ErrNotFound)
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// slots returns how many tasks to ask for now, and whether the host is
// overloaded.
func (p *Poller) slots() (n int, overloaded bool) {
	over := p.cfg.Overloaded != nil && p.cfg.Overloaded()
	p.mu.Lock()
	defer p.mu.Unlock()
	if over != p.overloaded {
		p.overloaded = over
		if over {
			p.cfg.Logger.Warn("host over its load or memory threshold: refusing new tasks")
		} else {
			p.cfg.Logger.Info("host back under its thresholds: taking tasks again")
		}
		signal(p.changed)
	}
	if p.draining || over {
		return 0, over
	}
	return max(p.cfg.Capacity-len(p.running), 0), false
}

// acquireLoop acquires and starts tasks until ctx ends (nil) or the
// manager refuses the delegate for good (the error).
func (p *Poller) acquireLoop(ctx context.Context) error {
	// Whatever is left to the next acquire goes with the report loop once
	// there is none.
	defer p.out.release()
	b := backoff.WithContext(p.cfg.NewBackOff(), ctx)
	for ctx.Err() == nil {
		n, overloaded := p.slots()
		wait := p.cfg.Wait
		if overloaded {
			wait = min(wait, overloadedWait)
		}
		actx, cancel := context.WithCancel(ctx)
		id, c := p.cfg.Session.Delegate()
		carried := p.out.acquireTake(client.MaxReports, n)
		if n == 0 && len(carried) == 0 {
			// Asking for nothing waits only for cancels and drains; a slot
			// that frees meanwhile should not wait for the poll to end.
			// (One that carries reports does not wait.)
			go func() {
				select {
				case <-p.wake:
					cancel()
				case <-actx.Done():
				}
			}()
		}
		p.polling.Store(true)
		resp, err := c.Acquire(actx, id, &client.AcquireRequest{Wait: errand.Duration(wait), Max: n, Reports: wire(carried)})
		p.polling.Store(false)
		p.out.acquireEnded()
		woken := actx.Err() != nil && ctx.Err() == nil
		cancel()
		if err != nil {
			// The report loop delivers what the acquire carried.
			p.out.putBack(carried)
			if ctx.Err() != nil {
				return nil
			}
			if woken {
				continue
			}
			p.out.release()
			if refused(err) {
				if err := p.cfg.Session.Refused(ctx, err); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				continue
			}
			d := b.NextBackOff()
			if d == backoff.Stop {
				d = time.Minute
			}
			p.logger().WithError(err).WithField("retry_in", d).Warn("acquire failed")
			if !clock.Sleep(p.clock, ctx.Done(), d) {
				return nil
			}
			continue
		}
		b.Reset()
		if again, _ := p.settle(carried, resp.Reports); len(again) > 0 {
			p.out.putBack(again)
		}
		if len(resp.Cancel) > 0 {
			p.Cancel(resp.Cancel...)
		}
		if resp.Drain {
			p.Drain()
		}
		for _, t := range resp.Tasks {
			if err := p.start(ctx, t, c); err != nil {
				return nil
			}
		}
	}
	return nil
}

// start runs t on the pool, speaking through c.
func (p *Poller) start(ctx context.Context, t *errand.Task, c Client) error {
	tctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	j := &job{task: t, cancel: cancel}
	p.mu.Lock()
	p.running[t.ID] = j
	p.busyChangedLocked()
	p.mu.Unlock()
	err := p.cfg.Pool.Go(ctx, func() { p.work(tctx, j, c) })
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
	p.busyChangedLocked()
	p.mu.Unlock()
	signal(p.wake)
}

// work runs one task and queues its outcome.
func (p *Poller) work(ctx context.Context, j *job, c Client) {
	t := j.task
	log := p.logger().WithFields(logrus.Fields{"task_id": t.ID, "task_type": t.Type, "attempt": t.Attempt})
	defer p.finish(t.ID)
	cancel := j.cancel
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
		lc.Log = log
	}
	if lc.Clock == nil {
		lc.Clock = p.clock
	}
	logs := livelog.New(context.WithoutCancel(ctx), c, lc)

	log.Info("task started")
	// The task runs at once; the running report leaves with the next
	// batch, and a lost lease it meets stops the task.
	p.send(t, errand.StateRunning, client.Report{}, runningReportTimeout, func(err error) {
		switch {
		case errors.Is(err, errand.ErrLeaseLost):
			cancel(errLeaseLost)
		case err != nil && ctx.Err() == nil:
			// The outcome can still be reported from leased.
			log.WithError(err).Warn("could not report running")
		}
	})

	var out router.Outcome
	if ctx.Err() == nil {
		out = p.cfg.Router.Serve(ctx, t, logs)
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
	// Said once the outcome is queued: what reads the log may count on
	// it.
	p.queueOutcome(t, out)
	log.WithField("state", out.State).Info("task ended")
}

// queueOutcome queues the outcome of task t, or abandons it when too
// many wait already.
func (p *Poller) queueOutcome(t *errand.Task, out router.Outcome) {
	log := p.logger().WithFields(logrus.Fields{"task_id": t.ID, "state": out.State})
	p.mu.Lock()
	full := p.outcomes >= p.cfg.MaxPendingReports
	if !full {
		p.outcomes++
	}
	p.mu.Unlock()
	if full {
		log.Error("outcome abandoned: too many outcomes wait for an unreachable manager; the lease will expire and the manager decides")
		return
	}
	p.send(t, out.State, client.Report{Result: out.Result, Error: out.Error}, p.cfg.ReportTimeout, func(err error) {
		p.mu.Lock()
		p.outcomes--
		p.mu.Unlock()
		switch {
		case err == nil:
			log.Debug("outcome reported")
		case errors.Is(err, errand.ErrLeaseLost):
			log.Warn("outcome refused: the lease was lost")
		default:
			log.WithError(err).Error("outcome abandoned")
		}
	})
}

// reported forgets a report of task id that was delivered or given up.
func (p *Poller) reported(id string) {
	p.mu.Lock()
	if p.reporting[id]--; p.reporting[id] <= 0 {
		delete(p.reporting, id)
	}
	p.busyChangedLocked()
	p.mu.Unlock()
}
