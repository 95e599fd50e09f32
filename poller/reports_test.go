package poller_test

import (
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/internal/fakemanager"
	"github.com/errandci/errand/poller"
	"github.com/errandci/errand/router"
)

// released serves tasks that end when their channel in the map closes.
func released(gates map[string]chan struct{}) *router.Router {
	r := router.New()
	r.HandleFunc("gated", func(w http.ResponseWriter, req *http.Request) {
		select {
		case <-gates[router.TaskFrom(req.Context()).ID]:
		case <-req.Context().Done():
		}
		httphelper.WriteJSON(w, map[string]bool{"ok": true}, http.StatusOK)
	})
	return r
}

func reportCalls(f *fakemanager.Manager, via string) []fakemanager.Batch {
	f.Lock()
	defer f.Unlock()
	var out []fakemanager.Batch
	for _, b := range f.Batches {
		if b.Via == via {
			out = append(out, b)
		}
	}
	return out
}

// While one call of reports is in flight the outcomes that end
// meanwhile wait, and the next call takes them all; a lease lost in that
// batch refuses its report alone.
func TestReportsCoalesceWhileACallIsInFlight(t *testing.T) {
	f := fakemanager.New()
	f.LostLogs["b"] = true
	ids := []string{"a", "b", "c", "d"}
	gates := map[string]chan struct{}{}
	var tasks []*errand.Task
	for _, id := range ids {
		gates[id] = make(chan struct{})
		tasks = append(tasks, task(id, "gated"))
	}
	f.Push(tasks...)
	// A free slot left, and long polls: the acquire loop waits for a task
	// for that slot, so the outcomes are the report loop's.
	cfg := config(f, released(gates), len(ids)+1)
	cfg.Wait = time.Minute
	p := newPoller(t, cfg)
	start(t, p)
	eventually(t, "every running report delivered and an acquire waiting, carrying nothing", func() bool {
		f.Lock()
		defer f.Unlock()
		sent := 0
		for _, id := range ids {
			sent += len(f.Statuses[id])
		}
		last := len(f.AcquireCarried) - 1
		return sent == len(ids) && f.AcquireCarried[last] == 0 && f.AcquireMax[last] == 1
	})
	// From here the manager holds every call of reports until told.
	gate := make(chan struct{})
	f.Lock()
	f.ReportGate = gate
	f.Unlock()
	close(gates["a"])
	eventually(t, "a's outcome in flight", func() bool {
		_, in := p.Pending()
		return in == 1
	})
	for _, id := range ids[1:] {
		close(gates[id])
	}
	eventually(t, "the other outcomes queued behind it", func() bool {
		q, _ := p.Pending()
		return q == len(ids)-1
	})
	close(gate)
	eventually(t, "all delivered", func() bool { return len(p.Running()) == 0 })
	calls := reportCalls(f, "reports")
	last := calls[len(calls)-1]
	if len(last.Reports) != len(ids)-1 || len(calls) < 2 || len(calls[len(calls)-2].Reports) != 1 {
		var sizes []int
		for _, c := range calls {
			sizes = append(sizes, len(c.Reports))
		}
		t.Fatalf("report calls carried %v reports, want a's outcome then the %d others together", sizes, len(ids)-1)
	}
	for i, r := range last.Reports {
		res := last.Results[i]
		switch {
		case r.State != errand.StateSucceeded:
			t.Errorf("the last batch carried %+v", r)
		case r.TaskID == "b":
			if !errors.Is(res.Err(), errand.ErrLeaseLost) {
				t.Errorf("b's outcome answered %+v, want lease_lost", res)
			}
		case res.Err() != nil:
			t.Errorf("report %+v refused: %v", r, res.Err())
		}
	}
	for _, id := range []string{"a", "c", "d"} {
		if got := f.States(id); !slices.Equal(got, []errand.State{errand.StateRunning, errand.StateSucceeded}) {
			t.Errorf("reports of %s = %v", id, got)
		}
	}
}

// fullWithOne starts a poller of capacity 1 running task a, which ends
// when the returned channel closes, and waits until a's running report
// was delivered and the poller waits for its slot to free (long polls:
// that poll is still waiting when a ends).
func fullWithOne(t *testing.T, f *fakemanager.Manager) (*poller.Poller, chan struct{}) {
	t.Helper()
	gates := map[string]chan struct{}{"a": make(chan struct{})}
	cfg := config(f, released(gates), 1)
	cfg.Wait = time.Minute
	p := newPoller(t, cfg)
	start(t, p)
	f.Push(task("a", "gated"))
	eventually(t, "a running and the delegate full", func() bool {
		f.Lock()
		defer f.Unlock()
		return len(f.Statuses["a"]) == 1 && f.AcquireMax[len(f.AcquireMax)-1] == 0
	})
	return p, gates["a"]
}

// The outcome of a task whose end frees the slot the acquire loop waits
// for rides on the acquire that asks for the next task.
func TestOutcomeRidesOnTheNextAcquire(t *testing.T) {
	f := fakemanager.New()
	p, a := fullWithOne(t, f)
	// A call of its own would never be answered.
	f.Lock()
	f.ReportGate = make(chan struct{})
	f.Unlock()
	close(a)
	eventually(t, "a's outcome delivered", func() bool { return f.Last("a").State == errand.StateSucceeded })
	carried := reportCalls(f, "acquire")
	if len(carried) != 1 || len(carried[0].Reports) != 1 || carried[0].Reports[0].TaskID != "a" || carried[0].Reports[0].State != errand.StateSucceeded {
		t.Fatalf("acquires carried %+v, want a's outcome", carried)
	}
	for _, b := range reportCalls(f, "reports") {
		for _, r := range b.Reports {
			if r.State != errand.StateRunning {
				t.Errorf("outcome %+v sent on a call of its own", r)
			}
		}
	}
	eventually(t, "nothing held", func() bool { return len(p.Running()) == 0 })
}

// A report the manager fails to answer in a carried acquire is sent
// again by the report loop.
func TestCarriedReportsRetriedWhenTheAcquireFails(t *testing.T) {
	f := fakemanager.New()
	f.FailStatus = 1
	_, a := fullWithOne(t, f)
	close(a)
	eventually(t, "a's outcome delivered", func() bool { return f.Last("a").State == errand.StateSucceeded })
	if got := f.States("a"); !slices.Equal(got, []errand.State{errand.StateRunning, errand.StateSucceeded}) {
		t.Fatalf("reports of a = %v", got)
	}
	f.Lock()
	defer f.Unlock()
	if f.FailStatus != 0 || len(f.Batches) < 3 {
		t.Fatalf("calls with reports: %+v; want the failed one and its retry", f.Batches)
	}
}

var _ poller.Client = (*fakemanager.Manager)(nil)
