package storetest

import (
	"time"

	"github.com/errandci/errand"
)

// testSkipDiamond ends a task whose dependents also depend on each other:
// resolving the first dependent skips it, which resolves the second one
// through the cascade before the outer release reaches it. The store must
// resolve each dependent once and not stumble over the one already decided.
func testSkipDiamond(h *harness) {
	d := h.register("d1")
	h.create(task("root"),
		task("left", dep("root", errand.OnSuccess)),
		task("right", dep("root", errand.OnSuccess), dep("left", errand.OnSuccess)),
		task("cleanup", dep("root", errand.Always), dep("left", errand.Always), dep("right", errand.Always)))
	h.run(d, "root", errand.StateFailed)
	h.wantState("left", errand.StateSkipped)
	h.wantState("right", errand.StateSkipped)
	h.wantState("cleanup", errand.StateQueued)
}

// testSweepCascade expires a lease whose task's dependents form a diamond,
// the shape a pipeline stage has (each step depends on initialize and on
// every earlier step): the sweep must go through and mark the delegate lost.
func testSweepCascade(h *harness) {
	d := h.register("d1")
	init := task("init")
	init.MaxAttempts = 1
	h.create(init,
		task("s1", dep("init", errand.OnSuccess)),
		task("s2", dep("init", errand.OnSuccess), dep("s1", errand.OnSuccess)),
		task("clean", dep("init", errand.Always), dep("s1", errand.Always), dep("s2", errand.Always)))
	h.acquireOne(d, "init")
	h.tick(2 * time.Minute)
	res := h.sweep(time.Minute, 0)
	if len(res.LostDelegates) != 1 || len(res.Failed) != 1 {
		h.t.Fatalf("sweep = %+v, want d1 lost and init failed", res)
	}
	h.wantState("s1", errand.StateSkipped)
	h.wantState("s2", errand.StateSkipped)
	h.wantState("clean", errand.StateQueued)
}
