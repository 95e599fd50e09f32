package storetest

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

func testDelegates(h *harness) {
	d1 := h.register("d1", func(d *errand.Delegate) {
		d.Group = "ci"
		d.Labels = map[string]string{"os": "linux"}
		d.Archs = []string{"amd64", "arm64"}
		d.TaskTypes = []string{errand.TypeExecExecute}
		d.Dynamic = true
		d.Capacity = 8
	})
	h.tick(time.Second)
	h.register("d2", func(d *errand.Delegate) { d.Group = "ci" })
	h.tick(time.Second)
	h.register("d3")

	got, err := h.s.DelegateGet(h.ctx, "d1")
	if err != nil {
		h.t.Fatal(err)
	}
	for _, d := range []*errand.Delegate{d1, got} {
		if d.ID != "d1" || d.Name != "name-d1" || d.Hostname != "host-d1" || d.Group != "ci" ||
			d.Labels["os"] != "linux" || !sameStrings(d.Archs, []string{"amd64", "arm64"}) ||
			!sameStrings(d.TaskTypes, []string{errand.TypeExecExecute}) || !d.Dynamic || d.Capacity != 8 ||
			d.Version != "1.0" || d.State != errand.DelegateActive || !d.CreatedAt.Equal(t0) || !d.LastHeartbeat.Equal(t0) {
			h.t.Fatalf("stored delegate = %+v", d)
		}
	}
	if hash, err := h.s.DelegateTokenHash(h.ctx, "d1"); err != nil || hash != "hash-d1" {
		h.t.Fatalf("DelegateTokenHash = %q, %v", hash, err)
	}
	if _, err := h.s.DelegateGet(h.ctx, "ghost"); !errors.Is(err, errand.ErrNotFound) {
		h.t.Fatalf("DelegateGet ghost: err = %v", err)
	}
	if _, err := h.s.DelegateTokenHash(h.ctx, "ghost"); !errors.Is(err, errand.ErrNotFound) {
		h.t.Fatalf("DelegateTokenHash ghost: err = %v", err)
	}
	_, err = h.s.DelegateRegister(h.ctx, store.DelegateRegisterParams{Delegate: &errand.Delegate{ID: "d1", Name: "again"},
		TokenHash: "h", Now: h.now})
	wantCode(h.t, "register an existing id", err, errand.ErrConflict)

	draining := errand.DelegateDraining
	yes := true
	up, err := h.s.DelegateUpdate(h.ctx, store.DelegateUpdateParams{ID: "d2", State: &draining, DrainRequested: &yes})
	if err != nil {
		h.t.Fatal(err)
	}
	if up.State != errand.DelegateDraining || !up.DrainRequested || up.Overloaded {
		h.t.Fatalf("updated delegate = %+v", up)
	}
	up, err = h.s.DelegateUpdate(h.ctx, store.DelegateUpdateParams{ID: "d2", Overloaded: &yes})
	if err != nil {
		h.t.Fatal(err)
	}
	if up.State != errand.DelegateDraining || !up.DrainRequested || !up.Overloaded {
		h.t.Fatalf("partial update lost fields: %+v", up)
	}
	if got, _ := h.s.DelegateGet(h.ctx, "d2"); got.State != errand.DelegateDraining || !got.DrainRequested || !got.Overloaded {
		h.t.Fatalf("stored after update = %+v", got)
	}
	_, err = h.s.DelegateUpdate(h.ctx, store.DelegateUpdateParams{ID: "ghost", Overloaded: &yes})
	wantCode(h.t, "update of unknown delegate", err, errand.ErrNotFound)

	lists := []struct {
		p    store.DelegateListParams
		want []string
	}{
		{store.DelegateListParams{}, []string{"d1", "d2", "d3"}},
		{store.DelegateListParams{Group: "ci"}, []string{"d1", "d2"}},
		{store.DelegateListParams{States: []errand.DelegateState{errand.DelegateDraining}}, []string{"d2"}},
		{store.DelegateListParams{Group: "ci", States: []errand.DelegateState{errand.DelegateActive, errand.DelegateLost}}, []string{"d1"}},
		{store.DelegateListParams{Group: "none"}, []string{}},
	}
	for _, l := range lists {
		got, err := h.s.DelegateList(h.ctx, l.p)
		if err != nil {
			h.t.Fatal(err)
		}
		names := make([]string, len(got))
		for i, d := range got {
			names[i] = d.ID
		}
		if !sameStrings(names, l.want) {
			h.t.Fatalf("DelegateList(%+v) = %v, want %v", l.p, names, l.want)
		}
	}

	if err := h.s.DelegateDelete(h.ctx, store.DelegateDeleteParams{ID: "d3", Now: h.now}); err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.s.DelegateGet(h.ctx, "d3"); !errors.Is(err, errand.ErrNotFound) {
		h.t.Fatalf("deleted delegate: err = %v", err)
	}
	err = h.s.DelegateDelete(h.ctx, store.DelegateDeleteParams{ID: "d3", Now: h.now})
	wantCode(h.t, "delete twice", err, errand.ErrNotFound)
}

