package storetest

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

func (h *harness) appendLog(leased *errand.Task, offset int64, lines ...string) (int64, error) {
	return h.s.LogAppend(h.ctx, store.LogAppendParams{TaskID: leased.ID, DelegateID: leased.Lease.DelegateID,
		LeaseToken: leased.Lease.Token, Offset: offset, Lines: lines, Now: h.now})
}

func (h *harness) readLog(id string, offset int64, limit int) []string {
	h.t.Helper()
	lines, err := h.s.LogRead(h.ctx, store.LogReadParams{TaskID: id, Offset: offset, Limit: limit})
	if err != nil {
		h.t.Fatalf("LogRead %s: %v", id, err)
	}
	return lines
}

func testLogs(h *harness) {
	d := h.register("d1")
	h.create(task("t"))
	leased := h.acquireOne(d, "t")
	h.report(leased, errand.StateRunning)

	steps := []struct {
		name   string
		offset int64
		lines  []string
		want   int64
	}{
		{"first append", 0, []string{"a", "b"}, 2},
		{"retry of the same append", 0, []string{"a", "b"}, 2},
		{"retry of a prefix", 0, []string{"a"}, 2},
		{"overlap stores only the tail", 1, []string{"b", "c", "d"}, 4},
		{"append at the end", 4, []string{"e"}, 5},
		{"empty append", 5, nil, 5},
	}
	for _, s := range steps {
		next, err := h.appendLog(leased, s.offset, s.lines...)
		if err != nil {
			h.t.Fatalf("%s: %v", s.name, err)
		}
		if next != s.want {
			h.t.Fatalf("%s: next offset %d, want %d", s.name, next, s.want)
		}
	}
	if got := h.readLog("t", 0, 0); !sameStrings(got, []string{"a", "b", "c", "d", "e"}) {
		h.t.Fatalf("log = %q", got)
	}
	if got := h.get("t"); got.LogLines != 5 {
		h.t.Fatalf("log_lines = %d, want 5", got.LogLines)
	}

	_, err := h.appendLog(leased, 7, "gap")
	wantCode(h.t, "append past the end", err, errand.ErrLogOffset)
	if !strings.Contains(err.Error(), "5") {
		h.t.Fatalf("gap reason %q does not give the expected offset 5", err)
	}
	stale := *leased
	stale.Lease = &errand.Lease{Token: "ffffffffffffffffffffffffffffffff", DelegateID: "d1"}
	_, err = h.appendLog(&stale, 5, "x")
	wantCode(h.t, "append with a wrong token", err, errand.ErrLeaseLost)
	foreign := *leased
	foreign.Lease = &errand.Lease{Token: leased.Lease.Token, DelegateID: "d2"}
	_, err = h.appendLog(&foreign, 5, "x")
	wantCode(h.t, "append by another delegate", err, errand.ErrForbidden)

	reads := []struct {
		offset int64
		limit  int
		want   []string
	}{
		{0, 2, []string{"a", "b"}},
		{1, 3, []string{"b", "c", "d"}},
		{3, 0, []string{"d", "e"}},
		{5, 10, []string{}},
		{9, 10, []string{}},
	}
	for _, r := range reads {
		if got := h.readLog("t", r.offset, r.limit); !sameStrings(got, r.want) {
			h.t.Fatalf("LogRead(%d, %d) = %q, want %q", r.offset, r.limit, got, r.want)
		}
	}
	if _, err := h.s.LogRead(h.ctx, store.LogReadParams{TaskID: "missing"}); !errors.Is(err, errand.ErrNotFound) {
		h.t.Fatalf("LogRead of missing task: err = %v", err)
	}

	// After the task ends a retried append is still a no-op; new lines
	// are refused.
	if done := h.report(leased, errand.StateSucceeded); done.LogLines != 5 {
		h.t.Fatalf("report after logging returned log_lines %d, want 5", done.LogLines)
	}
	if next, err := h.appendLog(leased, 3, "d", "e"); err != nil || next != 5 {
		h.t.Fatalf("retried append after end = %d, %v; want 5", next, err)
	}
	_, err = h.appendLog(leased, 5, "late")
	wantCode(h.t, "append after end", err, errand.ErrLeaseLost)
}

