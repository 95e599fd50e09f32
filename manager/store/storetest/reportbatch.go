package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// testReportBatch applies one delegate's reports together: each is
// decided on its own (a stale lease, a missing task, a bad state fail
// alone), the reports of one task in their order, a repeated report is
// unchanged, and an ended task releases its dependent.
func testReportBatch(h *harness) {
	h.create(task("a"), task("b"), task("c"), task("a-next", dep("a", errand.OnSuccess)))
	d := h.register("d1")
	got := h.acquire(d, 3)
	if len(got) != 3 {
		h.t.Fatalf("acquired %v, want a, b, c", ids(got))
	}
	leased := map[string]*errand.Task{}
	for _, tk := range got {
		leased[tk.ID] = tk
	}
	p := func(id string, st errand.State, lease string) store.TaskReportParams {
		return store.TaskReportParams{TaskID: id, DelegateID: d.ID, LeaseToken: lease, State: st,
			Result: json.RawMessage(`{"id":"` + id + `"}`), Now: h.now}
	}
	lease := func(id string) string { return leased[id].Lease.Token }
	batch := []store.TaskReportParams{
		p("a", errand.StateRunning, lease("a")),
		p("b", errand.StateSucceeded, "stale-"+lease("b")),
		p("a", errand.StateSucceeded, lease("a")),
		p("missing", errand.StateRunning, "x"),
		p("c", errand.StateRunning, lease("c")),
		p("c", errand.StateRunning, lease("c")),
		p("c", errand.StateQueued, lease("c")),
	}
	res := h.s.TaskReportBatch(h.ctx, batch)
	if len(res) != len(batch) {
		h.t.Fatalf("%d results for %d reports", len(res), len(batch))
	}
	want := []struct {
		state     errand.State
		unchanged bool
		err       *errand.Error
	}{
		{state: errand.StateRunning},
		{err: errand.ErrLeaseLost},
		{state: errand.StateSucceeded},
		{err: errand.ErrNotFound},
		{state: errand.StateRunning},
		{state: errand.StateRunning, unchanged: true},
		{err: errand.ErrInvalid},
	}
	for i, w := range want {
		r := res[i]
		what := fmt.Sprintf("report %d (%s %s)", i, batch[i].TaskID, batch[i].State)
		if w.err != nil {
			wantCode(h.t, what, r.Err, w.err)
			if r.Task != nil {
				h.t.Errorf("%s: refused, yet returned task %+v", what, r.Task)
			}
			continue
		}
		if r.Err != nil || r.Task == nil || r.Task.State != w.state || r.Unchanged != w.unchanged {
			h.t.Fatalf("%s = %+v, want state %s unchanged %v", what, r, w.state, w.unchanged)
		}
	}
	done := h.wantState("a", errand.StateSucceeded)
	if done.StartedAt == nil || string(done.Result) != `{"id":"a"}` {
		h.t.Fatalf("a = started %v result %s: the running report before its end was lost", done.StartedAt, done.Result)
	}
	h.wantState("a-next", errand.StateQueued)
	h.wantState("b", errand.StateLeased)

	// The whole batch again, as a delegate retries a call whose answer it
	// never got: what was applied is unchanged, a running after the end
	// is refused, nothing moves.
	again := h.s.TaskReportBatch(h.ctx, batch[2:3])
	if again[0].Err != nil || !again[0].Unchanged || again[0].Task.State != errand.StateSucceeded {
		h.t.Fatalf("repeated end of a = %+v, want unchanged", again[0])
	}
	if r := h.s.TaskReportBatch(h.ctx, nil); len(r) != 0 {
		h.t.Fatalf("empty batch = %+v", r)
	}
}

// testReportBatchesTogether sends batches from several delegates at
// once: every report is applied once, whatever shares its transaction.
func testReportBatchesTogether(h *harness) {
	const delegates, each = 4, 8
	var all []*errand.Task
	for i := range delegates * each {
		all = append(all, task(fmt.Sprintf("t%02d", i)))
	}
	h.create(all...)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for i := range delegates {
		d := h.register(fmt.Sprintf("d%d", i))
		got := h.acquire(d, each)
		if len(got) != each {
			h.t.Fatalf("%s acquired %d", d.ID, len(got))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var batch []store.TaskReportParams
			for _, st := range []errand.State{errand.StateRunning, errand.StateSucceeded} {
				for _, tk := range got {
					batch = append(batch, store.TaskReportParams{TaskID: tk.ID, DelegateID: d.ID,
						LeaseToken: tk.Lease.Token, State: st, Now: h.now})
				}
			}
			for j, r := range h.s.TaskReportBatch(h.ctx, batch) {
				if r.Err != nil || r.Unchanged || r.Task.State != batch[j].State {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s %s = %+v", batch[j].TaskID, batch[j].State, r))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		h.t.Fatal(err)
	}
	for _, tk := range all {
		if got := h.wantState(tk.ID, errand.StateSucceeded); got.StartedAt == nil {
			h.t.Fatalf("%s has no start", tk.ID)
		}
	}
}
