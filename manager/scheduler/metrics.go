package scheduler

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

const (
	// endedBuffer bounds the task ends waiting to be recorded; more are
	// dropped (and logged) rather than slowing down the store's writers.
	endedBuffer = 4096
	// recordTimeout bounds the reads that recording one end needs.
	recordTimeout = 10 * time.Second
)

// Metrics are the scheduler's Prometheus metrics: tasks created and
// leased, and the ends of tasks, direct and of pipeline runs. Creations
// and ends are counted from the store's change stream; each replica
// counts those it committed, so that summing over replicas counts each
// once.
type Metrics struct {
	tasksCreated  *prometheus.CounterVec
	tasksFinished *prometheus.CounterVec
	taskDuration  *prometheus.HistogramVec
	queueWait     prometheus.Histogram
	acquireWait   prometheus.Histogram
	acquired      prometheus.Counter
	log           *logrus.Logger
	// ignore lists the task types not counted.
	ignore []string

	// ended carries the ids of the tasks this manager ended, from the
	// change stream to the recorder.
	ended chan store.Change
}

func newMetrics(log *logrus.Logger, ignore []string) *Metrics {
	m := &Metrics{
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
		acquireWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "errand_acquire_wait_seconds",
			Help:    "Time an acquire request waited before it returned.",
			Buckets: []float64{.0005, .001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60},
		}),
		acquired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "errand_tasks_acquired_total",
			Help: "Tasks leased to delegates.",
		}),
		log:    log,
		ignore: ignore,
		ended:  make(chan store.Change, endedBuffer),
	}
	for _, st := range errand.States {
		if st.Terminal() {
			m.tasksFinished.WithLabelValues(string(st))
		}
	}
	return m
}

// Collectors returns the metrics, to be registered.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.tasksCreated, m.tasksFinished, m.taskDuration, m.queueWait, m.acquireWait, m.acquired}
}

// change receives the store's change stream. It must not block: tasks
// this manager created are counted at once, and the ids of the tasks it
// ended go to the recorder. Changes another manager made are that
// manager's to count.
func (m *Metrics) change(c store.Change) {
	if c.Remote {
		return
	}
	switch c.Kind {
	case store.ChangeTaskCreated:
		if c.Count > 0 && !slices.Contains(m.ignore, c.TaskType) {
			m.tasksCreated.WithLabelValues(string(c.TaskState)).Add(float64(c.Count))
		}
	case store.ChangeTaskEnded:
		if c.TaskID == "" {
			return
		}
		select {
		case m.ended <- c:
		default:
			m.log.WithField("task_id", c.TaskID).Debug("metrics: too many task ends waiting; one is not recorded")
		}
	}
}

// runMetricsRecorder records the task ends the change stream announces:
// their state, duration and queue wait, and tells Config.RunTaskEnded of
// the runs they may have finished.
func (s *Scheduler) runMetricsRecorder(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-s.metrics.ended:
			rctx, cancel := context.WithTimeout(ctx, recordTimeout)
			if err := s.recordEnd(rctx, c); err != nil && ctx.Err() == nil {
				s.log.WithError(err).WithField("task_id", c.TaskID).Warn("metrics: could not record a task's end")
			}
			cancel()
		}
	}
}

func (s *Scheduler) recordEnd(ctx context.Context, c store.Change) error {
	m := s.metrics
	// The task as it ended comes with the change; a change without it
	// has the task read.
	t := c.Ended
	if t == nil {
		var err error
		if t, err = s.store.TaskGet(ctx, c.TaskID); err != nil {
			return err
		}
	}
	if !t.State.Terminal() {
		return nil
	}
	// The run the task may have finished is counted first, so that a
	// scrape that shows the task's end shows the run's too.
	var runErr error
	if t.RunID != "" && s.cfg.RunTaskEnded != nil {
		runErr = s.cfg.RunTaskEnded(ctx, t.RunID)
	}
	if !slices.Contains(m.ignore, t.Type) {
		m.tasksFinished.WithLabelValues(string(t.State)).Inc()
		if t.StartedAt != nil && t.FinishedAt != nil {
			m.taskDuration.WithLabelValues(t.Type, string(t.State)).Observe(t.FinishedAt.Sub(*t.StartedAt).Seconds())
			if t.QueuedAt != nil && !t.StartedAt.Before(*t.QueuedAt) {
				m.queueWait.Observe(t.StartedAt.Sub(*t.QueuedAt).Seconds())
			}
		}
	}
	return runErr
}
