package manager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/gitsource"
	"github.com/errandci/errand/manager/artifacts"
	"github.com/errandci/errand/manager/logs"
	"github.com/errandci/errand/manager/notify"
	"github.com/errandci/errand/manager/ost"
	"github.com/errandci/errand/manager/pipelines"
	"github.com/errandci/errand/manager/runs"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/users"
)

// Server is the manager: the HTTP API over the scheduler, a store and an
// object storage, plus the log sealer that keeps the storage current.
type Server struct {
	cfg     Config
	log     *logrus.Logger
	now     func() time.Time
	store   store.Store
	objects ost.Storage

	mux     *http.ServeMux
	handler http.Handler
	routes  []Route
	metrics *metrics
	sched   *scheduler.Scheduler
	logs    *logs.Service
	runs    *runs.Service
	users   *users.Service
	// pipelines stores named pipelines and starts their runs.
	pipelines *pipelines.Service
	// webhooks receives hook deliveries and sends notifications.
	webhooks *webhooks
	quiet    quietAnswers
	// artifacts keeps what steps and stages leave in their workspaces.
	artifacts *artifacts.Service

	// closing is closed when the server shuts down: long-polls and log
	// followers return at once so that a graceful shutdown is quick.
	closing   chan struct{}
	closeOnce sync.Once
	addr      atomic.Pointer[net.Addr]
	done      chan struct{}

	mu      sync.Mutex
	started bool
	stopped bool
	// closers release what Open opened: the store and the object
	// storage. A store or object storage given to New is its caller's to
	// close.
	closers []io.Closer
}

// Route is one registered method and path pattern, as http.ServeMux reads
// it (path wildcards such as {id} included).
type Route struct {
	Method  string
	Pattern string
}

// New returns a server over st and objects, which it uses and does not
// close. cfg has its defaults applied and is validated; the admin and
// registration tokens must be set (Open generates them when they are
// not).
func New(cfg Config, st store.Store, objects ost.Storage) (*Server, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.AdminToken == "" || cfg.RegistrationToken == "" {
		return nil, errors.New("invalid manager configuration: admin and registration tokens are required")
	}
	if st == nil || objects == nil {
		return nil, errors.New("manager: a store and an object storage are required")
	}
	if cfg.ID == "" {
		id, err := scheduler.NewSecret(12)
		if err != nil {
			return nil, err
		}
		cfg.ID = "m-" + id
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Log,
		now:     cfg.Now,
		store:   st,
		objects: objects,
		mux:     http.NewServeMux(),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	quiet, err := newQuietAnswers(cfg.HeartbeatInterval)
	if err != nil {
		return nil, err
	}
	s.quiet = quiet
	s.metrics = newMetrics(s)
	s.sched, err = scheduler.New(scheduler.Config{
		HeartbeatInterval:      cfg.HeartbeatInterval,
		LeaseTTL:               cfg.LeaseTTL,
		MaxWait:                cfg.MaxWait,
		SweepInterval:          cfg.SweepInterval,
		TimeoutGrace:           cfg.TimeoutGrace,
		HeartbeatFlushInterval: cfg.HeartbeatFlushInterval,
		Secrets:                cfg.Secrets,
		RunTaskEnded:           func(ctx context.Context, runID string) error { return s.runs.TaskEnded(ctx, runID) },
		UncountedTypes:         []string{TypeApproval},
		Log:                    cfg.Log,
		Now:                    cfg.Now,
	}, st)
	if err != nil {
		return nil, err
	}
	s.logs, err = logs.New(logs.Config{ObjectSize: cfg.LogObjectSize, SealInterval: cfg.SealInterval, Log: cfg.Log, Now: cfg.Now},
		st, objects, s.sched)
	if err != nil {
		_ = s.sched.Stop(context.Background())
		return nil, err
	}
	s.runs, err = runs.New(runs.Config{
		MaxRunStages: cfg.MaxRunStages, MaxStageSteps: cfg.MaxStageSteps, MaxRunTasks: cfg.MaxRunTasks,
		JsonnetTimeout: cfg.JsonnetTimeout, JsonnetMemory: cfg.JsonnetMemory, Secrets: cfg.Secrets,
		Git:            gitsource.Options{AllowFile: cfg.AllowFileSources},
		ExplainWaiting: s.sched.ExplainWaiting, Log: cfg.Log, Now: cfg.Now,
		RunFinished: func(ctx context.Context, run *client.Run) { s.webhooks.runEvent(ctx, notify.EventRunFinished, run) },
	}, st, s.sched)
	if err != nil {
		_ = s.logs.Stop(context.Background())
		_ = s.sched.Stop(context.Background())
		return nil, err
	}
	if s.users, err = users.New(users.Config{Log: cfg.Log, Now: cfg.Now}, st); err != nil {
		_ = s.logs.Stop(context.Background())
		_ = s.sched.Stop(context.Background())
		return nil, err
	}
	if s.pipelines, err = pipelines.New(pipelines.Config{Log: cfg.Log, Now: cfg.Now, ReadConfig: s.runs.ReadSourceFile,
		RunStarted: func(ctx context.Context, run *client.Run) { s.webhooks.runEvent(ctx, notify.EventRunStarted, run) },
	}, st, s.runs); err != nil {
		_ = s.logs.Stop(context.Background())
		_ = s.sched.Stop(context.Background())
		return nil, err
	}
	if err = s.newWebhooks(storedPipelines{store: st, pipes: s.pipelines, secrets: cfg.Secrets, log: cfg.Log}); err != nil {
		_ = s.logs.Stop(context.Background())
		_ = s.sched.Stop(context.Background())
		return nil, err
	}
	if s.artifacts, err = s.newArtifacts(); err != nil {
		_ = s.logs.Stop(context.Background())
		_ = s.sched.Stop(context.Background())
		return nil, err
	}
	s.metrics.register(s.sched.Metrics().Collectors()...)
	s.metrics.register(s.logs.Collectors()...)
	s.metrics.register(s.runs.Collectors()...)
	s.registerRoutes()
	s.handler = s.serveHTTP()
	return s, nil
}

// ID returns the manager's identity (Config.ID).
func (s *Server) ID() string { return s.cfg.ID }

// Handler returns the whole API.
func (s *Server) Handler() http.Handler { return s.handler }

// Routes returns every registered route, in registration order.
func (s *Server) Routes() []Route { return append([]Route(nil), s.routes...) }

// AdminToken returns the token of the user side of the API.
func (s *Server) AdminToken() string { return s.cfg.AdminToken }

// RegistrationToken returns the token delegates register with.
func (s *Server) RegistrationToken() string { return s.cfg.RegistrationToken }

// Addr returns the address the server listens on, nil before
// ListenAndServe bound it.
func (s *Server) Addr() net.Addr {
	if a := s.addr.Load(); a != nil {
		return *a
	}
	return nil
}

// Start starts the services' background loops. They stop when ctx ends
// or Stop is called; Stop waits for them.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("manager: start after stop")
	}
	if s.started {
		return errors.New("manager: already started")
	}
	s.started = true
	if err := s.sched.Start(ctx); err != nil {
		return err
	}
	if err := s.logs.Start(ctx); err != nil {
		return err
	}
	if err := s.webhooks.start(ctx, s.store, s.runs.Get); err != nil {
		return err
	}
	s.log.WithFields(logrus.Fields{
		"heartbeat_interval": s.cfg.HeartbeatInterval,
		"lease_ttl":          s.cfg.LeaseTTL,
	}).Info("manager started")
	return nil
}

