// Package logs is the manager's log service: delegates append the lines
// of the tasks they hold, users read and follow them, and once a task has
// ended its log is sealed from the store into object storage, split into
// objects of a bounded size.
package logs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/lifecycle"
	"github.com/errandci/errand/manager/ost"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/manager/store"
)

// MaxReadLimit bounds the lines one read returns.
const MaxReadLimit = 10000

// sealBatch is how many ended tasks' logs one seal pass moves.
const sealBatch = 100

// Key is where object seq of a task's sealed log lives.
func Key(taskID string, seq int) string {
	return "logs/" + taskID + "/" + strconv.Itoa(seq)
}

// Config is the log service's configuration.
type Config struct {
	// ObjectSize bounds one sealed log object.
	ObjectSize int64
	// SealInterval is how often ended tasks' logs are sealed; a task
	// ending also wakes the sealer.
	SealInterval time.Duration
	// Log receives the service's log; logrus.StandardLogger() when nil.
	Log *logrus.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Service is the log service over a store and an object storage, which it
// does not close. The scheduler masks secret values in appended lines and
// hears the delegates that send them.
type Service struct {
	cfg       Config
	log       *logrus.Logger
	now       func() time.Time
	store     store.Store
	objects   ost.Storage
	sched     *scheduler.Scheduler
	followers *followers
	seals     sealRetries
	sealWake  chan struct{}

	sealFailures prometheus.Counter
	sealsFailing prometheus.GaugeFunc

	unsubscribe func()
	// waitsEnded is closed by EndWaits: followers return at once.
	waitsEnded chan struct{}
	endOnce    sync.Once

	loops lifecycle.Loops
}

// New returns the log service. It subscribes to st's changes at once, to
// wake followers and the sealer; the sealer runs from Start.
func New(cfg Config, st store.Store, objects ost.Storage, sched *scheduler.Scheduler) (*Service, error) {
	if st == nil || objects == nil || sched == nil {
		return nil, errors.New("logs: a store, an object storage and a scheduler are required")
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{
		cfg: cfg, log: cfg.Log, now: cfg.Now, store: st, objects: objects, sched: sched,
		followers:  newFollowers(),
		sealWake:   make(chan struct{}, 1),
		waitsEnded: make(chan struct{}),
		sealFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "errand_log_seal_failures_total",
			Help: "Failed attempts to seal an ended task's log into object storage; each such log is retried with backoff.",
		}),
	}
	s.sealsFailing = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "errand_log_seals_failing",
		Help: "Logs of ended tasks that failed to seal on this manager and wait for a retry.",
	}, func() float64 { return float64(s.seals.waiting()) })
	s.unsubscribe = st.Subscribe(s.onChange)
	return s, nil
}

// onChange wakes the followers of a task with new lines or an end, and
// the sealer on an end. It never blocks.
func (s *Service) onChange(c store.Change) {
	s.followers.notify(c)
	if c.Kind == store.ChangeTaskEnded {
		select {
		case s.sealWake <- struct{}{}:
		default:
		}
	}
}

// Collectors returns the service's metrics, to be registered.
func (s *Service) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.sealFailures, s.sealsFailing}
}

// Start starts the sealer. It stops when ctx ends or Stop is called.
func (s *Service) Start(ctx context.Context) error {
	if err := s.loops.Start(ctx, s.runSealer); err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	return nil
}

// EndWaits makes every follow in flight, and every later one, return at
// once: the manager is shutting down.
func (s *Service) EndWaits() {
	s.endOnce.Do(func() { close(s.waitsEnded) })
}

// Stop ends the follows, stops the sealer and waits for it (or for ctx),
// and unsubscribes from the store. Stop is safe to call twice, and
// without Start.
func (s *Service) Stop(ctx context.Context) error {
	s.EndWaits()
	first, err := s.loops.Stop(ctx)
	if !first {
		return nil
	}
	s.unsubscribe()
	if err != nil {
		return fmt.Errorf("stop logs: %w", err)
	}
	return nil
}

// Done is closed once Stop has stopped the sealer.
func (s *Service) Done() <-chan struct{} { return s.loops.Done() }

// Append is a delegate's append of log lines to a task it holds.
type Append struct {
	TaskID     string
	DelegateID string
	LeaseToken string
	// Offset is where the lines go; a retried append is idempotent.
	Offset int64
	// Lines are one line each, without line breaks.
	Lines []string
}

