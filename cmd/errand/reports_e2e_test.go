package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
	"github.com/errandci/errand/tasks"
)

// reportProxy stands between a delegate and its manager: it records the
// calls that carry reports with their answers, can hold them, and can
// drop a task from the delegate's heartbeats so that its lease is no
// longer renewed while the delegate goes on running it.
type reportProxy struct {
	mu      sync.Mutex
	dropped string
	// While hold is set, every acquire and every call of reports waits
	// for it to close; heldAcquires and heldReports count them.
	hold                      chan struct{}
	heldAcquires, heldReports int
	calls                     []carried
}

// carried is one call that carried reports, and what it was answered.
type carried struct {
	path    string
	reports []*client.Report
	results []*client.ReportResult
}

func startReportProxy(t *testing.T, managerURL string) (*reportProxy, string) {
	target, err := url.Parse(managerURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &reportProxy{}
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		var batch client.ReportBatch
		isAcquire, isReports := strings.HasSuffix(r.URL.Path, "/acquire"), strings.HasSuffix(r.URL.Path, "/reports")
		reports := (isReports || isAcquire) && len(body) > 0 && json.Unmarshal(body, &batch) == nil && len(batch.Reports) > 0
		if strings.HasSuffix(r.URL.Path, "/heartbeat") {
			body = p.rewriteHeartbeat(body)
		}
		if isAcquire || isReports {
			p.mu.Lock()
			hold := p.hold
			if hold != nil && isAcquire {
				p.heldAcquires++
			} else if hold != nil {
				p.heldReports++
			}
			p.mu.Unlock()
			if hold != nil {
				select {
				case <-hold:
				case <-r.Context().Done():
					return
				}
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		if !reports {
			rp.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r)
		c := carried{path: r.URL.Path, reports: batch.Reports}
		if strings.HasSuffix(r.URL.Path, "/reports") {
			var res client.ReportResults
			_ = json.Unmarshal(rec.Body.Bytes(), &res)
			c.results = res.Results
		} else {
			var res client.AcquireResponse
			_ = json.Unmarshal(rec.Body.Bytes(), &res)
			c.results = res.Reports
		}
		p.mu.Lock()
		p.calls = append(p.calls, c)
		p.mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(srv.Close)
	return p, srv.URL
}

// rewriteHeartbeat drops the dropped task from a heartbeat's running
// list.
func (p *reportProxy) rewriteHeartbeat(body []byte) []byte {
	p.mu.Lock()
	drop := p.dropped
	p.mu.Unlock()
	if drop == "" || len(body) == 0 {
		return body
	}
	var hb client.HeartbeatRequest
	if json.Unmarshal(body, &hb) != nil {
		return body
	}
	hb.Running = slices.DeleteFunc(hb.Running, func(id string) bool { return id == drop })
	out, err := json.Marshal(&hb)
	if err != nil {
		return body
	}
	return out
}

// waitFile is a step that ends once path exists, and prints nothing.
func waitFile(path string) []string {
	return []string{"while [ ! -e " + path + " ]; do sleep 0.02; done"}
}

// onceStage creates an exec stage of one step that is never retried.
func onceStage(t *testing.T, admin client.Client, prefix string, commands []string) {
	t.Helper()
	st := tasks.Stage{RunID: prefix, Stage: "build"}
	init := prefix + "-init"
	step := prefix + "-step0"
	specs := []*client.TaskSpec{
		{ID: init, Type: errand.TypeExecInitialize, Data: mustJSON(t, tasks.InitializeData{Stage: st})},
		{ID: step, Type: errand.TypeExecExecute, Data: mustJSON(t, tasks.ExecuteData{Stage: st, Step: "wait", Commands: commands}),
			DependsOn: []errand.Dependency{{Task: init}}, Affinity: init, MaxAttempts: 1},
		{ID: prefix + "-cleanup", Type: errand.TypeExecCleanup, Data: mustJSON(t, tasks.CleanupData{Stage: st}),
			DependsOn: []errand.Dependency{{Task: init}, {Task: step, Condition: errand.Always}}, Affinity: init},
	}
	if _, err := admin.CreateTasks(context.Background(), specs); err != nil {
		t.Fatalf("create stage %s: %v", prefix, err)
	}
}

// A real delegate reports in batches. Three steps run; the manager takes
// one's lease back while the delegate goes on running it (its heartbeats
// stop naming it). The delegate's acquire and the call carrying the
// first step's outcome are held on their way, so the other two outcomes
// queue behind them and leave together. That call's answer refuses the
// zombie's report with lease_lost and applies the other, and the manager
// keeps the zombie's expiry.
func TestE2ELeaseLostInTheMiddleOfABatch(t *testing.T) {
	m := fastManager(t)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	proxy, proxyURL := startReportProxy(t, m.URL)
	d := startDelegate(t, &testenv.Manager{URL: proxyURL, RegistrationToken: m.RegistrationToken}, "batcher", t.TempDir(), "--capacity", "5")
	waitActive(t, admin, "batcher")

	dir := t.TempDir()
	first, rest := filepath.Join(dir, "first"), filepath.Join(dir, "rest")
	onceStage(t, admin, "a", waitFile(first))
	onceStage(t, admin, "zombie", waitFile(rest))
	onceStage(t, admin, "b", waitFile(rest))
	for _, id := range []string{"a-step0", "zombie-step0", "b-step0"} {
		waitState(t, admin, id, 30*time.Second, errand.StateRunning)
	}

	proxy.mu.Lock()
	proxy.dropped = "zombie-step0"
	proxy.mu.Unlock()
	lost := waitState(t, admin, "zombie-step0", 30*time.Second, errand.StateFailed)
	if lost.Error == nil || lost.Error.Code != errand.CodeDelegateLost {
		t.Fatalf("zombie step = %s %+v, want failed delegate_lost", lost.State, lost.Error)
	}

	release := make(chan struct{})
	proxy.mu.Lock()
	proxy.hold = release
	proxy.mu.Unlock()
	// Free slots are left: the delegate long-polls for them, and its
	// outcomes go on calls of reports.
	poll(t, "the delegate's acquire held", 30*time.Second, func() bool {
		proxy.mu.Lock()
		defer proxy.mu.Unlock()
		return proxy.heldAcquires > 0
	})
	touch(t, first)
	poll(t, "a's outcome held on its way", 30*time.Second, func() bool {
		proxy.mu.Lock()
		defer proxy.mu.Unlock()
		return proxy.heldReports > 0
	})
	touch(t, rest)
	poll(t, "the other two steps ended on the delegate", 30*time.Second, func() bool {
		out := d.out.String()
		return ended(out, "zombie-step0") && ended(out, "b-step0")
	})
	proxy.mu.Lock()
	proxy.hold = nil
	proxy.mu.Unlock()
	close(release)

	for _, id := range []string{"a-step0", "b-step0"} {
		if got := waitState(t, admin, id, 30*time.Second); got.State != errand.StateSucceeded {
			t.Fatalf("%s = %s %+v", id, got.State, got.Error)
		}
	}
	var batch *carried
	poll(t, "the call that carried both outcomes", 30*time.Second, func() bool {
		proxy.mu.Lock()
		defer proxy.mu.Unlock()
		for i := range proxy.calls {
			c := &proxy.calls[i]
			if outcomeAt(c, "zombie-step0") >= 0 && outcomeAt(c, "b-step0") >= 0 {
				batch = c
				return true
			}
		}
		return false
	})
	if len(batch.results) != len(batch.reports) {
		t.Fatalf("%s: %d results for %d reports", batch.path, len(batch.results), len(batch.reports))
	}
	for i, r := range batch.reports {
		res := batch.results[i]
		if r.TaskID == "zombie-step0" {
			if res.Status != client.ReportRefused || res.Error == nil || res.Error.Code != errand.CodeLeaseLost {
				t.Errorf("the zombie's report answered %+v %v, want refused lease_lost", res, res.Error)
			}
			continue
		}
		if res.Status != client.ReportApplied {
			t.Errorf("report %s %s answered %+v %v, want applied", r.TaskID, r.State, res, res.Error)
		}
	}
	if got := waitState(t, admin, "zombie-step0", time.Second); got.State != errand.StateFailed || got.Error.Code != errand.CodeDelegateLost {
		t.Fatalf("the zombie's report changed its task: %s %+v", got.State, got.Error)
	}
	if !strings.Contains(d.out.String(), "outcome refused: the lease was lost") {
		t.Errorf("the delegate did not say the zombie's outcome was refused:\n%s", d.out.String())
	}
}

// ended reports whether a delegate's log says task id ended.
func ended(log, id string) bool {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "task ended") && strings.Contains(l, id) {
			return true
		}
	}
	return false
}

// outcomeAt returns the index of task id's outcome in a call, or -1.
func outcomeAt(c *carried, id string) int {
	for i, r := range c.reports {
		if r.TaskID == id && r.State.Terminal() {
			return i
		}
	}
	return -1
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}
