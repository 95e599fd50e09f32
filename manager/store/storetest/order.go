package storetest

import (
	"fmt"
	"slices"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// testTaskListOrder lists tasks oldest first and newest first, with
// filters, and pages through both orders with After.
func testTaskListOrder(h *harness) {
	d := h.register("d1")
	var all []string
	for i := 0; i < 7; i++ {
		tk := task(fmt.Sprintf("t%d", i))
		if i%2 == 1 {
			tk.Type = "other"
		}
		if i < 4 {
			tk.RunID = "run-a"
		}
		h.tick(time.Second)
		h.create(tk)
		all = append(all, tk.ID)
	}
	h.run(d, "t0", errand.StateSucceeded)
	h.acquireOne(d, "t1")
	queued := []errand.State{errand.StateQueued}
	cases := []struct {
		name string
		p    store.TaskListParams
		want []string
	}{
		{"asc", store.TaskListParams{}, all},
		{"desc", store.TaskListParams{Desc: true}, []string{"t6", "t5", "t4", "t3", "t2", "t1", "t0"}},
		{"desc by state", store.TaskListParams{Desc: true, States: queued}, []string{"t6", "t5", "t4", "t3", "t2"}},
		{"desc by type", store.TaskListParams{Desc: true, Type: "other"}, []string{"t5", "t3", "t1"}},
		{"desc by run", store.TaskListParams{Desc: true, RunID: "run-a"}, []string{"t3", "t2", "t1", "t0"}},
		{"desc by run, type and state", store.TaskListParams{Desc: true, RunID: "run-a", Type: "other", States: queued}, []string{"t3"}},
		{"desc first page", store.TaskListParams{Desc: true, Limit: 2}, []string{"t6", "t5"}},
		{"desc after", store.TaskListParams{Desc: true, After: "t5", Limit: 2}, []string{"t4", "t3"}},
		{"desc after the end", store.TaskListParams{Desc: true, After: "t0"}, []string{}},
		{"desc after an unknown id", store.TaskListParams{Desc: true, After: "nope", Limit: 1}, []string{"t6"}},
		{"asc after an unknown id", store.TaskListParams{After: "nope", Limit: 1}, []string{"t0"}},
		// After need not match the filters: it is a position in the order.
		{"desc after, with a filter", store.TaskListParams{Desc: true, Type: "other", After: "t4"}, []string{"t3", "t1"}},
		{"desc after, with a run", store.TaskListParams{Desc: true, RunID: "run-a", After: "t6", Limit: 2}, []string{"t3", "t2"}},
		{"asc after, with a filter", store.TaskListParams{Type: "other", After: "t2"}, []string{"t3", "t5"}},
	}
	for _, c := range cases {
		if got := ids(h.list(c.p)); !sameStrings(got, c.want) {
			h.t.Fatalf("%s: TaskList = %v, want %v", c.name, got, c.want)
		}
	}
	// Paging with the last id of each page as After walks every task
	// once, in either order, with or without a filter.
	walk := func(p store.TaskListParams) []string {
		h.t.Helper()
		var out []string
		p.Limit = 2
		for range 10 {
			page := ids(h.list(p))
			out = append(out, page...)
			if len(page) < p.Limit {
				return out
			}
			p.After = page[len(page)-1]
		}
		h.t.Fatalf("paging %+v did not end", p)
		return nil
	}
	desc := slices.Clone(all)
	slices.Reverse(desc)
	pages := []struct {
		name string
		p    store.TaskListParams
		want []string
	}{
		{"asc", store.TaskListParams{}, all},
		{"desc", store.TaskListParams{Desc: true}, desc},
		{"asc queued", store.TaskListParams{States: queued}, []string{"t2", "t3", "t4", "t5", "t6"}},
		{"desc queued", store.TaskListParams{Desc: true, States: queued}, []string{"t6", "t5", "t4", "t3", "t2"}},
		{"desc run and type", store.TaskListParams{Desc: true, RunID: "run-a", Type: "test.noop"}, []string{"t2", "t0"}},
	}
	for _, c := range pages {
		if got := walk(c.p); !sameStrings(got, c.want) {
			h.t.Fatalf("paging %s: %v, want %v", c.name, got, c.want)
		}
	}
}
