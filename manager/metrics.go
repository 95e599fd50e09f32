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
//     the store's change stream, through the scheduler: each replica
//     counts the ends it committed, so that summing over replicas counts
//     each end once.

const (
	// gaugeTTL is how long a count of the store serves scrapes.
	gaugeTTL = 2 * time.Second
	// gaugeTimeout bounds one count of the store.
	gaugeTimeout = 5 * time.Second
)

// unendedStates are the task states errand_tasks shows.
var unendedStates = []errand.State{errand.StatePending, errand.StateQueued, errand.StateLeased, errand.StateRunning}

// metrics are the manager's Prometheus metrics, in a registry of the
// server's own so that several servers in one process do not collide.
// The task metrics are the scheduler's, registered here.
type metrics struct {
	registry     *prometheus.Registry
	httpDuration *prometheus.HistogramVec
	handler      http.Handler
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "errand_http_request_duration_seconds",
			Help:    "HTTP request durations by method, route and status.",
			Buckets: prometheus.DefBuckets,
		}, []string{"method", "route", "code"}),
	}
	waiting := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "errand_acquires_waiting",
		Help: "Acquire long-polls waiting on this manager.",
	}, func() float64 { return float64(s.sched.Waiting()) })
	m.registry.MustRegister(m.httpDuration, waiting, newStoreCollector(s),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{
		// A store that does not answer leaves the gauges out of the
		// scrape, not the whole scrape.
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      promLogger{s.log},
	})
	return m
}

// register adds collectors to the registry.
func (m *metrics) register(cs ...prometheus.Collector) {
	m.registry.MustRegister(cs...)
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
	})
	c.at = time.Now()
	return c.counts, c.err
}

// promLogger logs the metrics handler's errors.
type promLogger struct{ log *logrus.Logger }

func (l promLogger) Println(v ...any) {
	l.log.WithField("component", "metrics").Warn(v...)
}
