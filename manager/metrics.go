package manager

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/pipeline"
)

// Metrics come from two places, so that they hold for pipeline runs'
// tasks as well as direct ones, after a restart and across replicas:
//
//   - gauges (errand_tasks, errand_runs, errand_delegates) are counted in
//     the store when Prometheus scrapes, cached for gaugeTTL, so that every
//     replica shows the same numbers and a restart loses nothing;
//   - counters and histograms of ended tasks and finished runs are fed by
//     the store's change stream: each replica counts the ends it
//     committed, so that summing over replicas counts each end once.

const (
	// gaugeTTL is how long a count of the store serves scrapes.
	gaugeTTL = 2 * time.Second
	// gaugeTimeout bounds one count of the store.
	gaugeTimeout = 5 * time.Second
	// endedBuffer bounds the task ends waiting to be recorded; more are
	// dropped (and logged) rather than slowing down the store's writers.
	endedBuffer = 4096
	// recordTimeout bounds the reads that recording one end needs.
	recordTimeout = 10 * time.Second
	// countedRuns is how many finished runs are remembered so that a run
	// is counted finished once.
	countedRuns = 4096
)

// unendedStates are the task states errand_tasks shows.
var unendedStates = []errand.State{errand.StatePending, errand.StateQueued, errand.StateLeased, errand.StateRunning}

// metrics are the manager's Prometheus metrics, in a registry of the
// server's own so that several servers in one process do not collide.
type metrics struct {
	registry      *prometheus.Registry
	tasksCreated  *prometheus.CounterVec
	tasksFinished *prometheus.CounterVec
	taskDuration  *prometheus.HistogramVec
	queueWait     prometheus.Histogram
	runsFinished  *prometheus.CounterVec
	acquireWait   prometheus.Histogram
	acquired      prometheus.Counter
	httpDuration  *prometheus.HistogramVec
	handler       http.Handler
	log           *logrus.Logger

	// ended carries the ids of the tasks this manager ended, from the
	// change stream to the recorder.
	ended chan string
	// counted remembers the runs already counted finished, oldest first.
	counted     map[string]bool
	countedList []string

	// logSealFailures counts failed attempts to seal a task's log.
	logSealFailures prometheus.Counter
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		tasksCreated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_tasks_created_total",
			Help: "Tasks created, direct and of pipeline runs, by the state they were created in.",
		}, []string{"state"}),
		tasksFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_tasks_finished_total",
			Help: "Tasks that ended on this manager, direct and of pipeline runs, by final state.",
		}, []string{"state"}),
		taskDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "errand_task_duration_seconds",
			Help:    "Time from a task's start to its end, by type and final state, for tasks that started.",
			Buckets: []float64{.1, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200},
		}, []string{"type", "state"}),
		queueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "errand_queue_wait_seconds",
			Help:    "Time a task waited queued before it started, observed when it ends.",
			Buckets: []float64{.01, .05, .1, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
		}),
		runsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_runs_finished_total",
			Help: "Pipeline runs that finished on this manager, by result (a config that did not load or validate is failed).",
		}, []string{"result"}),
		acquireWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "errand_acquire_wait_seconds",
			Help:    "Time an acquire request waited before it returned.",
			Buckets: []float64{.0005, .001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60},
		}),
		acquired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "errand_tasks_acquired_total",
			Help: "Tasks leased to delegates.",
		}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "errand_http_request_duration_seconds",
			Help:    "HTTP request durations by method, route and status.",
			Buckets: prometheus.DefBuckets,
		}, []string{"method", "route", "code"}),
		log:     s.log,
		ended:   make(chan string, endedBuffer),
		counted: make(map[string]bool),
	}
	for _, st := range errand.States {
		if st.Terminal() {
			m.tasksFinished.WithLabelValues(string(st))
		}
	}
	for _, r := range []pipeline.Result{pipeline.ResultSuccess, pipeline.ResultFailed, pipeline.ResultCancelled} {
		m.runsFinished.WithLabelValues(string(r))
	}
	m.registry.MustRegister(m.tasksCreated, m.tasksFinished, m.taskDuration, m.queueWait, m.runsFinished,
		m.acquireWait, m.acquired, m.httpDuration, newStoreCollector(s),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.logSealFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "errand_log_seal_failures_total",
		Help: "Failed attempts to seal an ended task's log into object storage; each such log is retried with backoff.",
	})
	m.registry.MustRegister(m.logSealFailures, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "errand_log_seals_failing",
		Help: "Logs of ended tasks that failed to seal on this manager and wait for a retry.",
	}, func() float64 { return float64(s.seals.waiting()) }))
	m.handler = promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{
		// A store that does not answer leaves the gauges out of the
		// scrape, not the whole scrape.
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      promLogger{s.log},
	})
	return m
}

// created counts tasks as they were created.
func (m *metrics) created(tasks []*errand.Task) {
	for _, t := range tasks {
		if t.Type != TypeApproval {
			m.tasksCreated.WithLabelValues(string(t.State)).Inc()
		}
	}
}

// change receives the store's change stream. It must not block: the ids
// of the tasks this manager ended go to the recorder.
func (m *metrics) change(c store.Change) {
	if c.Kind != store.ChangeTaskEnded || c.Remote || c.TaskID == "" {
		return
	}
	select {
	case m.ended <- c.TaskID:
	default:
		m.log.WithField("task_id", c.TaskID).Debug("metrics: too many task ends waiting; one is not recorded")
	}
}