// Stop stops the services and waits for them (the scheduler writes the
// heartbeats still in memory), and closes what Open opened. Long-polls
// and log follows in flight return at once. Stop is safe to call twice.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.mu.Unlock()

	s.shutdownWaiters()
	var errs []error
	if err := s.webhooks.stop(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := s.logs.Stop(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := s.sched.Stop(ctx); err != nil {
		errs = append(errs, err)
	}
	for _, c := range s.closers {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close: %w", err))
		}
	}
	close(s.done)
	s.log.Info("manager stopped")
	return errors.Join(errs...)
}

func (s *Server) shutdownWaiters() {
	s.closeOnce.Do(func() { close(s.closing) })
	s.sched.EndWaits()
	s.logs.EndWaits()
}

// Done is closed once Stop has stopped the server.
func (s *Server) Done() <-chan struct{} { return s.done }

// ListenAndServe starts the server, serves cfg.Listen until ctx ends, then
// shuts down gracefully: in-flight requests finish (long-polls and log
// follows return early), and Stop runs.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		_ = s.Stop(context.Background())
		return fmt.Errorf("listen on %s: %w", s.cfg.Listen, err)
	}
	addr := ln.Addr()
	s.addr.Store(&addr)
	if err := s.Start(ctx); err != nil {
		_ = ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ErrorLog:          nil,
	}
	s.log.WithField("addr", addr.String()).Info("manager listening")
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	var errs []error
	select {
	case err := <-serveErr:
		errs = append(errs, fmt.Errorf("serve: %w", err))
	case <-ctx.Done():
		s.log.Info("manager shutting down")
		s.shutdownWaiters()
		shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		if err := srv.Shutdown(shutCtx); err != nil {
			errs = append(errs, fmt.Errorf("shut down HTTP server: %w", err))
		}
		cancel()
		if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("serve: %w", err))
		}
	}
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.Stop(stopCtx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
