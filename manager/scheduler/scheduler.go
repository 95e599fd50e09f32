// Package scheduler is the manager's task scheduling behind its API:
// creating tasks, leasing them to long-polling delegates (with the values
// of the secrets they name), their reports and cancels, delegate
// registration and heartbeats, drains and the sweep that expires leases
// and timeouts. It owns the wake-up hub, the delegate cache, the delivery
// of cancels, the coalescing of heartbeats and the task metrics, which it
// counts from the store's change stream.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/internal/lifecycle"
	"github.com/errandci/errand/manager/store"
)

// Config is the scheduler's configuration. Durations must be positive;
// the manager's configuration checks them.
type Config struct {
	// HeartbeatInterval is what delegates are told to keep.
	HeartbeatInterval time.Duration
	// LeaseTTL is how long a delegate may stay silent before it is lost
	// and its tasks are retried.
	LeaseTTL time.Duration
	// MaxWait bounds an acquire long-poll.
	MaxWait time.Duration
	// SweepInterval is how often leases and timeouts are checked.
	SweepInterval time.Duration
	// TimeoutGrace is how long past its timeout a running task may still
	// report before it is ended timed_out.
	TimeoutGrace time.Duration
	// HeartbeatFlushInterval is how often recorded heartbeats are written
	// to the store, all delegates in one write.
	HeartbeatFlushInterval time.Duration
	// Secrets holds the values of the secrets tasks name; EnvSecrets when
	// nil.
	Secrets SecretSource
	// RunTaskEnded, when set, is called by the metrics recorder after it
	// recorded the end of a task of a pipeline run, so that the run's end
	// can be counted.
	RunTaskEnded func(ctx context.Context, runID string) error
	// UncountedTypes are task types the metrics do not count.
	UncountedTypes []string
	// Log receives the scheduler's log; logrus.StandardLogger() when nil.
	Log *logrus.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Scheduler is the manager's scheduling service over a store, which it
// does not close.
type Scheduler struct {
	cfg     Config
	log     *logrus.Logger
	now     func() time.Time
	store   store.Store
	hub     *hub
	beats   *heartbeats
	cache   *delegateCache
	tokens  tokenCache
	maskers taskMaskers
	fleet   fleetSnapshot
	metrics *Metrics

	unsubscribe func()
	// waitsEnded is closed by EndWaits: long-polls return at once.
	waitsEnded chan struct{}
	endOnce    sync.Once

	loops lifecycle.Loops
}

// New returns a scheduler over st. It subscribes to st's changes at
// once, so that none is missed before Start; its loops run from Start.
func New(cfg Config, st store.Store) (*Scheduler, error) {
	if st == nil {
		return nil, errors.New("scheduler: a store is required")
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Secrets == nil {
		cfg.Secrets = EnvSecrets{}
	}
	s := &Scheduler{
		cfg:        cfg,
		log:        cfg.Log,
		now:        cfg.Now,
		store:      st,
		hub:        newHub(),
		beats:      newHeartbeats(),
		cache:      newDelegateCache(),
		metrics:    newMetrics(cfg.Log, cfg.UncountedTypes),
		waitsEnded: make(chan struct{}),
	}
	s.unsubscribe = st.Subscribe(s.onChange)
	return s, nil
}

// onChange runs on every committed store change, this manager's own
// and, with a shared store, the other managers'; it must not block. The
// cache learns first, so that the waiters it wakes find it current.
func (s *Scheduler) onChange(c store.Change) {
	if c.Kind == store.ChangeDelegateDeleted {
		s.tokens.forget(c.DelegateID)
	}
	s.cache.change(c)
	s.hub.notify(c)
	s.metrics.change(c)
}

// Start starts the background loops: the sweeper, the heartbeat flusher,
// the delegate cache refresher and the metrics recorder. They stop when
// ctx ends or Stop is called.
func (s *Scheduler) Start(ctx context.Context) error {
	if err := s.loops.Start(ctx, s.runSweeper, s.runHeartbeatFlusher, s.runDelegateRefresher, s.runMetricsRecorder); err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	return nil
}

// EndWaits makes every long-poll in flight, and every later one, return
// at once: the manager is shutting down.
func (s *Scheduler) EndWaits() {
	s.endOnce.Do(func() { close(s.waitsEnded) })
}

// Stop ends the long-polls, stops the background loops and waits for
// them (or for ctx), writes the heartbeats still in memory and
// unsubscribes from the store. Stop is safe to call twice, and without
// Start.
func (s *Scheduler) Stop(ctx context.Context) error {
	s.EndWaits()
	first, err := s.loops.Stop(ctx)
	if !first {
		return nil
	}
	var errs []error
	if err != nil {
		errs = append(errs, fmt.Errorf("stop scheduler: %w", err))
	}
	flushCtx, cancelFlush := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	if err := s.FlushHeartbeats(flushCtx); err != nil {
		errs = append(errs, err)
	}
	cancelFlush()
	s.unsubscribe()
	return errors.Join(errs...)
}

// Done is closed once Stop has stopped the background loops.
func (s *Scheduler) Done() <-chan struct{} { return s.loops.Done() }

// Metrics returns the scheduler's metrics, for the manager's registry.
func (s *Scheduler) Metrics() *Metrics { return s.metrics }

// ticking calls fn every interval until ctx ends; fn's error is logged as
// what.
func (s *Scheduler) ticking(ctx context.Context, interval time.Duration, what string, fn func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				s.log.WithError(err).Warn(what)
			}
		}
	}
}
