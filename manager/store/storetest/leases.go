package storetest

import (
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// A heartbeat renews exactly the leases of the tasks it names: a task the
// delegate no longer names is taken back one lease TTL after it was last
// renewed, though the delegate lives.
func testRenewNamedOnly(h *harness) {
	const ttl = 30 * time.Second
	d := h.register("d1")
	other := h.register("d2")
	last := task("last")
	last.MaxAttempts = 1
	h.create(task("kept"), task("forgotten"), last, task("elsewhere"))
	kept := h.acquireOne(d, "kept")
	h.report(kept, errand.StateRunning)
	forgotten := h.acquireOne(d, "forgotten")
	h.report(forgotten, errand.StateRunning)
	h.acquireOne(d, "last")
	h.acquireOne(other, "elsewhere")

	h.tick(20 * time.Second)
	h.touchRunning("d1", "kept", "forgotten", "last", "elsewhere", "unknown")
	h.touchRunning("d2", "elsewhere")
	if res := h.sweep(ttl, 0); len(res.Requeued)+len(res.Failed)+len(res.LostDelegates) != 0 {
		h.t.Fatalf("sweep within the TTL = %+v", res)
	}
	// From now on d1 names only "kept": the others were last renewed at
	// the touch above.
	h.tick(20 * time.Second)
	h.touchRunning("d1", "kept")
	h.touchRunning("d2", "elsewhere")
	if res := h.sweep(ttl, 0); len(res.Requeued)+len(res.Failed) != 0 {
		h.t.Fatalf("sweep 20s after the last renewal = %+v", res)
	}
	h.tick(11 * time.Second)
	h.touchRunning("d1", "kept")
	h.touchRunning("d2", "elsewhere")
	res := h.sweep(ttl, 0)
	if len(res.LostDelegates) != 0 || !sameStrings(res.Requeued, []string{"forgotten"}) ||
		!sameStrings(res.Failed, []string{"last"}) {
		h.t.Fatalf("sweep 31s after the last renewal = %+v, want forgotten requeued and last failed", res)
	}
	h.wantState("kept", errand.StateRunning)
	// Naming another delegate's task renews nothing of it.
	h.wantState("elsewhere", errand.StateLeased)
	if tk := h.wantState("last", errand.StateFailed); tk.Error == nil || tk.Error.Code != errand.CodeDelegateLost {
		h.t.Fatalf("unnamed task on its last attempt: error %+v, want delegate_lost", tk.Error)
	}
	if tk := h.wantState("forgotten", errand.StateQueued); tk.Attempt != 1 {
		h.t.Fatalf("requeued task attempt %d", tk.Attempt)
	}
	_, err := h.reportErr(forgotten, errand.StateSucceeded, "", nil)
	wantCode(h.t, "report under a lease taken back", err, errand.ErrLeaseLost)
	if got, _ := h.s.DelegateGet(h.ctx, "d1"); got.State != errand.DelegateActive {
		h.t.Fatalf("d1 is %s, want active", got.State)
	}
}

// A task leased while a heartbeat that could not name it was on its way
// (the acquire answer in flight) keeps its lease for one TTL from the
// lease, and for as long as later heartbeats name it.
func testLeaseInFlight(h *harness) {
	const ttl = 30 * time.Second
	d := h.register("d1")
	h.create(task("busy"), task("inflight"))
	h.report(h.acquireOne(d, "busy"), errand.StateRunning)
	h.acquireOne(d, "inflight")
	// The heartbeat was written before the answer arrived.
	h.touchRunning("d1", "busy")
	if res := h.sweep(ttl, 0); len(res.Requeued)+len(res.Failed) != 0 {
		h.t.Fatalf("sweep right after the lease = %+v", res)
	}
	h.tick(ttl)
	h.touchRunning("d1", "busy")
	if res := h.sweep(ttl, 0); len(res.Requeued)+len(res.Failed) != 0 {
		h.t.Fatalf("sweep at the TTL = %+v", res)
	}
	// The answer arrived: the delegate names it from now on.
	h.touchRunning("d1", "busy", "inflight")
	for i := 0; i < 4; i++ {
		h.tick(20 * time.Second)
		h.touchRunning("d1", "busy", "inflight")
		if res := h.sweep(ttl, 0); len(res.Requeued)+len(res.Failed) != 0 {
			h.t.Fatalf("sweep while named = %+v", res)
		}
	}
	h.wantState("inflight", errand.StateLeased)
	h.wantState("busy", errand.StateRunning)
}

// A delegate's complete statement (at a restart) ends at once every lease
// of its that it does not name: retried while attempts remain, else
// delegate_lost, cancelled when a cancel was asked.
func testRelease(h *harness) {
	d := h.register("d1")
	other := h.register("d2")
	last := task("last")
	last.MaxAttempts = 1
	h.create(task("dead"), last, task("asked"), task("held"), task("elsewhere"), task("queued"))
	dead := h.acquireOne(d, "dead")
	h.report(dead, errand.StateRunning)
	h.acquireOne(d, "last")
	h.report(h.acquireOne(d, "asked"), errand.StateRunning)
	h.cancel("asked")
	h.acquireOne(d, "held")
	h.acquireOne(other, "elsewhere")

	res, err := h.s.TaskRelease(h.ctx, store.TaskReleaseParams{DelegateID: "d1", Held: []string{"held", "unknown"}, Now: h.now})
	if err != nil {
		h.t.Fatalf("TaskRelease: %v", err)
	}
	if !sameStrings(res.Requeued, []string{"dead"}) || !sameStrings(res.Failed, []string{"last"}) ||
		!sameStrings(res.Cancelled, []string{"asked"}) || len(res.LostDelegates) != 0 {
		h.t.Fatalf("TaskRelease = %+v", res)
	}
	if tk := h.wantState("dead", errand.StateQueued); !tk.QueuedAt.Equal(h.now) {
		h.t.Fatalf("requeued at %v", tk.QueuedAt)
	}
	if tk := h.wantState("last", errand.StateFailed); tk.Error == nil || tk.Error.Code != errand.CodeDelegateLost {
		h.t.Fatalf("last attempt error %+v, want delegate_lost", tk.Error)
	}
	h.wantState("asked", errand.StateCancelled)
	h.wantState("held", errand.StateLeased)
	h.wantState("elsewhere", errand.StateLeased)
	_, err = h.reportErr(dead, errand.StateSucceeded, "", nil)
	wantCode(h.t, "report under a released lease", err, errand.ErrLeaseLost)

	// Again, and for a delegate that holds nothing or is unknown: nothing.
	for _, id := range []string{"d1", "nobody"} {
		res, err = h.s.TaskRelease(h.ctx, store.TaskReleaseParams{DelegateID: id, Held: []string{"held"}, Now: h.now})
		if err != nil || len(res.Requeued)+len(res.Failed)+len(res.Cancelled) != 0 {
			h.t.Fatalf("TaskRelease of %s again = %+v, %v", id, res, err)
		}
	}
	h.wantState("held", errand.StateLeased)
	// The requeued task is leased again, to the restarted delegate too.
	if again := h.acquire(d, 10); len(again) != 2 || again[0].ID != "dead" || again[0].Attempt != 2 {
		h.t.Fatalf("acquire after the release = %v", ids(again))
	}
}

// A queued task that must follow a delegate that is gone fails
// affinity_lost, unless an active delegate of that delegate's group may
// run it (sibling takeover); a lost one is waited for, for a grace.
func testAffinityLost(h *harness) {
	const ttl, grace = 30 * time.Second, time.Minute
	a := h.register("a", func(d *errand.Delegate) { d.Group = "g1" })
	h.register("picky", func(d *errand.Delegate) { d.Group = "g1"; d.TaskTypes = []string{"other.type"} })
	h.register("c", func(d *errand.Delegate) { d.Group = "g2" })
	follow := func(id, init string) *errand.Task {
		tk := task(id, dep(init, errand.Always))
		tk.Affinity = init
		return tk
	}
	h.create(task("init1"), follow("cleanup1", "init1"), follow("after1", "cleanup1"))
	h.run(a, "init1", errand.StateSucceeded)
	h.wantState("cleanup1", errand.StateQueued)
	if err := h.s.DelegateDelete(h.ctx, store.DelegateDeleteParams{ID: "a", Now: h.now}); err != nil {
		h.t.Fatal(err)
	}
	h.touch("picky", "c")
	res := h.sweep(ttl, 0)
	if !sameStrings(res.AffinityLost, []string{"cleanup1"}) {
		h.t.Fatalf("sweep = %+v, want cleanup1 affinity_lost", res)
	}
	tk := h.wantState("cleanup1", errand.StateFailed)
	if tk.Error == nil || tk.Error.Code != errand.CodeAffinityLost || tk.Error.Reason == "" || tk.FinishedAt == nil {
		h.t.Fatalf("cleanup1 error %+v", tk.Error)
	}
	// Its own follower follows it, a task never leased: it is free.
	h.wantState("after1", errand.StateQueued)
	h.cancel("after1")
	if res := h.sweep(ttl, 0); len(res.AffinityLost) != 0 {
		h.t.Fatalf("second sweep = %+v", res)
	}

	// A sibling of the same group that may run it stands in.
	b := h.register("b", func(d *errand.Delegate) { d.Group = "g1" })
	h.create(task("init2"), follow("cleanup2", "init2"))
	h.run(b, "init2", errand.StateSucceeded)
	a2 := h.register("a2", func(d *errand.Delegate) { d.Group = "g1" })
	h.create(task("init3"), follow("cleanup3", "init3"))
	h.run(a2, "init3", errand.StateSucceeded)
	if err := h.s.DelegateDelete(h.ctx, store.DelegateDeleteParams{ID: "a2", Now: h.now}); err != nil {
		h.t.Fatal(err)
	}
	if res := h.sweepAffinity(ttl, grace); len(res.AffinityLost) != 0 {
		h.t.Fatalf("sweep with a sibling = %+v", res)
	}
	h.wantState("cleanup3", errand.StateQueued)

	// A lost holder is waited for, for the grace, then given up; a lost
	// sibling stands in for no one.
	h.tick(ttl + time.Second)
	h.touch("picky", "c")
	res = h.sweepAffinity(ttl, grace)
	if !sameStrings(res.LostDelegates, []string{"b"}) || !sameStrings(res.AffinityLost, []string{"cleanup3"}) {
		h.t.Fatalf("sweep when b is lost = %+v, want b lost and cleanup3 affinity_lost", res)
	}
	h.wantState("cleanup2", errand.StateQueued)
	h.tick(grace)
	h.touch("picky", "c")
	res = h.sweepAffinity(ttl, grace)
	if !sameStrings(res.AffinityLost, []string{"cleanup2"}) {
		h.t.Fatalf("sweep past the grace = %+v, want cleanup2 affinity_lost", res)
	}
}

func (h *harness) sweepAffinity(ttl, grace time.Duration) store.TaskSweepResult {
	h.t.Helper()
	res, err := h.s.TaskSweep(h.ctx, store.TaskSweepParams{Now: h.now, LeaseTTL: ttl, AffinityGrace: grace})
	if err != nil {
		h.t.Fatalf("TaskSweep: %v", err)
	}
	return res
}