func testDelegateDelete(h *harness) {
	d1, d2 := h.register("d1"), h.register("d2")
	last := task("last")
	last.MaxAttempts = 1
	h.create(task("retry"), last, task("keep"))
	r := h.acquireOne(d1, "retry")
	h.report(r, errand.StateRunning)
	h.acquireOne(d1, "last")
	h.acquireOne(d2, "keep")
	if err := h.s.DelegateDelete(h.ctx, store.DelegateDeleteParams{ID: "d1", Now: h.now}); err != nil {
		h.t.Fatal(err)
	}
	h.wantState("retry", errand.StateQueued)
	if tk := h.wantState("last", errand.StateFailed); tk.Error == nil || tk.Error.Code != errand.CodeDelegateLost {
		h.t.Fatalf("last attempt error %+v", tk.Error)
	}
	h.wantState("keep", errand.StateLeased)
	_, err := h.reportErr(r, errand.StateSucceeded, "", nil)
	wantCode(h.t, "report by a deleted delegate", err, errand.ErrLeaseLost)
}

func testSubscribe(h *harness) {
	rec := &recorder{}
	unsubscribe := h.s.Subscribe(rec.add)
	defer unsubscribe()
	d := h.register("d1")
	h.create(task("a"), task("b", dep("a", errand.OnSuccess)))
	rec.waitFor(h.t, store.Change{Kind: store.ChangeTaskQueued, TaskID: "a", TaskType: "test.noop"})

	leased := h.acquireOne(d, "a")
	h.report(leased, errand.StateRunning)
	if _, err := h.appendLog(leased, 0, "x", "y"); err != nil {
		h.t.Fatal(err)
	}
	rec.waitFor(h.t, store.Change{Kind: store.ChangeLogAppended, TaskID: "a", LogLines: 2})
	h.report(leased, errand.StateSucceeded)
	rec.waitFor(h.t, store.Change{Kind: store.ChangeTaskEnded, TaskID: "a"})
	rec.waitFor(h.t, store.Change{Kind: store.ChangeTaskQueued, TaskID: "b", TaskType: "test.noop"})

	b := h.acquireOne(d, "b")
	h.report(b, errand.StateRunning)
	h.cancel("b")
	rec.waitFor(h.t, store.Change{Kind: store.ChangeCancelRequested, TaskID: "b", DelegateID: "d1"})

	yes := true
	if _, err := h.s.DelegateUpdate(h.ctx, store.DelegateUpdateParams{ID: "d1", DrainRequested: &yes}); err != nil {
		h.t.Fatal(err)
	}
	rec.waitFor(h.t, store.Change{Kind: store.ChangeDrainRequested, DelegateID: "d1"})

	// After unsubscribing nothing more arrives.
	unsubscribe()
	rec.mu.Lock()
	n := len(rec.changes)
	rec.mu.Unlock()
	h.create(task("c"))
	// Once a later subscriber has seen e, c would have reached the first
	// one too, had it still been subscribed.
	rec2 := &recorder{}
	defer h.s.Subscribe(rec2.add)()
	h.create(task("e"))
	rec2.waitFor(h.t, store.Change{Kind: store.ChangeTaskQueued, TaskID: "e", TaskType: "test.noop"})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, c := range rec.changes[n:] {
		h.t.Fatalf("change %+v delivered after unsubscribe", c)
	}
}

