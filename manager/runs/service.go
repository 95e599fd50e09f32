package runs

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/gitsource"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/pipeline"
)

// Config is the run service's configuration, defaults applied.
type Config struct {
	// MaxRunStages, MaxStageSteps and MaxRunTasks bound a submitted run.
	MaxRunStages  int
	MaxStageSteps int
	MaxRunTasks   int
	// JsonnetTimeout and JsonnetMemory bound the evaluation of a
	// submitted Jsonnet config.
	JsonnetTimeout time.Duration
	JsonnetMemory  int64
	// Secrets holds the values of the secrets pipelines name; a run is
	// refused when one cannot be masked. The plan holds the names only.
	Secrets scheduler.SecretSource
	// Git configures the git ls-remote that resolves a run's source
	// ref to its commit (AllowFile for file URLs; a Timeout of
	// DefaultResolveTimeout when 0).
	Git gitsource.Options
	// ExplainWaiting, when set, says why queued tasks wait (see
	// errand.Task.WaitingReason).
	ExplainWaiting func(ctx context.Context, tasks []*errand.Task)
	// RunFinished, when set, is told of each run that finished on this
	// manager, once, with the run as it ended (the notifications of its
	// pipeline). It must not block for long: it runs on the scheduler's
	// recorder of task ends.
	RunFinished func(ctx context.Context, run *client.Run)
	// Log receives the service's log; logrus.StandardLogger() when nil.
	Log *logrus.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Service is the run service over a store, through the scheduler for
// what it creates.
type Service struct {
	cfg   Config
	log   *logrus.Logger
	now   func() time.Time
	store store.Store
	sched *scheduler.Scheduler

	// finishedRuns keeps the list items of finished runs.
	finishedRuns finishedRunItems
	finished     finishedCounter
}

// New returns the run service.
func New(cfg Config, st store.Store, sched *scheduler.Scheduler) (*Service, error) {
	if st == nil || sched == nil {
		return nil, errors.New("runs: a store and a scheduler are required")
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Secrets == nil {
		cfg.Secrets = scheduler.EnvSecrets{}
	}
	if cfg.ExplainWaiting == nil {
		cfg.ExplainWaiting = func(context.Context, []*errand.Task) {}
	}
	return &Service{cfg: cfg, log: cfg.Log, now: cfg.Now, store: st, sched: sched, finished: newFinishedCounter()}, nil
}

// countedRuns is how many finished runs are remembered so that a run is
// counted finished once.
const countedRuns = 4096

// unendedStates are the states of a task that has not ended.
var unendedStates = []errand.State{errand.StatePending, errand.StateWaiting, errand.StateQueued, errand.StateLeased, errand.StateRunning}

// finishedCounter counts runs finished on this manager, once each.
type finishedCounter struct {
	runs        *prometheus.CounterVec
	counted     map[string]bool
	countedList []string
}

func newFinishedCounter() finishedCounter {
	c := finishedCounter{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_runs_finished_total",
			Help: "Pipeline runs that finished on this manager, by result (a config that did not load or validate is failed).",
		}, []string{"result"}),
		counted: make(map[string]bool),
	}
	for _, r := range []pipeline.Result{pipeline.ResultSuccess, pipeline.ResultFailed, pipeline.ResultCancelled} {
		c.runs.WithLabelValues(string(r))
	}
	return c
}

// Collectors returns the service's metrics, to be registered.
func (s *Service) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.finished.runs}
}

// TaskEnded counts the run of a task that ended finished, once, when none
// of its tasks is left to end. The scheduler's metrics recorder calls it
// (scheduler.Config.RunTaskEnded), one task end at a time.
func (s *Service) TaskEnded(ctx context.Context, runID string) error {
	c := &s.finished
	if c.counted[runID] {
		return nil
	}
	left, err := s.store.TaskList(ctx, store.TaskListParams{RunID: runID, States: unendedStates, Limit: 1})
	if err != nil || len(left) > 0 {
		return err
	}
	run, err := s.store.RunGet(ctx, runID)
	if err != nil {
		return err
	}
	view, err := s.runView(ctx, run)
	if err != nil {
		return err
	}
	if view.Phase != string(pipeline.PhaseFinished) || c.counted[runID] {
		return nil
	}
	c.runs.WithLabelValues(view.Result).Inc()
	if s.cfg.RunFinished != nil {
		s.cfg.RunFinished(ctx, view)
	}
	c.counted[runID] = true
	c.countedList = append(c.countedList, runID)
	if len(c.countedList) > countedRuns {
		delete(c.counted, c.countedList[0])
		c.countedList = c.countedList[1:]
	}
	return nil
}

// setupErrorRun counts a run whose config did not load: it is finished,
// failed, when it is created, and no task of it ever ends.
func (s *Service) setupErrorRun() {
	_, result := pipeline.SetupError()
	s.finished.runs.WithLabelValues(string(result)).Inc()
}