// runMetricsRecorder records the task ends the change stream announces:
// their state, duration and queue wait, and the runs they finish.
func (s *Server) runMetricsRecorder(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-s.metrics.ended:
			rctx, cancel := context.WithTimeout(ctx, recordTimeout)
			if err := s.recordEnd(rctx, id); err != nil && ctx.Err() == nil {
				s.log.WithError(err).WithField("task_id", id).Warn("metrics: could not record a task's end")
			}
			cancel()
		}
	}
}

func (s *Server) recordEnd(ctx context.Context, id string) error {
	m := s.metrics
	t, err := s.store.TaskGet(ctx, id)
	if err != nil {
		return err
	}
	if !t.State.Terminal() {
		return nil
	}
	if t.Type != TypeApproval {
		m.tasksFinished.WithLabelValues(string(t.State)).Inc()
		if t.StartedAt != nil && t.FinishedAt != nil {
			m.taskDuration.WithLabelValues(t.Type, string(t.State)).Observe(t.FinishedAt.Sub(*t.StartedAt).Seconds())
			if t.QueuedAt != nil && !t.StartedAt.Before(*t.QueuedAt) {
				m.queueWait.Observe(t.StartedAt.Sub(*t.QueuedAt).Seconds())
			}
		}
	}
	if t.RunID == "" || m.counted[t.RunID] {
		return nil
	}
	// The run may have finished with this task: only then has none of its
	// tasks left to end.
	left, err := s.store.TaskList(ctx, store.TaskListParams{RunID: t.RunID, States: unendedStates, Limit: 1})
	if err != nil || len(left) > 0 {
		return err
	}
	run, err := s.store.RunGet(ctx, t.RunID)
	if err != nil {
		return err
	}
	view, err := s.runView(ctx, run)
	if err != nil {
		return err
	}
	if view.Phase == string(pipeline.PhaseFinished) {
		m.runFinished(t.RunID, view.Result)
	}
	return nil
}

// runFinished counts a run finished once.
func (m *metrics) runFinished(id, result string) {
	if m.counted[id] {
		return
	}
	m.runsFinished.WithLabelValues(result).Inc()
	m.counted[id] = true
	m.countedList = append(m.countedList, id)
	if len(m.countedList) > countedRuns {
		delete(m.counted, m.countedList[0])
		m.countedList = m.countedList[1:]
	}
}

// setupErrorRun counts a run whose config did not load: it is finished,
// failed, when it is created, and no task of it ever ends.
func (m *metrics) setupErrorRun() {
	_, result := pipeline.SetupError()
	m.runsFinished.WithLabelValues(string(result)).Inc()
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request, _ principal) error {
	s.metrics.handler.ServeHTTP(w, r)
	return nil
}

// storeCollector is the gauges counted in the store at scrape time.
type storeCollector struct {
	s         *Server
	tasks     *prometheus.Desc
	runs      *prometheus.Desc
	delegates *prometheus.Desc

	mu     sync.Mutex
	at     time.Time
	counts *store.Counts
	err    error
}

func newStoreCollector(s *Server) *storeCollector {
	return &storeCollector{
		s: s,
		tasks: prometheus.NewDesc("errand_tasks",
			"Tasks that have not ended, by state: pending (waiting for dependencies), queued (the queue's depth), leased and running. Approval gates are not counted.",
			[]string{"state"}, nil),
		runs: prometheus.NewDesc("errand_runs",
			"Pipeline runs by phase: queued (no task started), running, finished and setuperror.",
			[]string{"phase"}, nil),
		delegates: prometheus.NewDesc("errand_delegates",
			"Registered delegates by state.",
			[]string{"state"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.tasks
	ch <- c.runs
	ch <- c.delegates
}

// Collect implements prometheus.Collector.
func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	counts, err := c.read()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.tasks, err)
		return
	}
	for _, st := range unendedStates {
		ch <- prometheus.MustNewConstMetric(c.tasks, prometheus.GaugeValue, float64(counts.Tasks[st]), string(st))
	}
	finished := counts.Runs - counts.SetupErrorRuns - counts.QueuedRuns - counts.RunningRuns
	for _, p := range []struct {
		phase pipeline.Phase
		n     int64
	}{
		{pipeline.PhaseQueued, counts.QueuedRuns},
		{pipeline.PhaseRunning, counts.RunningRuns},
		{pipeline.PhaseFinished, max(finished, 0)},
		{pipeline.PhaseSetupError, counts.SetupErrorRuns},
	} {
		ch <- prometheus.MustNewConstMetric(c.runs, prometheus.GaugeValue, float64(p.n), string(p.phase))
	}
	for _, st := range []errand.DelegateState{errand.DelegateActive, errand.DelegateDraining, errand.DelegateLost} {
		ch <- prometheus.MustNewConstMetric(c.delegates, prometheus.GaugeValue, float64(counts.Delegates[st]), string(st))
	}
}

// read returns the store's counts, at most gaugeTTL old. Concurrent
// scrapes share one count.
func (c *storeCollector) read() (*store.Counts, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < gaugeTTL {
		return c.counts, c.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), gaugeTimeout)
	defer cancel()
	c.counts, c.err = c.s.store.Count(ctx, store.CountParams{
		IgnoreTaskTypes: []string{TypeApproval},
		IgnoreDelegates: []string{ApprovalDelegateID},
	})
	c.at = time.Now()
	return c.counts, c.err
}

// promLogger logs the metrics handler's errors.
type promLogger struct{ log *logrus.Logger }

func (l promLogger) Println(v ...any) {
	l.log.WithField("component", "metrics").Warn(v...)
}
