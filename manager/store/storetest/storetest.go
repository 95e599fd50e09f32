// Package storetest is the conformance suite of store.Store: the behaviour
// every backend must show, written once and run against each (SQLite in a
// temp dir, PostgreSQL in a fresh schema). A backend is done when Run
// passes.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// Run runs the whole suite, each subtest on a fresh store from open.
// open must register any cleanup (closing the store) with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(*harness)
	}{
		{"CreateSingle", testCreateSingle},
		{"CreateBatchWithDependencies", testCreateBatch},
		{"CreateUnknownReference", testCreateUnknownReference},
		{"CreateCycle", testCreateCycle},
		{"CreateDuplicate", testCreateDuplicate},
		{"CreateInvalid", testCreateInvalid},
		{"CreateResolvesEndedDependencies", testCreateResolvesEnded},
		{"AcquireConcurrent", testAcquireConcurrent},
		{"AcquireRecordsHeartbeat", testAcquireHeartbeat},
		{"AcquireUnknownDelegate", testAcquireUnknownDelegate},
		{"ReportLeaseChecks", testReportLeaseChecks},
		{"ReportIllegalTransition", testReportIllegal},
		{"ReportIdempotent", testReportIdempotent},
		{"ReportOutcomes", testReportOutcomes},
		{"ReportsTogether", testReportsTogether},
		{"ReportBatch", testReportBatch},
		{"ReportBatchesTogether", testReportBatchesTogether},
		{"ReportResultEveryEnd", testReportResultEveryEnd},
		{"DependencyRelease", testDependencyRelease},
		{"DependencyConditions", testDependencyConditions},
		{"SkipPropagation", testSkipPropagation},
		{"SkipDiamond", testSkipDiamond},
		{"SweepCascade", testSweepCascade},
		{"PriorityThenFIFO", testPriorityFIFO},
		{"SelectorMatching", testSelectorMatching},
		{"Affinity", testAffinity},
		{"CancelPendingAndQueued", testCancelQueued},
		{"CancelRunning", testCancelRunning},
		{"CancelEnded", testCancelEnded},
		{"HeartbeatKeepsLeases", testHeartbeat},
		{"HeartbeatRenewsOnlyNamedLeases", testRenewNamedOnly},
		{"LeaseInFlightAcquireKept", testLeaseInFlight},
		{"ReleaseUnheldLeases", testRelease},
		{"AffinityLost", testAffinityLost},
		{"SweepRequeuesThenFails", testSweepAttempts},
		{"SweepCancelRequested", testSweepCancelRequested},
		{"SweepTimeout", testSweepTimeout},
		{"SweepConcurrent", testSweepConcurrent},
		{"Logs", testLogs},
		{"LogStaleLease", testLogStaleLease},
		{"LogReadAcrossAppends", testLogReadAcrossAppends},
		{"LogSeal", testLogSeal},
		{"Delegates", testDelegates},
		{"DelegateListPages", testDelegateListPages},
		{"DelegateDeleteExpiresLeases", testDelegateDelete},
		{"Subscribe", testSubscribe},
		{"TaskList", testTaskList},
		{"TaskListOrder", testTaskListOrder},
		{"RunCreateWithTasks", testRunCreate},
		{"RunCreateSetupError", testRunSetupError},
		{"RunCreateRefused", testRunCreateRefused},
		{"RunList", testRunList},
		{"RunTaskStats", testRunTaskStats},
		{"RunApprove", testRunApprove},
		{"GateWaitsForApprovers", testGateWaits},
		{"GatePendingCounts", testGatePendingCounts},
		{"GateCancelAndSkip", testGateCancelAndSkip},
		{"RunCancel", testRunCancel},
		{"RunCreatedBy", testRunCreatedBy},
		{"Count", testCount},
		{"Users", testUsers},
		{"Tokens", testTokens},
		{"Audit", testAudit},
		{"Deliveries", testDeliveries},
		{"DeliveryClaim", testDeliveryClaim},
		{"DeliveryReplay", testDeliveryReplay},
		{"Artifacts", testArtifacts},
		{"ArtifactRetention", testArtifactRetention},
		{"HookSecrets", testHookSecrets},
		{"GateWaitingChange", testGateWaitingChange},
		{"Pipelines", testPipelines},
		{"PipelineRunNumbers", testPipelineRunNumbers},
		{"PipelineRunNumbersConcurrent", testPipelineRunNumbersConcurrent},
		{"RunUses", testRunUses},
		{"RunDelete", testRunDelete},
		{"ArtifactExpire", testArtifactExpire},
		{"Locks", testLocks},
		{"StorageUsage", testStorageUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(newHarness(t, open(t)))
		})
	}
}

