package storetest

import (
	"bytes"
	"encoding/json"
	"reflect"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

func (h *harness) createRun(r *store.Run, tasks ...*errand.Task) []*errand.Task {
	h.t.Helper()
	out, err := h.s.RunCreate(h.ctx, store.RunCreateParams{Run: r, Tasks: tasks, Now: h.now})
	if err != nil {
		h.t.Fatalf("RunCreate %s: %v", r.ID, err)
	}
	if len(out) != len(tasks) {
		h.t.Fatalf("RunCreate returned %d tasks, want %d", len(out), len(tasks))
	}
	return out
}

func (h *harness) getRun(id string) *store.Run {
	h.t.Helper()
	r, err := h.s.RunGet(h.ctx, id)
	if err != nil {
		h.t.Fatalf("RunGet %s: %v", id, err)
	}
	return r
}

func testRunCreate(h *harness) {
	plan := json.RawMessage(`{"stages":[{"name":"build"}]}`)
	r := &store.Run{ID: "run1", Filename: "config.yml", Config: []byte("stages: []\n"), Branch: "main", Event: "push", Plan: plan}
	out := h.createRun(r,
		task("r1-init"),
		task("r1-step", dep("r1-init", errand.OnSuccess)),
		task("r1-clean", dep("r1-step", errand.Always)),
	)
	if out[0].State != errand.StateQueued || out[1].State != errand.StatePending {
		h.t.Fatalf("created states = %s, %s; want queued, pending", out[0].State, out[1].State)
	}
	for _, tk := range out {
		if tk.RunID != "run1" {
			h.t.Fatalf("task %s run_id = %q, want run1", tk.ID, tk.RunID)
		}
	}
	got := h.getRun("run1")
	if got.ID != "run1" || got.Filename != "config.yml" || string(got.Config) != "stages: []\n" ||
		got.Branch != "main" || got.Event != "push" || !got.CreatedAt.Equal(t0) || got.CancelledAt != nil {
		h.t.Fatalf("RunGet = %+v", got)
	}
	var a, b any
	if err := json.Unmarshal(got.Plan, &a); err != nil {
		h.t.Fatalf("stored plan is not JSON: %v", err)
	}
	_ = json.Unmarshal(plan, &b)
	if !reflect.DeepEqual(a, b) {
		h.t.Fatalf("plan = %s, want %s", got.Plan, plan)
	}
	if len(got.SetupErrors) != 0 || len(got.Approvals) != 0 {
		h.t.Fatalf("new run has setup errors %v or approvals %v", got.SetupErrors, got.Approvals)
	}
	listed := h.list(store.TaskListParams{RunID: "run1"})
	if want := []string{"r1-init", "r1-step", "r1-clean"}; !sameStrings(ids(listed), want) {
		h.t.Fatalf("tasks of run1 = %v, want %v", ids(listed), want)
	}
	// The run's tasks are ordinary tasks: a delegate runs them and their
	// dependents are released.
	d := h.register("d1")
	h.run(d, "r1-init", errand.StateSucceeded)
	h.wantState("r1-step", errand.StateQueued)
	_, err := h.s.RunGet(h.ctx, "nope")
	wantCode(h.t, "RunGet unknown", err, errand.ErrNotFound)
}

func testRunSetupError(h *harness) {
	errs := []store.RunSetupError{
		{Path: "stages[0].steps[0].image", Line: 4, Message: "required for a docker stage"},
		{Path: "stages[1].depends[0]", Message: "unknown stage nope"},
	}
	h.createRun(&store.Run{ID: "bad", Filename: "config.yml", Config: []byte("x"), SetupErrors: errs})
	got := h.getRun("bad")
	if !reflect.DeepEqual(got.SetupErrors, errs) {
		h.t.Fatalf("setup errors = %+v, want %+v", got.SetupErrors, errs)
	}
	if len(got.Plan) != 0 {
		h.t.Fatalf("setup error run has a plan: %s", got.Plan)
	}
	if tasks := h.list(store.TaskListParams{RunID: "bad"}); len(tasks) != 0 {
		h.t.Fatalf("setup error run has tasks %v", ids(tasks))
	}
}

func testRunCreateRefused(h *harness) {
	h.create(task("outside"))
	h.createRun(&store.Run{ID: "r1"}, task("a"))
	cases := []struct {
		name  string
		run   *store.Run
		tasks []*errand.Task
		want  *errand.Error
	}{
		{"duplicate run", &store.Run{ID: "r1"}, []*errand.Task{task("b")}, errand.ErrConflict},
		{"duplicate task", &store.Run{ID: "r2"}, []*errand.Task{task("a")}, errand.ErrConflict},
		{"dependency outside the run", &store.Run{ID: "r3"}, []*errand.Task{task("c", dep("outside", errand.OnSuccess))}, errand.ErrInvalid},
		{"affinity outside the run", &store.Run{ID: "r4"}, []*errand.Task{{ID: "d", Type: "t", Affinity: "outside"}}, errand.ErrInvalid},
		{"cycle", &store.Run{ID: "r5"}, []*errand.Task{task("e", dep("f", errand.OnSuccess)), task("f", dep("e", errand.OnSuccess))}, errand.ErrInvalid},
		{"setup errors with tasks", &store.Run{ID: "r6", SetupErrors: []store.RunSetupError{{Message: "x"}}}, []*errand.Task{task("g")}, errand.ErrInvalid},
		{"no id", &store.Run{}, nil, errand.ErrInvalid},
		{"config too large", &store.Run{ID: "r7", Config: bytes.Repeat([]byte("x"), store.MaxRunConfig+1)}, nil, errand.ErrTooLarge},
	}
	for _, c := range cases {
		_, err := h.s.RunCreate(h.ctx, store.RunCreateParams{Run: c.run, Tasks: c.tasks, Now: h.now})
		wantCode(h.t, c.name, err, c.want)
		if c.run.ID != "" && c.run.ID != "r1" {
			_, err := h.s.RunGet(h.ctx, c.run.ID)
			wantCode(h.t, c.name+": run written", err, errand.ErrNotFound)
		}
		for _, tk := range c.tasks {
			if tk.ID == "a" {
				continue
			}
			_, err := h.s.TaskGet(h.ctx, tk.ID)
			wantCode(h.t, c.name+": task written", err, errand.ErrNotFound)
		}
	}
	if tasks := h.list(store.TaskListParams{RunID: "r1"}); !sameStrings(ids(tasks), []string{"a"}) {
		h.t.Fatalf("tasks of r1 = %v after refused creates", ids(tasks))
	}
}

func testRunList(h *harness) {
	for _, id := range []string{"01A", "01B", "01C", "01D"} {
		h.createRun(&store.Run{ID: id})
		h.tick(time.Second)
	}
	page := func(after string, limit int) []string {
		h.t.Helper()
		runs, err := h.s.RunList(h.ctx, store.RunListParams{After: after, Limit: limit})
		if err != nil {
			h.t.Fatalf("RunList: %v", err)
		}
		out := make([]string, len(runs))
		for i, r := range runs {
			out[i] = r.ID
		}
		return out
	}
	if got, want := page("", 0), []string{"01D", "01C", "01B", "01A"}; !sameStrings(got, want) {
		h.t.Fatalf("RunList = %v, want %v (newest first)", got, want)
	}
	if got, want := page("", 2), []string{"01D", "01C"}; !sameStrings(got, want) {
		h.t.Fatalf("first page = %v, want %v", got, want)
	}
	if got, want := page("01C", 2), []string{"01B", "01A"}; !sameStrings(got, want) {
		h.t.Fatalf("page after 01C = %v, want %v", got, want)
	}
}

func testRunApprove(h *harness) {
	h.createRun(&store.Run{ID: "r1"})
	approve := func(stage, who string) int {
		h.t.Helper()
		n, err := h.s.RunApprove(h.ctx, store.RunApproveParams{RunID: "r1", Stage: stage, Approver: who, Now: h.now})
		if err != nil {
			h.t.Fatalf("RunApprove %s by %s: %v", stage, who, err)
		}
		return n
	}
	steps := []struct {
		stage, who string
		want       int
	}{
		{"deploy", "alice", 1},
		{"deploy", "alice", 1},
		{"deploy", "bob", 2},
		{"other", "alice", 1},
		{"deploy", "bob", 2},
	}
	for _, s := range steps {
		if got := approve(s.stage, s.who); got != s.want {
			h.t.Fatalf("approve %s by %s = %d, want %d", s.stage, s.who, got, s.want)
		}
	}
	got := h.getRun("r1").Approvals
	want := map[string][]string{"deploy": {"alice", "bob"}, "other": {"alice"}}
	if !reflect.DeepEqual(got, want) {
		h.t.Fatalf("approvals = %v, want %v", got, want)
	}
	_, err := h.s.RunApprove(h.ctx, store.RunApproveParams{RunID: "nope", Stage: "deploy", Approver: "alice", Now: h.now})
	wantCode(h.t, "approve unknown run", err, errand.ErrNotFound)
	_, err = h.s.RunApprove(h.ctx, store.RunApproveParams{RunID: "r1", Stage: "deploy", Now: h.now})
	wantCode(h.t, "approve without approver", err, errand.ErrInvalid)
}

func testRunCancel(h *harness) {
	h.createRun(&store.Run{ID: "r1"}, task("a"))
	r, err := h.s.RunCancel(h.ctx, store.RunCancelParams{RunID: "r1", Now: h.now})
	if err != nil {
		h.t.Fatalf("RunCancel: %v", err)
	}
	first := h.now
	if r.CancelledAt == nil || !r.CancelledAt.Equal(first) {
		h.t.Fatalf("cancelled_at = %v, want %v", r.CancelledAt, first)
	}
	h.tick(time.Minute)
	if _, err := h.s.RunCancel(h.ctx, store.RunCancelParams{RunID: "r1", Now: h.now}); err != nil {
		h.t.Fatalf("second RunCancel: %v", err)
	}
	if got := h.getRun("r1").CancelledAt; got == nil || !got.Equal(first) {
		h.t.Fatalf("cancelled_at after a second cancel = %v, want %v", got, first)
	}
	// Marking the run changes no task: the manager cancels them.
	h.wantState("a", errand.StateQueued)
	_, err = h.s.RunCancel(h.ctx, store.RunCancelParams{RunID: "nope", Now: h.now})
	wantCode(h.t, "cancel unknown run", err, errand.ErrNotFound)
}

func testRunTaskStats(h *harness) {
	gate := task("g")
	gate.Type = "test.gate"
	h.createRun(&store.Run{ID: "r2"}, gate)
	h.createRun(&store.Run{ID: "r1"},
		task("a"), task("b", dep("a", errand.OnSuccess)), task("c", dep("a", errand.OnSuccess)))
	h.createRun(&store.Run{ID: "r3"})
	d := h.register("d1")
	h.tick(time.Second)
	h.run(d, "g", errand.StateSucceeded)
	h.tick(time.Second)
	start := h.now
	h.run(d, "a", errand.StateSucceeded)
	h.tick(time.Second)
	h.run(d, "b", errand.StateFailed)
	end := h.now

	got, err := h.s.RunTaskStats(h.ctx, store.RunTaskStatsParams{RunIDs: []string{"r1", "r2", "r3", "nope"}, TimesIgnoreTypes: []string{"test.gate"}})
	if err != nil {
		h.t.Fatalf("RunTaskStats: %v", err)
	}
	if len(got) != 2 || got["r1"] == nil || got["r2"] == nil {
		h.t.Fatalf("RunTaskStats has runs %v, want r1 and r2", got)
	}
	r1 := got["r1"]
	want := map[errand.State]int{errand.StateSucceeded: 1, errand.StateFailed: 1, errand.StateQueued: 1}
	if !reflect.DeepEqual(r1.Tasks, want) {
		h.t.Fatalf("r1 counts = %v, want %v", r1.Tasks, want)
	}
	if r1.StartedAt == nil || !r1.StartedAt.Equal(start) || r1.FinishedAt == nil || !r1.FinishedAt.Equal(end) {
		h.t.Fatalf("r1 span = %v..%v, want %v..%v", r1.StartedAt, r1.FinishedAt, start, end)
	}
	r2 := got["r2"]
	if !reflect.DeepEqual(r2.Tasks, map[errand.State]int{errand.StateSucceeded: 1}) {
		h.t.Fatalf("r2 counts = %v", r2.Tasks)
	}
	if r2.StartedAt != nil || r2.FinishedAt != nil {
		h.t.Fatalf("r2 span = %v..%v, want none: its only ended task is of an ignored type", r2.StartedAt, r2.FinishedAt)
	}
	if got, err := h.s.RunTaskStats(h.ctx, store.RunTaskStatsParams{}); err != nil || len(got) != 0 {
		h.t.Fatalf("RunTaskStats of no run = %v, %v", got, err)
	}
}