// Append masks the task's secret values in the lines, makes them valid
// UTF-8 and appends them, returning the offset after them. An offset that
// leaves a gap is errand.CodeLogOffset, saying where the log ends.
func (s *Service) Append(ctx context.Context, a Append) (int64, error) {
	s.sched.Heard(a.DelegateID)
	m, err := s.sched.Masker(ctx, a.TaskID)
	if err != nil {
		return 0, fmt.Errorf("append %d log lines to task %s: %w", len(a.Lines), a.TaskID, err)
	}
	scheduler.MaskLines(m, a.Lines)
	next, err := s.store.LogAppend(ctx, store.LogAppendParams{
		TaskID: a.TaskID, DelegateID: a.DelegateID, LeaseToken: a.LeaseToken,
		Offset: a.Offset, Lines: a.Lines, Now: s.now(),
	})
	if errors.Is(err, errand.ErrLogOffset) {
		// Say where the log ends in a form clients can read back.
		if t, gerr := s.store.TaskGet(ctx, a.TaskID); gerr == nil {
			return 0, errand.Errorf(errand.CodeLogOffset, "offset %d leaves a gap; expected offset %d", a.Offset, t.LogLines)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("append %d log lines to task %s: %w", len(a.Lines), a.TaskID, err)
	}
	return next, nil
}

// Page is a part of a task's log.
type Page struct {
	Lines []string
	// Next is the offset after Lines.
	Next int64
	// Complete says the task has ended and Lines reach the log's end.
	Complete bool
}

// Read returns up to limit lines of a task's log from offset.
func (s *Service) Read(ctx context.Context, taskID string, offset int64, limit int) (*Page, error) {
	t, err := s.store.TaskGet(ctx, taskID)
	if err != nil {
		return nil, fmt.Errorf("read log of task %s: %w", taskID, err)
	}
	lines, err := s.readLines(ctx, t, offset, limit)
	if err != nil {
		return nil, err
	}
	next := offset + int64(len(lines))
	return &Page{Lines: lines, Next: next, Complete: t.State.Terminal() && next >= t.LogLines}, nil
}

// ErrStreamBroken wraps an error met by Follow after it began: what was
// sent is a truncated log.
var ErrStreamBroken = errors.New("log stream broken")

// Follow sends a task's log from offset as it grows, until the task has
// ended and every line was sent, ctx ends or EndWaits is called. begin is
// called once the task is known to exist, before any line; emit is called
// with each batch of lines, and an error it returns (the reader went
// away) ends the follow without error. An error after begin wraps
// ErrStreamBroken.
func (s *Service) Follow(ctx context.Context, taskID string, offset int64, begin func(), emit func([]string) error) error {
	wake, done := s.followers.follow(taskID)
	defer done()
	t, err := s.store.TaskGet(ctx, taskID)
	if err != nil {
		return fmt.Errorf("follow log of task %s: %w", taskID, err)
	}
	begin()
	for {
		lines, err := s.readLines(ctx, t, offset, MaxReadLimit)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrStreamBroken, err)
		}
		if len(lines) > 0 && emit(lines) != nil {
			return nil
		}
		offset += int64(len(lines))
		if t.State.Terminal() {
			// The log of an ended task grows no more; an empty read ends
			// the stream even if the count says otherwise.
			if len(lines) == 0 || offset >= t.LogLines {
				return nil
			}
			continue
		}
		if len(lines) < MaxReadLimit {
			select {
			case <-wake:
			case <-ctx.Done():
				return nil
			case <-s.waitsEnded:
				return nil
			}
		}
		if t, err = s.store.TaskGet(ctx, taskID); err != nil {
			return fmt.Errorf("%w: %w", ErrStreamBroken, err)
		}
	}
}

// readLines returns up to limit lines of t's log from offset, from the
// store while the log is live and from object storage once sealed. t must
// have been read before the call: a log sealed in between is found.
func (s *Service) readLines(ctx context.Context, t *errand.Task, offset int64, limit int) ([]string, error) {
	if offset >= t.LogLines && !t.State.Terminal() {
		// Nothing new yet; a live log is read from the store below once
		// lines arrive.
		return []string{}, nil
	}
	lines, err := s.store.LogRead(ctx, store.LogReadParams{TaskID: t.ID, Offset: offset, Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("read log of task %s: %w", t.ID, err)
	}
	if len(lines) > 0 || offset >= t.LogLines {
		if lines == nil {
			lines = []string{}
		}
		return lines, nil
	}
	// The store holds nothing where lines should be: the log was sealed.
	var out []string
	err = s.readSealed(ctx, t.ID, offset, func(line string) bool {
		out = append(out, line)
		return len(out) < limit
	})
	if out == nil {
		out = []string{}
	}
	return out, err
}

// readSealed calls fn with each line of a sealed log from offset on,
// until fn returns false. A log that is not sealed yields nothing.
func (s *Service) readSealed(ctx context.Context, taskID string, offset int64, fn func(string) bool) error {
	objects, sealed, err := s.store.LogObjects(ctx, taskID)
	if err != nil {
		return fmt.Errorf("sealed log of task %s: %w", taskID, err)
	}
	if !sealed {
		return nil
	}
	for _, o := range objects {
		if o.FirstLine+o.Lines <= offset {
			continue
		}
		more, err := s.readObject(ctx, o, offset, fn)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

func (s *Service) readObject(ctx context.Context, o store.LogObject, offset int64, fn func(string) bool) (bool, error) {
	rc, err := s.objects.Get(ctx, o.Key)
	if err != nil {
		return false, fmt.Errorf("open log object %s: %w", o.Key, err)
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 64<<10)
	for n := o.FirstLine; n < o.FirstLine+o.Lines; n++ {
		line, err := br.ReadString('\n')
		if err != nil {
			return false, fmt.Errorf("read log object %s at line %d: %w", o.Key, n, err)
		}
		if n < offset {
			continue
		}
		if !fn(line[:len(line)-1]) {
			return false, nil
		}
	}
	return true, nil
}