func testTaskList(h *harness) {
	d := h.register("d1")
	for i := 0; i < 6; i++ {
		tk := task(fmt.Sprintf("t%d", i))
		if i%2 == 1 {
			tk.Type = "other"
		}
		if i < 3 {
			tk.RunID = "run-a"
		}
		h.tick(time.Second)
		h.create(tk)
	}
	h.run(d, "t0", errand.StateSucceeded)
	h.acquireOne(d, "t1")
	cases := []struct {
		name string
		p    store.TaskListParams
		want []string
	}{
		{"all", store.TaskListParams{}, []string{"t0", "t1", "t2", "t3", "t4", "t5"}},
		{"by state", store.TaskListParams{States: []errand.State{errand.StateQueued}}, []string{"t2", "t3", "t4", "t5"}},
		{"by states", store.TaskListParams{States: []errand.State{errand.StateSucceeded, errand.StateLeased}}, []string{"t0", "t1"}},
		{"by type", store.TaskListParams{Type: "other"}, []string{"t1", "t3", "t5"}},
		{"by run", store.TaskListParams{RunID: "run-a"}, []string{"t0", "t1", "t2"}},
		{"type and state", store.TaskListParams{Type: "other", States: []errand.State{errand.StateQueued}}, []string{"t3", "t5"}},
		{"first page", store.TaskListParams{Limit: 2}, []string{"t0", "t1"}},
		{"next page", store.TaskListParams{After: "t1", Limit: 2}, []string{"t2", "t3"}},
		{"last page", store.TaskListParams{After: "t3", Limit: 10}, []string{"t4", "t5"}},
		{"after the end", store.TaskListParams{After: "t5"}, []string{}},
		{"paging with a filter", store.TaskListParams{Type: "other", After: "t1", Limit: 1}, []string{"t3"}},
		{"nothing matches", store.TaskListParams{RunID: "run-z"}, []string{}},
	}
	for _, c := range cases {
		if got := ids(h.list(c.p)); !sameStrings(got, c.want) {
			h.t.Fatalf("%s: TaskList = %v, want %v", c.name, got, c.want)
		}
	}
	var many []*errand.Task
	for i := 0; i < 120; i++ {
		many = append(many, task(fmt.Sprintf("m%03d", i)))
	}
	h.create(many...)
	if got := h.list(store.TaskListParams{}); len(got) != 100 {
		h.t.Fatalf("default limit returned %d tasks, want 100", len(got))
	}
}

func testDelegateListPages(h *harness) {
	for _, id := range []string{"d1", "d2", "d3"} {
		h.register(id)
	}
	page := func(after string, limit int) []string {
		h.t.Helper()
		list, err := h.s.DelegateList(h.ctx, store.DelegateListParams{After: after, Limit: limit})
		if err != nil {
			h.t.Fatalf("DelegateList: %v", err)
		}
		var out []string
		for _, d := range list {
			out = append(out, d.ID)
		}
		return out
	}
	for _, c := range []struct {
		after string
		limit int
		want  string
	}{
		{"", 2, "d1,d2"}, {"d2", 2, "d3"}, {"d3", 2, ""}, {"", 0, "d1,d2,d3"}, {"d1", 0, "d2,d3"}, {"unknown", 2, ""},
	} {
		if got := strings.Join(page(c.after, c.limit), ","); got != c.want {
			h.t.Errorf("DelegateList after %q limit %d = %s, want %s", c.after, c.limit, got, c.want)
		}
	}
}
