package storetest

import (
	"fmt"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

func testDependencyRelease(h *harness) {
	d := h.register("d1")
	init := task("init")
	init.Type = errand.TypeDockerInitialize
	h.create(init, task("side"), task("exec", dep("init", errand.OnSuccess), dep("side", errand.Always)))
	leased := h.acquireOne(d, "init")
	h.report(leased, errand.StateRunning)
	h.wantState("exec", errand.StatePending) // exec waits for both
	if _, err := h.reportErr(leased, errand.StateSucceeded, `{"network":"net-1"}`, nil); err != nil {
		h.t.Fatal(err)
	}
	h.wantState("exec", errand.StatePending)
	h.run(d, "side", errand.StateFailed)
	tk := h.wantState("exec", errand.StateQueued)
	if tk.QueuedAt == nil || !tk.QueuedAt.Equal(h.now) {
		h.t.Fatalf("released task queued_at %v", tk.QueuedAt)
	}
	got := h.acquireOne(d, "exec")
	if len(got.Dependencies) != 2 {
		h.t.Fatalf("dependencies %+v, want 2", got.Dependencies)
	}
	first, second := got.Dependencies[0], got.Dependencies[1]
	if first.Task != "init" || first.Type != errand.TypeDockerInitialize || first.State != errand.StateSucceeded ||
		string(first.Result) != `{"network":"net-1"}` || first.Error != nil {
		h.t.Fatalf("dependency 0 = %+v", first)
	}
	if second.Task != "side" || second.State != errand.StateFailed || second.Error == nil {
		h.t.Fatalf("dependency 1 = %+v", second)
	}
	// A task without dependencies gets none.
	h.create(task("plain"))
	if plain := h.acquireOne(d, "plain"); len(plain.Dependencies) != 0 {
		h.t.Fatalf("plain task got dependencies %+v", plain.Dependencies)
	}
}

func testDependencyConditions(h *harness) {
	d := h.register("d1")
	// end brings task id to the outcome named.
	end := func(id string, outcome errand.State) {
		switch outcome {
		case errand.StateCancelled:
			h.cancel(id)
		case errand.StateSkipped:
			// Skipped because its own dependency failed.
			h.run(d, id+"-root", errand.StateFailed)
		default:
			h.run(d, id, outcome)
		}
		h.wantState(id, outcome)
	}
	cases := []struct {
		outcome errand.State
		cond    errand.Condition
		want    errand.State
	}{
		{errand.StateSucceeded, errand.OnSuccess, errand.StateQueued},
		{errand.StateSucceeded, errand.OnFailure, errand.StateSkipped},
		{errand.StateSucceeded, errand.OnSkipped, errand.StateSkipped},
		{errand.StateSucceeded, errand.Always, errand.StateQueued},
		{errand.StateFailed, errand.OnSuccess, errand.StateSkipped},
		{errand.StateFailed, errand.OnFailure, errand.StateQueued},
		{errand.StateFailed, errand.Always, errand.StateQueued},
		{errand.StateTimedOut, errand.OnFailure, errand.StateQueued},
		{errand.StateTimedOut, errand.OnSuccess, errand.StateSkipped},
		{errand.StateCancelled, errand.OnSuccess, errand.StateSkipped},
		{errand.StateCancelled, errand.OnFailure, errand.StateSkipped},
		{errand.StateCancelled, errand.Always, errand.StateQueued},
		{errand.StateSkipped, errand.OnSuccess, errand.StateSkipped},
		{errand.StateSkipped, errand.OnSkipped, errand.StateQueued},
		{errand.StateSkipped, errand.Always, errand.StateQueued},
	}
	for i, c := range cases {
		id := fmt.Sprintf("dep%d", i)
		child := fmt.Sprintf("child%d", i)
		if c.outcome == errand.StateSkipped {
			h.create(task(id+"-root"), task(id, dep(id+"-root", errand.OnSuccess)), task(child, dep(id, c.cond)))
		} else {
			h.create(task(id), task(child, dep(id, c.cond)))
		}
		h.wantState(child, errand.StatePending)
		end(id, c.outcome)
		tk := h.get(child)
		if tk.State != c.want {
			h.t.Fatalf("%s dependency, %s: child is %s, want %s", c.outcome, c.cond, tk.State, c.want)
		}
		if c.want == errand.StateSkipped && (tk.Error == nil || tk.Error.Code != errand.CodeDependencyUnmet || tk.FinishedAt == nil) {
			h.t.Fatalf("%s dependency, %s: skipped child error %+v finished %v", c.outcome, c.cond, tk.Error, tk.FinishedAt)
		}
		if c.want == errand.StateQueued {
			h.run(d, child, errand.StateSucceeded)
		}
	}
}

func testSkipPropagation(h *harness) {
	d := h.register("d1")
	h.create(
		task("root"),
		task("s1", dep("root", errand.OnSuccess)),
		task("s2", dep("s1", errand.OnSuccess)),
		task("s3", dep("s2", errand.OnSuccess)),
		task("cleanup", dep("s3", errand.Always)),
		task("report", dep("s2", errand.OnSkipped)),
	)
	h.run(d, "root", errand.StateFailed)
	for _, id := range []string{"s1", "s2", "s3"} {
		h.wantState(id, errand.StateSkipped)
	}
	h.wantState("cleanup", errand.StateQueued)
	h.wantState("report", errand.StateQueued)
	got := h.acquire(d, 10)
	if !sameStrings(ids(got), []string{"cleanup", "report"}) {
		h.t.Fatalf("acquired %v, want [cleanup report]", ids(got))
	}
	if deps := got[0].Dependencies; len(deps) != 1 || deps[0].State != errand.StateSkipped {
		h.t.Fatalf("cleanup dependencies %+v", deps)
	}
}

func testCancelQueued(h *harness) {
	h.create(
		task("q"),
		task("always", dep("q", errand.Always)),
		task("success", dep("q", errand.OnSuccess)),
		task("pending", dep("success", errand.Always)),
		task("later", dep("pending", errand.OnSuccess)),
	)
	h.tick(1)
	out := h.cancel("q")
	if out.State != errand.StateCancelled || out.Error == nil || out.Error.Code != errand.CodeCancelled || !out.FinishedAt.Equal(h.now) {
		h.t.Fatalf("cancelled queued task %+v", out)
	}
	h.wantState("always", errand.StateQueued)
	h.wantState("success", errand.StateSkipped)
	h.wantState("pending", errand.StateQueued)

	h.create(task("p2", dep("later", errand.Always)), task("after-p2", dep("p2", errand.Always)))
	if out := h.cancel("later"); out.State != errand.StateCancelled {
		h.t.Fatalf("cancelled pending task is %s", out.State)
	}
	h.wantState("p2", errand.StateQueued)
	h.wantState("after-p2", errand.StatePending)
	if tasks := h.list(store.TaskListParams{States: []errand.State{errand.StateQueued}}); !sameStrings(ids(tasks), []string{"always", "pending", "p2"}) {
		h.t.Fatalf("queued after cancels: %v", ids(tasks))
	}
}

func testCancelRunning(h *harness) {
	d1, d2 := h.register("d1"), h.register("d2")
	h.create(task("t"), task("other"), task("cleanup", dep("t", errand.Always)))
	leased := h.acquireOne(d1, "t")
	h.report(leased, errand.StateRunning)
	h.acquireOne(d2, "other")
	out := h.cancel("t")
	if out.State != errand.StateRunning || !out.CancelRequested {
		h.t.Fatalf("cancel of running task: %s cancel_requested %v", out.State, out.CancelRequested)
	}
	h.cancel("t") // asking twice is fine
	reqs, err := h.s.TaskCancelRequests(h.ctx, "d1")
	if err != nil {
		h.t.Fatal(err)
	}
	if !sameStrings(reqs, []string{"t"}) {
		h.t.Fatalf("cancel requests of d1 = %v", reqs)
	}
	if reqs, _ := h.s.TaskCancelRequests(h.ctx, "d2"); len(reqs) != 0 {
		h.t.Fatalf("cancel requests of d2 = %v", reqs)
	}
	h.wantState("cleanup", errand.StatePending)
	h.report(leased, errand.StateCancelled)
	tk := h.wantState("t", errand.StateCancelled)
	if tk.Error == nil || tk.Error.Code != errand.CodeCancelled {
		h.t.Fatalf("cancelled task error %+v", tk.Error)
	}
	h.wantState("cleanup", errand.StateQueued)
	if reqs, _ := h.s.TaskCancelRequests(h.ctx, "d1"); len(reqs) != 0 {
		h.t.Fatalf("cancel requests after cancelled = %v", reqs)
	}
}

func testCancelEnded(h *harness) {
	d := h.register("d1")
	h.create(task("done"), task("gone"))
	h.run(d, "done", errand.StateSucceeded)
	h.cancel("gone")
	for _, id := range []string{"done", "gone"} {
		before := h.get(id)
		_, err := h.s.TaskCancel(h.ctx, store.TaskCancelParams{TaskID: id, Now: h.now})
		wantCode(h.t, "cancel of ended task "+id, err, errand.ErrIllegalTransition)
		if after := h.get(id); after.State != before.State {
			h.t.Fatalf("%s changed from %s to %s", id, before.State, after.State)
		}
	}
	_, err := h.s.TaskCancel(h.ctx, store.TaskCancelParams{TaskID: "missing", Now: h.now})
	wantCode(h.t, "cancel of missing task", err, errand.ErrNotFound)
}
