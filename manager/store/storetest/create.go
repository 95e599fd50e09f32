package storetest

import (
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

func testCreateSingle(h *harness) {
	in := task("t1")
	in.Selector = errand.Selector{Labels: map[string]string{"os": "linux"}, Arch: "amd64", Group: "g"}
	in.Priority = 7
	in.Timeout = errand.Duration(90 * time.Second)
	in.RunID = "run-1"
	out := h.create(in)[0]
	got := h.get("t1")
	for _, tk := range []*errand.Task{out, got} {
		if tk.ID != "t1" || tk.Type != "test.noop" || tk.State != errand.StateQueued || tk.Attempt != 0 {
			h.t.Fatalf("stored task = %+v", tk)
		}
		if string(tk.Data) != `{"n":1}` || tk.Priority != 7 || tk.Timeout != in.Timeout ||
			tk.MaxAttempts != 3 || tk.RunID != "run-1" {
			h.t.Fatalf("stored task fields = %+v", tk)
		}
		if tk.Selector.Arch != "amd64" || tk.Selector.Group != "g" || tk.Selector.Labels["os"] != "linux" {
			h.t.Fatalf("stored selector = %+v", tk.Selector)
		}
		if !tk.CreatedAt.Equal(t0) || tk.QueuedAt == nil || !tk.QueuedAt.Equal(t0) {
			h.t.Fatalf("timestamps: created %v queued %v, want %v", tk.CreatedAt, tk.QueuedAt, t0)
		}
		if tk.StartedAt != nil || tk.FinishedAt != nil || tk.Lease != nil {
			h.t.Fatalf("new task has started %v finished %v lease %v", tk.StartedAt, tk.FinishedAt, tk.Lease)
		}
	}
	if _, err := h.s.TaskGet(h.ctx, "missing"); !errors.Is(err, errand.ErrNotFound) {
		h.t.Fatalf("TaskGet missing: err = %v", err)
	}
	def := task("t2")
	def.MaxAttempts = 0
	if got := h.create(def)[0]; got.MaxAttempts != errand.DefaultMaxAttempts {
		h.t.Fatalf("max_attempts 0 stored as %d, want default %d", got.MaxAttempts, errand.DefaultMaxAttempts)
	}
}

func testCreateBatch(h *harness) {
	// c depends on b which comes later in the batch; b depends on a.
	out := h.create(
		task("c", dep("b", errand.OnSuccess)),
		task("a"),
		task("b", dep("a", "")),
	)
	want := map[string]errand.State{"a": errand.StateQueued, "b": errand.StatePending, "c": errand.StatePending}
	for i, id := range []string{"c", "a", "b"} {
		if out[i].ID != id || out[i].State != want[id] {
			h.t.Fatalf("returned[%d] = %s %s, want %s %s", i, out[i].ID, out[i].State, id, want[id])
		}
		h.wantState(id, want[id])
	}
	b := h.get("b")
	if len(b.DependsOn) != 1 || b.DependsOn[0].Task != "a" {
		h.t.Fatalf("b depends on %+v", b.DependsOn)
	}
	// A batch is created in its own order, whatever its dependencies.
	if got := ids(h.list(store.TaskListParams{})); !sameStrings(got, []string{"c", "a", "b"}) {
		h.t.Fatalf("TaskList after batch = %v, want [c a b]", got)
	}
	// A later batch may depend on tasks that exist.
	h.create(task("d", dep("c", errand.Always), dep("a", errand.OnFailure)))
	h.wantState("d", errand.StatePending)
}

func testCreateUnknownReference(h *harness) {
	h.create(task("exists"))
	cases := []struct {
		name  string
		batch []*errand.Task
	}{
		{"unknown dependency", []*errand.Task{task("n1"), task("n2", dep("exists", ""), dep("ghost", ""))}},
		{"unknown affinity", []*errand.Task{task("n1"), func() *errand.Task { tk := task("n3"); tk.Affinity = "ghost"; return tk }()}},
	}
	for _, c := range cases {
		_, err := h.s.TaskCreate(h.ctx, store.TaskCreateParams{Tasks: c.batch, Now: h.now})
		wantCode(h.t, c.name, err, errand.ErrInvalid)
		if !strings.Contains(err.Error(), "tasks[1]") {
			h.t.Fatalf("%s: reason %q does not name the path tasks[1]", c.name, err)
		}
		for _, id := range []string{"n1", "n2", "n3"} {
			if _, err := h.s.TaskGet(h.ctx, id); !errors.Is(err, errand.ErrNotFound) {
				h.t.Fatalf("%s: task %s written (err %v)", c.name, id, err)
			}
		}
	}
	if got := h.list(store.TaskListParams{}); len(got) != 1 {
		h.t.Fatalf("store holds %v, want only exists", ids(got))
	}
}

func testCreateCycle(h *harness) {
	cases := [][]*errand.Task{
		{task("x", dep("y", "")), task("y", dep("z", "")), task("z", dep("x", ""))},
		{task("self", dep("self", ""))},
		{task("ok"), task("p", dep("ok", ""), dep("q", "")), task("q", dep("p", errand.Always))},
	}
	for i, batch := range cases {
		_, err := h.s.TaskCreate(h.ctx, store.TaskCreateParams{Tasks: batch, Now: h.now})
		wantCode(h.t, "cycle", err, errand.ErrInvalid)
		if !strings.Contains(err.Error(), "cycle") {
			h.t.Fatalf("case %d: reason %q does not say cycle", i, err)
		}
	}
	if got := h.list(store.TaskListParams{}); len(got) != 0 {
		h.t.Fatalf("cycles wrote %v", ids(got))
	}
}

func testCreateDuplicate(h *harness) {
	h.create(task("dup"))
	_, err := h.s.TaskCreate(h.ctx, store.TaskCreateParams{Tasks: []*errand.Task{task("new"), task("dup")}, Now: h.now})
	wantCode(h.t, "existing id", err, errand.ErrConflict)
	_, err = h.s.TaskCreate(h.ctx, store.TaskCreateParams{Tasks: []*errand.Task{task("twice"), task("twice")}, Now: h.now})
	wantCode(h.t, "id twice in batch", err, errand.ErrConflict)
	if got := h.list(store.TaskListParams{}); !sameStrings(ids(got), []string{"dup"}) {
		h.t.Fatalf("store holds %v, want [dup]", ids(got))
	}
}

func testCreateInvalid(h *harness) {
	noType := task("a")
	noType.Type = ""
	badCond := task("b", dep("a", "sometimes"))
	badData := task("c")
	badData.Data = json.RawMessage(`{not json`)
	tooMany := task("d")
	tooMany.MaxAttempts = errand.MaxMaxAttempts + 1
	for _, tk := range []*errand.Task{noType, badCond, badData, tooMany} {
		_, err := h.s.TaskCreate(h.ctx, store.TaskCreateParams{Tasks: []*errand.Task{tk}, Now: h.now})
		wantCode(h.t, "invalid task "+tk.ID, err, errand.ErrInvalid)
	}
}

func testCreateResolvesEnded(h *harness) {
	d := h.register("d1")
	h.create(task("ok"), task("bad"))
	h.run(d, "ok", errand.StateSucceeded)
	h.run(d, "bad", errand.StateFailed)
	h.tick(time.Second)
	out := h.create(
		task("after-ok", dep("ok", errand.OnSuccess)),
		task("after-bad", dep("bad", errand.OnSuccess)),
		task("on-fail", dep("bad", errand.OnFailure)),
		task("chained", dep("after-bad", errand.OnSkipped)),
		task("waits", dep("after-ok", errand.OnSuccess)),
	)
	want := []errand.State{errand.StateQueued, errand.StateSkipped, errand.StateQueued, errand.StateQueued, errand.StatePending}
	for i, tk := range out {
		if tk.State != want[i] {
			h.t.Fatalf("%s created %s, want %s", tk.ID, tk.State, want[i])
		}
		h.wantState(tk.ID, want[i])
	}
	skipped := h.get("after-bad")
	if skipped.Error == nil || skipped.Error.Code != errand.CodeDependencyUnmet || skipped.FinishedAt == nil {
		h.t.Fatalf("skipped at create: error %+v finished %v", skipped.Error, skipped.FinishedAt)
	}
}
