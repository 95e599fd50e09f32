package storetest

import (
	"fmt"

	"github.com/errandci/errand"
)

// testReportResultEveryEnd checks that the result a delegate reports is
// kept however the task ends, not only on success, and reaches the
// dependents that run after a failure. A running report carries no
// result of its own, and a retried end report changes nothing.
func testReportResultEveryEnd(h *harness) {
	d := h.register("d1")
	cases := []struct {
		end    errand.State
		result string
		err    *errand.Error
	}{
		{errand.StateSucceeded, `{"exit_code":0}`, nil},
		{errand.StateFailed, `{"exit_code":2}`, &errand.Error{Code: errand.CodeExitCode, Reason: "exit 2"}},
		{errand.StateFailed, `{"partial":[1,2]}`, nil},
		{errand.StateCancelled, `{"exit_code":143}`, nil},
		{errand.StateTimedOut, `{"exit_code":137}`, nil},
	}
	for i, c := range cases {
		id := fmt.Sprintf("t%d", i)
		after := fmt.Sprintf("after%d", i)
		h.create(task(id), task(after, dep(id, errand.Always)))
		leased := h.acquireOne(d, id)
		if c.end == errand.StateCancelled {
			h.cancel(id)
		}
		if _, err := h.reportErr(leased, errand.StateRunning, `{"ignored":true}`, nil); err != nil {
			h.t.Fatalf("%s: running: %v", id, err)
		}
		if tk := h.get(id); len(tk.Result) != 0 {
			h.t.Fatalf("%s: running task has result %s", id, tk.Result)
		}
		out, err := h.reportErr(leased, c.end, c.result, c.err)
		if err != nil {
			h.t.Fatalf("%s: %s: %v", id, c.end, err)
		}
		for _, tk := range []*errand.Task{out, h.get(id)} {
			if tk.State != c.end || string(tk.Result) != c.result {
				h.t.Fatalf("%s: %s with result %s, want %s with %s", id, tk.State, tk.Result, c.end, c.result)
			}
		}
		// A retried report keeps the stored result.
		retry, err := h.reportErr(leased, c.end, c.result, c.err)
		if err != nil || string(retry.Result) != c.result {
			h.t.Fatalf("%s: retried report: %v, result %s", id, err, retry.Result)
		}
		next := h.acquireOne(d, after)
		if len(next.Dependencies) != 1 {
			h.t.Fatalf("%s: dependencies %+v", after, next.Dependencies)
		}
		got := next.Dependencies[0]
		if got.Task != id || got.State != c.end || string(got.Result) != c.result {
			h.t.Fatalf("%s: dependency %+v, want %s %s with %s", after, got, id, c.end, c.result)
		}
		if (c.end == errand.StateSucceeded) != (got.Error == nil) {
			h.t.Fatalf("%s: dependency error %+v after %s", after, got.Error, c.end)
		}
		h.report(next, errand.StateRunning)
		h.report(next, errand.StateSucceeded)
	}
}
