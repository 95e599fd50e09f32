package storetest

import (
	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// gate returns an approval gate needing n distinct approvers.
func gate(id string, n int, deps ...errand.Dependency) *errand.Task {
	t := task(id, deps...)
	t.Type = "errand.approval"
	t.Approvals = n
	return t
}

func (h *harness) approveGate(run, stage, gateID, who string) (int, error) {
	return h.s.RunApprove(h.ctx, store.RunApproveParams{RunID: run, Stage: stage, Approver: who, TaskID: gateID, Now: h.now})
}

func (h *harness) mustApproveGate(run, stage, gateID, who string, want int) {
	h.t.Helper()
	n, err := h.approveGate(run, stage, gateID, who)
	if err != nil {
		h.t.Fatalf("RunApprove %s by %s: %v", stage, who, err)
	}
	if n != want {
		h.t.Fatalf("RunApprove %s by %s = %d approvers, want %d", stage, who, n, want)
	}
}

// testGateWaits: a gate whose dependencies are met waits for its
// approvers, is never acquired, counts only distinct approvers, and
// succeeds with the last one, releasing the stage behind it in the same
// call.
func testGateWaits(h *harness) {
	rec := &recorder{}
	defer h.s.Subscribe(rec.add)()
	out := h.createRun(&store.Run{ID: "r1"},
		gate("g", 2),
		task("init", dep("g", errand.OnSuccess)),
	)
	if out[0].State != errand.StateWaiting || out[0].Approvals != 2 || out[0].Approved != 0 {
		h.t.Fatalf("created gate = %s %d/%d, want waiting 0/2", out[0].State, out[0].Approved, out[0].Approvals)
	}
	d := h.register("d1", func(d *errand.Delegate) { d.TaskTypes = nil })
	h.acquireNone(d)
	h.mustApproveGate("r1", "deploy", "g", "alice", 1)
	g := h.wantState("g", errand.StateWaiting)
	if g.Approved != 1 {
		h.t.Fatalf("gate approved = %d, want 1", g.Approved)
	}
	h.mustApproveGate("r1", "deploy", "g", "alice", 1)
	if g := h.get("g"); g.Approved != 1 {
		h.t.Fatalf("the same approver twice: gate approved = %d, want 1", g.Approved)
	}
	h.acquireNone(d)
	h.tick(1)
	h.mustApproveGate("r1", "deploy", "g", "bob", 2)
	g = h.wantState("g", errand.StateSucceeded)
	if g.Approved != 2 || g.FinishedAt == nil || !g.FinishedAt.Equal(h.now) || g.Error != nil {
		h.t.Fatalf("approved gate = %+v, want succeeded 2/2 at %v without error", g, h.now)
	}
	h.wantState("init", errand.StateQueued)
	rec.waitFor(h.t, store.Change{Kind: store.ChangeTaskEnded, TaskID: "g"})
	rec.waitFor(h.t, store.Change{Kind: store.ChangeTaskQueued, TaskID: "init", TaskType: "test.noop"})
	h.acquireOne(d, "init")
	// The stage has ended waiting: more approvers are refused.
	_, err := h.approveGate("r1", "deploy", "g", "carol")
	wantCode(h.t, "approve a succeeded gate", err, errand.ErrIllegalTransition)
	if n := len(h.getRun("r1").Approvals["deploy"]); n != 2 {
		h.t.Fatalf("refused approval recorded: %d approvers, want 2", n)
	}
}

// testGatePendingCounts: approvals given while the stage's dependencies
// run are counted, and a gate that has them all succeeds as soon as its
// dependencies are met.
func testGatePendingCounts(h *harness) {
	h.createRun(&store.Run{ID: "r1"},
		task("build"),
		gate("g", 1, dep("build", errand.OnSuccess)),
		task("init", dep("g", errand.OnSuccess)),
	)
	h.mustApproveGate("r1", "deploy", "g", "alice", 1)
	if g := h.wantState("g", errand.StatePending); g.Approved != 1 {
		h.t.Fatalf("pending gate approved = %d, want 1", g.Approved)
	}
	d := h.register("d1")
	h.run(d, "build", errand.StateSucceeded)
	h.wantState("g", errand.StateSucceeded)
	h.wantState("init", errand.StateQueued)
}

// testGateCancelAndSkip: a waiting gate is cancelled like a queued task
// and a gate whose dependencies fail is skipped with its stage.
func testGateCancelAndSkip(h *harness) {
	h.createRun(&store.Run{ID: "r1"},
		gate("g", 1),
		task("init", dep("g", errand.OnSuccess)),
		task("build"),
		gate("g2", 1, dep("build", errand.OnSuccess)),
		task("init2", dep("g2", errand.OnSuccess)),
	)
	if tk := h.cancel("g"); tk.State != errand.StateCancelled {
		h.t.Fatalf("cancel waiting gate = %s, want cancelled", tk.State)
	}
	h.wantState("init", errand.StateSkipped)
	_, err := h.approveGate("r1", "deploy", "g", "alice")
	wantCode(h.t, "approve a cancelled gate", err, errand.ErrIllegalTransition)

	d := h.register("d1")
	h.run(d, "build", errand.StateFailed)
	h.wantState("g2", errand.StateSkipped)
	h.wantState("init2", errand.StateSkipped)

	// A task that is no gate, or a gate of another run, is refused.
	_, err = h.approveGate("r1", "other", "build", "alice")
	wantCode(h.t, "approve a task that is no gate", err, errand.ErrInvalid)
	h.createRun(&store.Run{ID: "r2"}, gate("g3", 1))
	_, err = h.approveGate("r1", "other", "g3", "alice")
	wantCode(h.t, "approve the gate of another run", err, errand.ErrInvalid)
	_, err = h.approveGate("r1", "other", "nope", "alice")
	wantCode(h.t, "approve an unknown gate", err, errand.ErrNotFound)
	if tk := h.get("g3"); tk.Approved != 0 {
		h.t.Fatalf("refused approvals counted: %d", tk.Approved)
	}
}