// t0 is the suite's epoch; the store never reads the wall clock.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// harness wraps a store with an injected clock and short helpers.
type harness struct {
	t   *testing.T
	s   store.Store
	ctx context.Context
	now time.Time
}

func newHarness(t *testing.T, s store.Store) *harness {
	return &harness{t: t, s: s, ctx: context.Background(), now: t0}
}

func (h *harness) tick(d time.Duration) { h.now = h.now.Add(d) }

// task returns a minimal task definition.
func task(id string, deps ...errand.Dependency) *errand.Task {
	return &errand.Task{ID: id, Type: "test.noop", Data: json.RawMessage(`{"n":1}`), MaxAttempts: 3, DependsOn: deps}
}

func dep(id string, c errand.Condition) errand.Dependency {
	return errand.Dependency{Task: id, Condition: c}
}

func (h *harness) create(tasks ...*errand.Task) []*errand.Task {
	h.t.Helper()
	out, err := h.s.TaskCreate(h.ctx, store.TaskCreateParams{Tasks: tasks, Now: h.now})
	if err != nil {
		h.t.Fatalf("TaskCreate: %v", err)
	}
	if len(out) != len(tasks) {
		h.t.Fatalf("TaskCreate returned %d tasks, want %d", len(out), len(tasks))
	}
	return out
}

func (h *harness) get(id string) *errand.Task {
	h.t.Helper()
	tk, err := h.s.TaskGet(h.ctx, id)
	if err != nil {
		h.t.Fatalf("TaskGet %s: %v", id, err)
	}
	return tk
}

func (h *harness) wantState(id string, want errand.State) *errand.Task {
	h.t.Helper()
	tk := h.get(id)
	if tk.State != want {
		h.t.Fatalf("task %s is %s, want %s", id, tk.State, want)
	}
	return tk
}

func (h *harness) register(id string, mod ...func(*errand.Delegate)) *errand.Delegate {
	h.t.Helper()
	d := &errand.Delegate{ID: id, Name: "name-" + id, Hostname: "host-" + id, Capacity: 4, Version: "1.0"}
	for _, m := range mod {
		m(d)
	}
	out, err := h.s.DelegateRegister(h.ctx, store.DelegateRegisterParams{Delegate: d, TokenHash: "hash-" + id, Now: h.now})
	if err != nil {
		h.t.Fatalf("DelegateRegister %s: %v", id, err)
	}
	return out
}

func (h *harness) acquire(d *errand.Delegate, max int) []*errand.Task {
	h.t.Helper()
	out, err := h.s.TaskAcquire(h.ctx, store.TaskAcquireParams{Delegate: d, Max: max, Now: h.now})
	if err != nil {
		h.t.Fatalf("TaskAcquire for %s: %v", d.ID, err)
	}
	for _, tk := range out {
		if tk.Lease == nil || tk.Lease.Token == "" || tk.Lease.DelegateID != d.ID {
			h.t.Fatalf("acquired task %s has lease %+v, want a token for %s", tk.ID, tk.Lease, d.ID)
		}
		if tk.State != errand.StateLeased {
			h.t.Fatalf("acquired task %s is %s, want leased", tk.ID, tk.State)
		}
	}
	return out
}

// acquireOne acquires with Max 1 and wants exactly the task id.
func (h *harness) acquireOne(d *errand.Delegate, id string) *errand.Task {
	h.t.Helper()
	got := h.acquire(d, 1)
	if len(got) != 1 || got[0].ID != id {
		h.t.Fatalf("%s acquired %v, want [%s]", d.ID, ids(got), id)
	}
	return got[0]
}

