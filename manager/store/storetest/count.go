package storetest

import (
	"reflect"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

func (h *harness) count(p store.CountParams) *store.Counts {
	h.t.Helper()
	c, err := h.s.Count(h.ctx, p)
	if err != nil {
		h.t.Fatalf("Count: %v", err)
	}
	return c
}

// testCount: tasks that have not ended by state, delegates by state and
// runs, with what the params ignore left out.
func testCount(h *harness) {
	empty := h.count(store.CountParams{})
	if len(empty.Tasks) != 0 || len(empty.Delegates) != 0 || empty.Runs != 0 || empty.QueuedRuns != 0 || empty.RunningRuns != 0 {
		h.t.Fatalf("Count of an empty store = %+v", empty)
	}
	d := h.register("d1")
	h.register("d2")
	h.register("internal")
	lost := errand.DelegateLost
	if _, err := h.s.DelegateUpdate(h.ctx, store.DelegateUpdateParams{ID: "d2", State: &lost}); err != nil {
		h.t.Fatalf("DelegateUpdate: %v", err)
	}
	gate := task("gate")
	gate.Type = "test.gate"
	h.create(task("done"), task("running"), task("queued"), task("pending", dep("queued", errand.OnSuccess)), gate)
	h.run(d, "done", errand.StateSucceeded)
	h.report(h.acquireOne(d, "running"), errand.StateRunning)
	a1 := task("a1")
	a1.Type = "test.a"
	h.createRun(&store.Run{ID: "run-a", Config: []byte("x")}, a1, task("a2", dep("a1", errand.OnSuccess)))
	h.createRun(&store.Run{ID: "run-b", Config: []byte("x")}, task("b1"))
	h.createRun(&store.Run{ID: "run-c", Config: []byte("x"), SetupErrors: []store.RunSetupError{{Path: "stages", Message: "bad"}}})
	h.tick(1)
	h.cancel("b1")

	c := h.count(store.CountParams{IgnoreTaskTypes: []string{"test.gate"}, IgnoreDelegates: []string{"internal"}})
	wantTasks := map[errand.State]int64{errand.StateRunning: 1, errand.StateQueued: 2, errand.StatePending: 2}
	if !reflect.DeepEqual(c.Tasks, wantTasks) {
		h.t.Errorf("Count.Tasks = %v, want %v", c.Tasks, wantTasks)
	}
	wantDelegates := map[errand.DelegateState]int64{errand.DelegateActive: 1, errand.DelegateLost: 1}
	if !reflect.DeepEqual(c.Delegates, wantDelegates) {
		h.t.Errorf("Count.Delegates = %v, want %v", c.Delegates, wantDelegates)
	}
	if c.Runs != 3 || c.SetupErrorRuns != 1 || c.QueuedRuns != 1 || c.RunningRuns != 0 {
		h.t.Errorf("Count runs = %d, setup errors %d, queued %d, running %d; want 3, 1, 1, 0",
			c.Runs, c.SetupErrorRuns, c.QueuedRuns, c.RunningRuns)
	}
	all := h.count(store.CountParams{})
	if all.Tasks[errand.StateQueued] != 3 || all.Delegates[errand.DelegateActive] != 2 {
		h.t.Errorf("Count without params = %+v, want the gate and the internal delegate counted", all)
	}
	// A run whose first task ended is running while its second waits;
	// an ignored task that ended does not make a run started.
	h.run(h.register("da", func(d *errand.Delegate) { d.TaskTypes = []string{"test.a"} }), "a1", errand.StateSucceeded)
	gated := task("e-gate")
	gated.Type = "test.gate2"
	h.createRun(&store.Run{ID: "run-e", Config: []byte("x")}, gated, task("e1", dep("e-gate", errand.OnSuccess)))
	h.run(h.register("de", func(d *errand.Delegate) { d.TaskTypes = []string{"test.gate2"} }), "e-gate", errand.StateSucceeded)
	c = h.count(store.CountParams{IgnoreTaskTypes: []string{"test.gate", "test.gate2"}})
	if c.Runs != 4 || c.QueuedRuns != 1 || c.RunningRuns != 1 {
		h.t.Errorf("Count runs = %d, queued %d, running %d; want 4, 1 (run-e), 1 (run-a)", c.Runs, c.QueuedRuns, c.RunningRuns)
	}
}
