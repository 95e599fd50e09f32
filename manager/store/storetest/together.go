package storetest

import (
	"errors"
	"fmt"
	"sync"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// testReportsTogether sends many reports at once, as delegates do under
// load: each is decided on its own, whatever it shares a commit with. A
// report with a stale lease fails alone, a retried report is a no-op,
// and ending a task releases its dependent.
func testReportsTogether(h *harness) {
	const n = 24
	var tasks []*errand.Task
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("t%02d", i)
		tasks = append(tasks, task(id), task(id+"-next", dep(id, errand.OnSuccess)))
	}
	h.create(tasks...)
	d := h.register("d1")
	got := h.acquire(d, 2*n)
	if len(got) != n {
		h.t.Fatalf("acquired %d tasks, want %d", len(got), n)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []string
	)
	note := func(format string, args ...any) {
		mu.Lock()
		errs = append(errs, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	for _, tk := range got {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for _, st := range []errand.State{errand.StateRunning, errand.StateRunning, errand.StateSucceeded, errand.StateSucceeded} {
				out, err := h.reportErr(tk, st, `{"ok":true}`, nil)
				if err != nil || out.State != st {
					note("report %s %s = %v, %v", tk.ID, st, out, err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			stale := *tk
			stale.Lease = &errand.Lease{Token: "stale-" + tk.Lease.Token, DelegateID: d.ID}
			if _, err := h.reportErr(&stale, errand.StateFailed, "", nil); !errors.Is(err, errand.ErrLeaseLost) {
				note("stale report on %s: err = %v, want lease_lost", tk.ID, err)
			}
		}()
	}
	wg.Wait()
	for _, e := range errs {
		h.t.Error(e)
	}
	for _, tk := range got {
		done := h.wantState(tk.ID, errand.StateSucceeded)
		if string(done.Result) != `{"ok":true}` || done.StartedAt == nil || done.FinishedAt == nil {
			h.t.Fatalf("task %s = result %s started %v finished %v", tk.ID, done.Result, done.StartedAt, done.FinishedAt)
		}
		h.wantState(tk.ID+"-next", errand.StateQueued)
	}
	if c, err := h.s.Count(h.ctx, store.CountParams{}); err != nil || c.Tasks[errand.StateQueued] != n {
		h.t.Fatalf("Count = %+v, %v; want %d queued", c, err, n)
	}
}