func (h *harness) acquireNone(d *errand.Delegate) {
	h.t.Helper()
	if got := h.acquire(d, 10); len(got) != 0 {
		h.t.Fatalf("%s acquired %v, want nothing", d.ID, ids(got))
	}
}

func (h *harness) reportErr(leased *errand.Task, state errand.State, result string, e *errand.Error) (*errand.Task, error) {
	p := store.TaskReportParams{TaskID: leased.ID, DelegateID: leased.Lease.DelegateID,
		LeaseToken: leased.Lease.Token, State: state, Error: e, Now: h.now}
	if result != "" {
		p.Result = json.RawMessage(result)
	}
	return h.s.TaskReport(h.ctx, p)
}

func (h *harness) report(leased *errand.Task, state errand.State) *errand.Task {
	h.t.Helper()
	out, err := h.reportErr(leased, state, "", nil)
	if err != nil {
		h.t.Fatalf("TaskReport %s %s: %v", leased.ID, state, err)
	}
	if out.State != state {
		h.t.Fatalf("TaskReport %s %s returned state %s", leased.ID, state, out.State)
	}
	return out
}

// run leases the task id to d and reports it ended in state end.
func (h *harness) run(d *errand.Delegate, id string, end errand.State) *errand.Task {
	h.t.Helper()
	leased := h.acquireOne(d, id)
	h.report(leased, errand.StateRunning)
	h.report(leased, end)
	return leased
}

func (h *harness) cancel(id string) *errand.Task {
	h.t.Helper()
	out, err := h.s.TaskCancel(h.ctx, store.TaskCancelParams{TaskID: id, Now: h.now})
	if err != nil {
		h.t.Fatalf("TaskCancel %s: %v", id, err)
	}
	return out
}

func (h *harness) sweep(ttl, grace time.Duration) store.TaskSweepResult {
	h.t.Helper()
	res, err := h.s.TaskSweep(h.ctx, store.TaskSweepParams{Now: h.now, LeaseTTL: ttl, TimeoutGrace: grace})
	if err != nil {
		h.t.Fatalf("TaskSweep: %v", err)
	}
	return res
}

func (h *harness) touch(ids ...string) {
	h.t.Helper()
	if err := h.s.DelegateTouch(h.ctx, store.DelegateTouchParams{IDs: ids, Now: h.now}); err != nil {
		h.t.Fatalf("DelegateTouch: %v", err)
	}
}

// touchRunning records a heartbeat of delegate id that names tasks.
func (h *harness) touchRunning(id string, tasks ...string) {
	h.t.Helper()
	err := h.s.DelegateTouch(h.ctx, store.DelegateTouchParams{IDs: []string{id}, Now: h.now,
		Running: map[string][]string{id: tasks}})
	if err != nil {
		h.t.Fatalf("DelegateTouch: %v", err)
	}
}

func (h *harness) list(p store.TaskListParams) []*errand.Task {
	h.t.Helper()
	out, err := h.s.TaskList(h.ctx, p)
	if err != nil {
		h.t.Fatalf("TaskList: %v", err)
	}
	return out
}

func wantCode(t *testing.T, what string, err error, target *errand.Error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: err = %v, want %s", what, err, target.Code)
	}
}

func ids(tasks []*errand.Task) []string {
	out := make([]string, len(tasks))
	for i, tk := range tasks {
		out[i] = tk.ID
	}
	return out
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// recorder collects changes delivered by Subscribe.
type recorder struct {
	mu      sync.Mutex
	changes []store.Change
}

func (r *recorder) add(c store.Change) {
	r.mu.Lock()
	r.changes = append(r.changes, c)
	r.mu.Unlock()
}

// waitFor waits until a change matching want has been delivered. Stores
// shared by several managers may deliver asynchronously, so it polls for
// a bounded time.
func (r *recorder) waitFor(t *testing.T, want store.Change) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		for _, c := range r.changes {
			c.Ended = nil // what a change carries beside its identity is checked where it matters
			if c == want {
				r.mu.Unlock()
				return
			}
		}
		got := fmt.Sprintf("%+v", r.changes)
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("change %+v not delivered; got %s", want, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
