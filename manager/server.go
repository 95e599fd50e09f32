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

	"github.com/errandci/errand/manager/ost"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/manager/store"
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
	hub     *followers
	quiet   quietAnswers
	fleet   fleetSnapshot
	seals   sealRetries

	unsubscribe func()
	// closing is closed when the server shuts down: long-polls and log
	// followers return at once so that a graceful shutdown is quick.
	closing   chan struct{}
	closeOnce sync.Once
	addr      atomic.Pointer[net.Addr]
	sealWake  chan struct{}
	done      chan struct{}

	// finishedRuns keeps the list items of finished runs.
	finishedRuns finishedRunItems

	mu      sync.Mutex
	started bool
	stopped bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
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
		cfg:      cfg,
		log:      cfg.Log,
		now:      cfg.Now,
		store:    st,
		objects:  objects,
		mux:      http.NewServeMux(),
		hub:      newFollowers(),
		closing:  make(chan struct{}),
		sealWake: make(chan struct{}, 1),
		done:     make(chan struct{}),
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
		RunTaskEnded:           s.runTaskEnded,
		UncountedTypes:         []string{TypeApproval},
		Log:                    cfg.Log,
		Now:                    cfg.Now,
	}, st)
	if err != nil {
		return nil, err
	}
	s.metrics.register(s.sched.Metrics().Collectors()...)
	s.unsubscribe = st.Subscribe(s.onChange)
	s.registerRoutes()
	s.handler = s.serveHTTP()
	return s, nil
}

// ID returns the manager's identity (Config.ID).
func (s *Server) ID() string { return s.cfg.ID }

// onChange runs on every committed store change, this manager's own and
// the other managers'; it must not block. It wakes log followers and the
// sealer.
func (s *Server) onChange(c store.Change) {
	s.hub.notify(c)
	if c.Kind == store.ChangeTaskEnded {
		select {
		case s.sealWake <- struct{}{}:
		default:
		}
	}
}

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

// Start starts the background loops. They stop when ctx ends or Stop is
// called; Stop waits for them.
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
	ctx, s.cancel = context.WithCancel(ctx)
	if err := s.sched.Start(ctx); err != nil {
		return err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.runSealer(ctx)
		s.log.WithField("loop", "log sealer").Debug("background loop stopped")
	}()
	s.log.WithFields(logrus.Fields{
		"heartbeat_interval": s.cfg.HeartbeatInterval,
		"lease_ttl":          s.cfg.LeaseTTL,
	}).Info("manager started")
	return nil
}

// Stop stops the background loops and the scheduler and waits for them,
// writes the heartbeats still in memory, and closes what Open opened.
// Long-polls in flight return at once. Stop is safe to call twice.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	cancel := s.cancel
	s.mu.Unlock()

	s.shutdownWaiters()
	if cancel != nil {
		cancel()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	var errs []error
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("stop manager: waiting for background loops: %w", ctx.Err()))
	}
	if err := s.sched.Stop(ctx); err != nil {
		errs = append(errs, err)
	}
	s.unsubscribe()
	close(s.done)
	for _, c := range s.closers {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close: %w", err))
		}
	}
	s.log.Info("manager stopped")
	return errors.Join(errs...)
}

func (s *Server) shutdownWaiters() {
	s.closeOnce.Do(func() { close(s.closing) })
	s.sched.EndWaits()
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
