package manager

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/errandci/errand"
)

// metrics are the manager's Prometheus metrics, in a registry of the
// server's own so that several servers in one process do not collide.
type metrics struct {
	registry      *prometheus.Registry
	tasksCreated  *prometheus.CounterVec
	tasksFinished *prometheus.CounterVec
	acquireWait   prometheus.Histogram
	acquired      prometheus.Counter
	httpDuration  *prometheus.HistogramVec
	handler       http.Handler
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		tasksCreated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_tasks_created_total",
			Help: "Tasks created, by the state they were created in.",
		}, []string{"state"}),
		tasksFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_tasks_finished_total",
			Help: "Tasks that ended, by final state.",
		}, []string{"state"}),
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
	}
	m.registry.MustRegister(m.tasksCreated, m.tasksFinished, m.acquireWait, m.acquired, m.httpDuration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
	return m
}

// finished counts tasks that reached a terminal state.
func (m *metrics) finished(state errand.State, n int) {
	if n > 0 && state.Terminal() {
		m.tasksFinished.WithLabelValues(string(state)).Add(float64(n))
	}
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request, _ principal) error {
	s.metrics.handler.ServeHTTP(w, r)
	return nil
}
