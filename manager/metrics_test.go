package manager

import (
	"bytes"
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

// scrape reads the metrics h serves.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+testAdmin)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		t.Fatalf("GET /metrics = %d %s", w.Code, w.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(bytes.NewReader(w.Body.Bytes()))
	if err != nil {
		t.Fatalf("parse metrics: %v\n%s", err, w.Body)
	}
	return families
}

// series returns the metrics of a family by their labels, written
// "k=v,k=v" in name order; "" for a metric without labels.
func series(families map[string]*dto.MetricFamily, name string) map[string]*dto.Metric {
	out := map[string]*dto.Metric{}
	f := families[name]
	if f == nil {
		return out
	}
	for _, m := range f.Metric {
		var kv []string
		for _, l := range m.Label {
			kv = append(kv, l.GetName()+"="+l.GetValue())
		}
		sort.Strings(kv)
		out[strings.Join(kv, ",")] = m
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m == nil:
		return math.NaN()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	return math.NaN()
}

func wantValue(t *testing.T, families map[string]*dto.MetricFamily, name, labels string, want float64) {
	t.Helper()
	if got := value(series(families, name)[labels]); got != want {
		t.Errorf("%s{%s} = %v, want %v", name, labels, got, want)
	}
}

// TestMetricsCountRunsAndDirectTasks submits a pipeline run and direct
// tasks through the API, lets a real host delegate and a delegate driven
// by hand run them, and checks what /metrics says against what the API
// says: tasks of runs are counted as well as direct ones, the gauges
// count the store, and a manager that saw none of it shows the same
// gauges.
func TestMetricsCountRunsAndDirectTasks(t *testing.T) {
	clk := &clock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	e := newEnv(t, func(c *Config) { c.Now = clk.Now })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := e.s.Start(ctx); err != nil {
		t.Fatal(err)
	}

	// A direct task run by hand: queued 3s, running 5s.
	d := e.register("by-hand", &client.RegisterRequest{TaskTypes: []string{"test.echo"}})
	direct := e.create(&client.TaskSpec{Type: "test.echo"})
	clk.Add(3 * time.Second)
	leased := e.acquire(d, "wait=0&max=1").Tasks[0]
	report := func(st errand.State) {
		t.Helper()
		e.must(http.StatusOK, "POST", "/api/v1/tasks/"+leased.ID+"/status", d.token,
			map[string]any{"lease": leased.Lease.Token, "state": st}, nil)
	}
	report(errand.StateRunning)
	clk.Add(5 * time.Second)
	report(errand.StateSucceeded)
	// Work that stays: a queued task nobody can run, a pending dependent,
	// and a run waiting for an approval.
	stuck := e.create(&client.TaskSpec{Type: "test.nobody", Selector: errand.Selector{Labels: map[string]string{"x": "y"}}})
	e.create(&client.TaskSpec{Type: "test.nobody", DependsOn: []errand.Dependency{{Task: stuck.ID}}})
	waiting := e.submit("stages:\n  - name: deploy\n    approval: {approvers: 1}\n    steps:\n      - name: ship\n        commands: [echo ship]\n")

	// Pipeline runs: one succeeds, one fails, one does not load.
	e.startHostDelegate()
	ok := e.submit("stages:\n  - name: build\n    steps:\n      - name: hello\n        commands: [echo hello]\n")
	failing := e.submit("stages:\n  - name: build\n    steps:\n      - name: a\n        commands: [echo a]\n  - name: test\n    depends: [build]\n    steps:\n      - name: b\n        commands: [exit 3]\n")
	broken := e.submit("stages:\n  - name: x\n    bogus: 1\n    steps: []\n")
	if broken.Phase != "setuperror" {
		t.Fatalf("run = %s, want setuperror", summary(broken))
	}
	if r := e.waitRun(ok.ID, "finished", finished); r.Result != "success" {
		t.Fatalf("run = %s, want success", summary(r))
	}
	if r := e.waitRun(failing.ID, "finished", finished); r.Result != "failed" {
		t.Fatalf("run = %s, want failed", summary(r))
	}

	// What the API says ended, started and waits.
	var all client.TaskList
	e.must(http.StatusOK, "GET", "/api/v1/tasks?limit=1000", testAdmin, nil, &all)
	ended := map[string]float64{}   // state → tasks
	started := map[string]int{}     // type,state → tasks that started
	unended := map[string]float64{} // state → tasks
	var approvals float64
	for _, tk := range all.Items {
		if tk.Type == TypeApproval {
			approvals++
			continue
		}
		if tk.State.Terminal() {
			ended[string(tk.State)]++
			if tk.StartedAt != nil {
				started["state="+string(tk.State)+",type="+tk.Type]++
			}
		} else {
			unended[string(tk.State)]++
		}
	}
	if ended["succeeded"] < 7 || ended["failed"] != 1 || unended["queued"] != 1 || unended["pending"] != 4 {
		t.Fatalf("tasks ended %v, not ended %v: want at least 7 succeeded, 1 failed, 1 queued and 4 pending", ended, unended)
	}

	// The recorder works through the change stream: wait until it has
	// seen every end, then check everything.
	var families map[string]*dto.MetricFamily
	deadline := time.Now().Add(10 * time.Second)
	for {
		families = scrape(t, e.s.Handler())
		var n float64
		for _, m := range series(families, "errand_tasks_finished_total") {
			n += value(m)
		}
		if n == ended["succeeded"]+ended["failed"]+ended["skipped"]+ended["cancelled"]+ended["timed_out"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("errand_tasks_finished_total sums to %v; the API shows %v ended", n, ended)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, st := range []string{"succeeded", "failed", "skipped", "cancelled", "timed_out"} {
		wantValue(t, families, "errand_tasks_finished_total", "state="+st, ended[st])
	}
	var created float64
	for _, m := range series(families, "errand_tasks_created_total") {
		created += value(m)
	}
	if want := float64(len(all.Items)) - approvals; created != want {
		t.Errorf("errand_tasks_created_total sums to %v, want %v (direct tasks and runs' tasks)", created, want)
	}
	durations := series(families, "errand_task_duration_seconds")
	var startedTotal uint64
	for labels, n := range started {
		startedTotal += uint64(n)
		if m := durations[labels]; m == nil || m.Histogram.GetSampleCount() != uint64(n) {
			t.Errorf("errand_task_duration_seconds{%s} count = %v, want %d", labels, m, n)
		}
	}
	if len(durations) != len(started) {
		t.Errorf("errand_task_duration_seconds has %d series, want %d: %v", len(durations), len(started), started)
	}
	// Only the task run by hand took time on the test's clock.
	if m := durations["state=succeeded,type=test.echo"]; m == nil || m.Histogram.GetSampleSum() != 5 {
		t.Errorf("errand_task_duration_seconds{test.echo,succeeded} = %v, want one of 5s", m)
	}
	if m := series(families, "errand_queue_wait_seconds")[""]; m == nil ||
		m.Histogram.GetSampleCount() != startedTotal || m.Histogram.GetSampleSum() != 3 {
		t.Errorf("errand_queue_wait_seconds = %v, want %d samples summing to 3s", m, startedTotal)
	}
	wantValue(t, families, "errand_runs_finished_total", "result=success", 1)
	wantValue(t, families, "errand_runs_finished_total", "result=failed", 2)
	wantValue(t, families, "errand_runs_finished_total", "result=cancelled", 0)

	wantGauges := func(families map[string]*dto.MetricFamily) {
		t.Helper()
		for _, st := range []string{"pending", "queued", "leased", "running"} {
			wantValue(t, families, "errand_tasks", "state="+st, unended[st])
		}
		wantValue(t, families, "errand_runs", "phase=queued", 1)
		wantValue(t, families, "errand_runs", "phase=running", 0)
		wantValue(t, families, "errand_runs", "phase=finished", 2)
		wantValue(t, families, "errand_runs", "phase=setuperror", 1)
		wantValue(t, families, "errand_delegates", "state=active", 2)
		wantValue(t, families, "errand_delegates", "state=draining", 0)
		wantValue(t, families, "errand_delegates", "state=lost", 0)
	}
	wantGauges(families)
	if r := e.getRun(waiting.ID); r.Phase != "queued" {
		t.Errorf("waiting run = %s, want queued", summary(r))
	}
	if got := e.getTask(direct.ID); got.State != errand.StateSucceeded {
		t.Errorf("direct task = %s, want succeeded", got.State)
	}

	// A manager that starts on the same store, having seen none of this,
	// shows the same gauges.
	cfg := e.s.cfg
	cfg.Log = quietLogger()
	fresh, err := New(cfg, e.s.store, e.objects)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := fresh.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
	}()
	wantGauges(scrape(t, fresh.Handler()))
}

// TestInternalErrorLoggedWithOperationID: a store that fails makes an API
// call a 500 whose operation id is in the manager's log with the error,
// and leaves the gauges out of a scrape, not the whole scrape.
func TestInternalErrorLoggedWithOperationID(t *testing.T) {
	logger, hook := test.NewNullLogger()
	e := newEnv(t, func(c *Config) { c.Log = logger })
	if err := e.s.store.Close(); err != nil {
		t.Fatal(err)
	}
	eb := e.fails(http.StatusInternalServerError, errand.CodeInternal, "GET", "/api/v1/tasks", testAdmin, nil)
	if !strings.Contains(eb.Reason, eb.OperationID) {
		t.Errorf("reason %q does not name operation %s", eb.Reason, eb.OperationID)
	}
	var logged bool
	for _, entry := range hook.AllEntries() {
		if entry.Level == logrus.ErrorLevel && entry.Data["operation_id"] == eb.OperationID && entry.Data["error"] != nil {
			logged = true
		}
	}
	if !logged {
		t.Errorf("no error logged with operation_id %s: %v", eb.OperationID, hook.AllEntries())
	}
	families := scrape(t, e.s.Handler())
	if _, ok := families["errand_tasks"]; ok {
		t.Errorf("errand_tasks shown although the store is closed")
	}
	if _, ok := families["errand_http_request_duration_seconds"]; !ok {
		t.Errorf("the scrape lost the metrics that need no store")
	}
}