func testLogStaleLease(h *harness) {
	d1, d2 := h.register("d1"), h.register("d2")
	h.create(task("t"))
	first := h.acquireOne(d1, "t")
	if _, err := h.appendLog(first, 0, "one"); err != nil {
		h.t.Fatal(err)
	}
	h.tick(time.Hour)
	h.touch("d2")
	h.sweep(time.Minute, 0)
	_, err := h.appendLog(first, 1, "two")
	wantCode(h.t, "append after the lease expired", err, errand.ErrLeaseLost)
	second := h.acquireOne(d2, "t")
	_, err = h.appendLog(first, 1, "two")
	wantCode(h.t, "append under the previous lease", err, errand.ErrLeaseLost)
	if next, err := h.appendLog(second, 1, "retry"); err != nil || next != 2 {
		h.t.Fatalf("append under the new lease = %d, %v", next, err)
	}
}

func testLogSeal(h *harness) {
	d := h.register("d1")
	h.create(task("a"), task("b"), task("c"), task("active"))
	leased := map[string]*errand.Task{}
	for _, id := range []string{"a", "b", "c"} {
		leased[id] = h.acquireOne(d, id)
		if _, err := h.appendLog(leased[id], 0, fmt.Sprintf("line of %s", id)); err != nil {
			h.t.Fatal(err)
		}
		h.report(leased[id], errand.StateRunning)
	}
	for i, id := range []string{"b", "a", "c"} {
		h.tick(time.Second)
		h.report(leased[id], []errand.State{errand.StateSucceeded, errand.StateFailed, errand.StateSucceeded}[i])
	}
	h.acquireOne(d, "active")
	ids, err := h.s.LogSealList(h.ctx, 10)
	if err != nil {
		h.t.Fatal(err)
	}
	if !sameStrings(ids, []string{"b", "a", "c"}) {
		h.t.Fatalf("LogSealList = %v, want [b a c] (oldest ended first)", ids)
	}
	if ids, _ := h.s.LogSealList(h.ctx, 2); !sameStrings(ids, []string{"b", "a"}) {
		h.t.Fatalf("LogSealList(2) = %v", ids)
	}
	if _, sealed, err := h.s.LogObjects(h.ctx, "b"); err != nil || sealed {
		h.t.Fatalf("LogObjects before seal: sealed %v err %v", sealed, err)
	}
	objects := []store.LogObject{
		{Key: "logs/b/0", FirstLine: 0, Lines: 1, Size: 9},
		{Key: "logs/b/1", FirstLine: 1, Lines: 0, Size: 0},
	}
	for i := 0; i < 2; i++ { // sealing twice is a no-op
		if err := h.s.LogSeal(h.ctx, store.LogSealParams{TaskID: "b", Objects: objects[:2-i]}); err != nil {
			h.t.Fatalf("LogSeal #%d: %v", i+1, err)
		}
	}
	got, sealed, err := h.s.LogObjects(h.ctx, "b")
	if err != nil || !sealed || len(got) != 2 || got[0] != objects[0] || got[1] != objects[1] {
		h.t.Fatalf("LogObjects = %+v sealed %v err %v", got, sealed, err)
	}
	if lines := h.readLog("b", 0, 0); len(lines) != 0 {
		h.t.Fatalf("sealed log still has lines %q", lines)
	}
	if lines := h.readLog("a", 0, 0); !sameStrings(lines, []string{"line of a"}) {
		h.t.Fatalf("unsealed log of a = %q", lines)
	}
	if ids, _ := h.s.LogSealList(h.ctx, 10); !sameStrings(ids, []string{"a", "c"}) {
		h.t.Fatalf("LogSealList after seal = %v", ids)
	}
	err = h.s.LogSeal(h.ctx, store.LogSealParams{TaskID: "active", Objects: objects})
	wantCode(h.t, "seal of an active task", err, errand.ErrIllegalTransition)
	if _, _, err := h.s.LogObjects(h.ctx, "missing"); !errors.Is(err, errand.ErrNotFound) {
		h.t.Fatalf("LogObjects of missing task: err = %v", err)
	}
}
