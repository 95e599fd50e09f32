// Package drivertest pins the contract of store.Driver: what the engine
// relies on from every driver, row by row, below the behaviour storetest
// checks through the engine. A driver is done when Run and storetest
// both pass.
package drivertest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// Run runs the suite, each subtest on a fresh driver from open. open must
// register any cleanup (closing the driver) with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) store.Driver) {
	tests := []struct {
		name string
		fn   func(t *testing.T, d store.Driver)
	}{
		{"InsertAndRead", testInsertAndRead},
		{"InsertConflictWritesNothing", testInsertConflict},
		{"Edges", testEdges},
		{"UpdateIsConditional", testUpdateConditional},
		{"UpdatesTogether", testUpdates},
		{"RollbackDeliversNothing", testRollback},
		{"Runs", testRuns},
		{"DelegatesLoseOnce", testDelegatesLose},
		{"LogAddAndSeal", testLogAddAndSeal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func row(id string, st errand.State, deps ...string) *store.TaskRow {
	r := &store.TaskRow{Task: errand.Task{ID: id, Type: "test.noop", MaxAttempts: 3, State: st, CreatedAt: t0}}
	for _, d := range deps {
		r.DependsOn = append(r.DependsOn, errand.Dependency{Task: d, Condition: errand.OnSuccess})
	}
	if st == errand.StateQueued {
		at := t0
		r.QueuedAt = &at
	}
	return r
}

func write(t *testing.T, d store.Driver, fn func(tx store.DriverTx) error) {
	t.Helper()
	if err := d.Write(context.Background(), fn); err != nil {
		t.Fatalf("Write: %v", err)
	}
}

func testInsertAndRead(t *testing.T, d store.Driver) {
	gate := row("g", errand.StatePending)
	gate.Approvals = 2
	gate.Data = []byte(`{"stage":"deploy"}`)
	write(t, d, func(tx store.DriverTx) error {
		return tx.TaskInsert([]*store.TaskRow{row("a", errand.StateQueued), row("b", errand.StatePending, "a"), gate})
	})
	write(t, d, func(tx store.DriverTx) error {
		a, err := tx.TaskRow("a")
		if err != nil {
			return err
		}
		if a.State != errand.StateQueued || a.MaxAttempts != 3 || a.QueuedAt == nil || !a.QueuedAt.Equal(t0) || !a.CreatedAt.Equal(t0) {
			t.Errorf("TaskRow a = %+v", a.Task)
		}
		if !a.HasDependents {
			t.Errorf("a has a dependent in the batch but HasDependents is false")
		}
		g, err := tx.TaskRow("g")
		if err != nil {
			return err
		}
		if g.Approvals != 2 || string(g.Data) != `{"stage":"deploy"}` {
			t.Errorf("TaskRow g = approvals %d data %s", g.Approvals, g.Data)
		}
		if _, err := tx.TaskRow("nope"); !errors.Is(err, errand.ErrNotFound) {
			t.Errorf("TaskRow unknown: err = %v, want not found", err)
		}
		states, err := tx.TaskStates([]string{"a", "b", "nope"})
		if err != nil {
			return err
		}
		if len(states) != 2 || states["a"] != errand.StateQueued || states["b"] != errand.StatePending {
			t.Errorf("TaskStates = %v", states)
		}
		return nil
	})
	got, err := d.TaskList(context.Background(), store.TaskListParams{})
	if err != nil || len(got) != 3 || got[0].ID != "a" || got[1].ID != "b" || got[2].ID != "g" {
		t.Fatalf("TaskList after insert = %v, %v; want a, b, g in insert order", got, err)
	}
}

func testInsertConflict(t *testing.T, d store.Driver) {
	write(t, d, func(tx store.DriverTx) error { return tx.TaskInsert([]*store.TaskRow{row("a", errand.StateQueued)}) })
	err := d.Write(context.Background(), func(tx store.DriverTx) error {
		return tx.TaskInsert([]*store.TaskRow{row("new", errand.StateQueued), row("a", errand.StateQueued)})
	})
	var e *errand.Error
	if !errors.As(err, &e) || e.Code != errand.CodeConflict || e.Reason != "tasks[1].id: task a exists" {
		t.Fatalf("insert of an existing id: err = %v, want conflict at tasks[1].id", err)
	}
	if _, err := d.TaskGet(context.Background(), "new"); !errors.Is(err, errand.ErrNotFound) {
		t.Fatalf("the refused batch left task new: %v", err)
	}
}

func testEdges(t *testing.T, d store.Driver) {
	write(t, d, func(tx store.DriverTx) error { return tx.TaskInsert([]*store.TaskRow{row("a", errand.StateQueued)}) })
	c := row("c", errand.StatePending, "b", "a")
	c.DependsOn[0].Condition = errand.Always
	write(t, d, func(tx store.DriverTx) error {
		return tx.TaskInsert([]*store.TaskRow{row("b", errand.StatePending, "a"), c, row("x", errand.StateQueued)})
	})
	write(t, d, func(tx store.DriverTx) error {
		a, err := tx.TaskRow("a")
		if err != nil {
			return err
		}
		if !a.HasDependents {
			t.Errorf("a, depended on by a later batch, has no dependents")
		}
		deps, err := tx.TaskPendingDependents("a")
		if err != nil {
			return err
		}
		if len(deps) != 2 || !(deps[0] == "b" && deps[1] == "c" || deps[0] == "c" && deps[1] == "b") {
			t.Errorf("pending dependents of a = %v, want b and c", deps)
		}
		out, err := tx.TaskDependencyOutcomes("c")
		if err != nil {
			return err
		}
		want := []errand.DependencyOutcome{{Condition: errand.Always, State: errand.StatePending}, {Condition: errand.OnSuccess, State: errand.StateQueued}}
		if len(out) != 2 || out[0] != want[0] || out[1] != want[1] {
			t.Errorf("dependency outcomes of c = %v, want %v (DependsOn order)", out, want)
		}
		return nil
	})
}

func testUpdateConditional(t *testing.T, d store.Driver) {
	write(t, d, func(tx store.DriverTx) error {
		return tx.TaskInsert([]*store.TaskRow{row("a", errand.StatePending), row("b", errand.StatePending, "a")})
	})
	write(t, d, func(tx store.DriverTx) error {
		prev, err := tx.TaskRow("b")
		if err != nil {
			return err
		}
		next := *prev
		next.State = errand.StateSkipped
		at := t0.Add(time.Second)
		next.FinishedAt = &at
		next.Error = &errand.Error{Code: errand.CodeDependencyUnmet, Reason: "unmet"}
		if err := tx.TaskUpdate(prev, &next); err != nil {
			return err
		}
		again := next
		again.State = errand.StateQueued
		if err := tx.TaskUpdate(prev, &again); !errors.Is(err, store.ErrStale) {
			t.Errorf("update from a row read before the last write: err = %v, want ErrStale", err)
		}
		deps, err := tx.TaskPendingDependents("a")
		if err != nil {
			return err
		}
		if len(deps) != 0 {
			t.Errorf("pending dependents of a after b ended = %v", deps)
		}
		return nil
	})
	b, err := d.TaskGet(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	if b.State != errand.StateSkipped || b.FinishedAt == nil || b.Error == nil || b.Error.Code != errand.CodeDependencyUnmet {
		t.Fatalf("b after update = %+v", b)
	}
}

func testUpdates(t *testing.T, d store.Driver) {
	ids := []string{"a", "b", "c", "d", "e"}
	write(t, d, func(tx store.DriverTx) error {
		var rows []*store.TaskRow
		for _, id := range ids {
			rows = append(rows, row(id, errand.StateQueued))
		}
		return tx.TaskInsert(rows)
	})
	at := t0.Add(time.Minute)
	change := func(tx store.DriverTx) ([]*store.TaskRow, []*store.TaskRow, error) {
		read, err := tx.TaskRows(append(ids, "nope"))
		if err != nil {
			return nil, nil, err
		}
		if len(read) != len(ids) {
			t.Errorf("TaskRows read %d rows, want %d (unknown ids absent)", len(read), len(ids))
		}
		var prev, next []*store.TaskRow
		for i, id := range ids {
			p := read[id]
			n := *p
			if i%2 == 0 {
				n.State, n.FinishedAt = errand.StateCancelled, &at
				n.Error = &errand.Error{Code: errand.CodeCancelled, Reason: "cancelled"}
			} else {
				n.State, n.Attempt, n.LeaseToken = errand.StateLeased, 1, "tok-"+id
			}
			prev, next = append(prev, p), append(next, &n)
		}
		return prev, next, nil
	}
	write(t, d, func(tx store.DriverTx) error {
		prev, next, err := change(tx)
		if err != nil {
			return err
		}
		if err := tx.TaskUpdates(prev, next); err != nil {
			return err
		}
		// The rows read before are no longer current.
		if err := tx.TaskUpdates(prev[:2], next[:2]); !errors.Is(err, store.ErrStale) {
			t.Errorf("TaskUpdates from rows read before the last write: err = %v, want ErrStale", err)
		}
		return nil
	})
	for i, id := range ids {
		tk, err := d.TaskGet(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		want := errand.StateCancelled
		if i%2 == 1 {
			want = errand.StateLeased
		}
		if tk.State != want || (want == errand.StateCancelled && (tk.FinishedAt == nil || tk.Error == nil)) ||
			(want == errand.StateLeased && tk.Attempt != 1) {
			t.Errorf("task %s after TaskUpdates = %+v, want %s", id, tk, want)
		}
	}
}

func testRollback(t *testing.T, d store.Driver) {
	var (
		mu  sync.Mutex
		got []store.Change
	)
	defer d.Subscribe(func(c store.Change) { mu.Lock(); got = append(got, c); mu.Unlock() })()
	boom := errors.New("boom")
	err := d.Write(context.Background(), func(tx store.DriverTx) error {
		if err := tx.TaskInsert([]*store.TaskRow{row("a", errand.StateQueued)}); err != nil {
			return err
		}
		tx.Emit(store.Change{Kind: store.ChangeTaskQueued, TaskID: "a", TaskType: "test.noop"})
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Write = %v, want the function's error", err)
	}
	if _, err := d.TaskGet(context.Background(), "a"); !errors.Is(err, errand.ErrNotFound) {
		t.Fatalf("rolled back insert left task a: %v", err)
	}
	write(t, d, func(tx store.DriverTx) error {
		if err := tx.TaskInsert([]*store.TaskRow{row("b", errand.StateQueued)}); err != nil {
			return err
		}
		tx.Emit(store.Change{Kind: store.ChangeTaskQueued, TaskID: "b", TaskType: "test.noop"})
		return nil
	})
	want := store.Change{Kind: store.ChangeTaskQueued, TaskID: "b", TaskType: "test.noop"}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		var first store.Change
		if n > 0 {
			first = got[0]
		}
		mu.Unlock()
		if n > 0 {
			if first != want || n != 1 {
				t.Fatalf("changes delivered = %+v, want only %+v", got, want)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("committed change not delivered")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testRuns(t *testing.T, d store.Driver) {
	write(t, d, func(tx store.DriverTx) error { return tx.RunInsert(&store.Run{ID: "r", Filename: "config.yml"}, t0) })
	err := d.Write(context.Background(), func(tx store.DriverTx) error { return tx.RunInsert(&store.Run{ID: "r"}, t0) })
	if !errors.Is(err, errand.ErrConflict) {
		t.Fatalf("RunInsert of an existing id: err = %v, want conflict", err)
	}
	approve := func(who string) (bool, int) {
		t.Helper()
		var (
			added bool
			n     int
		)
		write(t, d, func(tx store.DriverTx) error {
			var err error
			if added, err = tx.RunApprovalAdd(store.RunApproveParams{RunID: "r", Stage: "deploy", Approver: who, Now: t0}); err != nil {
				return err
			}
			n, err = tx.RunApprovalCount("r", "deploy")
			return err
		})
		return added, n
	}
	if added, n := approve("alice"); !added || n != 1 {
		t.Fatalf("first approval: added %v count %d", added, n)
	}
	if added, n := approve("alice"); added || n != 1 {
		t.Fatalf("same approver again: added %v count %d, want not added, 1", added, n)
	}
	if added, n := approve("bob"); !added || n != 2 {
		t.Fatalf("second approver: added %v count %d", added, n)
	}
	err = d.Write(context.Background(), func(tx store.DriverTx) error {
		_, err := tx.RunApprovalAdd(store.RunApproveParams{RunID: "nope", Stage: "deploy", Approver: "alice", Now: t0})
		return err
	})
	if !errors.Is(err, errand.ErrNotFound) {
		t.Fatalf("approval of an unknown run: err = %v, want not found", err)
	}
	r, err := d.RunGet(context.Background(), "r")
	if err != nil || !r.CreatedAt.Equal(t0) || len(r.Approvals["deploy"]) != 2 {
		t.Fatalf("RunGet = %+v, %v", r, err)
	}
}

func testDelegatesLose(t *testing.T, d store.Driver) {
	ctx := context.Background()
	for i, id := range []string{"old", "fresh"} {
		if _, err := d.DelegateRegister(ctx, store.DelegateRegisterParams{Delegate: &errand.Delegate{ID: id, Name: id},
			TokenHash: "h", Now: t0.Add(time.Duration(i) * time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	lose := func() []string {
		var ids []string
		write(t, d, func(tx store.DriverTx) error {
			var err error
			ids, err = tx.DelegatesLose(t0.Add(30 * time.Second))
			return err
		})
		return ids
	}
	if got := lose(); len(got) != 1 || got[0] != "old" {
		t.Fatalf("DelegatesLose = %v, want [old]", got)
	}
	if got := lose(); len(got) != 0 {
		t.Fatalf("DelegatesLose again = %v, want none: a delegate is lost once", got)
	}
	write(t, d, func(tx store.DriverTx) error {
		active, err := tx.DelegatesActive("")
		if err != nil {
			return err
		}
		if len(active) != 1 || active[0].ID != "fresh" {
			t.Errorf("DelegatesActive = %v, want [fresh]", active)
		}
		if err := tx.DelegateRemove("old"); err != nil {
			return err
		}
		if err := tx.DelegateRemove("old"); !errors.Is(err, errand.ErrNotFound) {
			t.Errorf("DelegateRemove twice: err = %v, want not found", err)
		}
		return nil
	})
}

func testLogAddAndSeal(t *testing.T, d store.Driver) {
	ctx := context.Background()
	write(t, d, func(tx store.DriverTx) error { return tx.TaskInsert([]*store.TaskRow{row("a", errand.StateSucceeded)}) })
	write(t, d, func(tx store.DriverTx) error { return tx.LogAdd("a", 0, []string{"one", "two"}) })
	write(t, d, func(tx store.DriverTx) error { return tx.LogAdd("a", 2, []string{"three"}) })
	var tail store.LogTail
	write(t, d, func(tx store.DriverTx) error {
		var err error
		tail, err = tx.LogTail("a")
		return err
	})
	if tail.Lines != 3 || tail.Sealed || tail.State != errand.StateSucceeded {
		t.Fatalf("LogTail after two adds = %+v, want 3 lines, not sealed, succeeded", tail)
	}
	if lines, err := d.LogRead(ctx, store.LogReadParams{TaskID: "a", Offset: 1}); err != nil || len(lines) != 2 || lines[0] != "two" || lines[1] != "three" {
		t.Fatalf("LogRead from 1 = %q, %v", lines, err)
	}
	objects := []store.LogObject{{Key: "logs/a/0", FirstLine: 0, Lines: 3, Size: 14}}
	write(t, d, func(tx store.DriverTx) error { return tx.LogSeal("a", objects) })
	got, sealed, err := d.LogObjects(ctx, "a")
	if err != nil || !sealed || len(got) != 1 || got[0] != objects[0] {
		t.Fatalf("LogObjects after seal = %+v, %v, %v", got, sealed, err)
	}
	if lines, err := d.LogRead(ctx, store.LogReadParams{TaskID: "a"}); err != nil || len(lines) != 0 {
		t.Fatalf("LogRead after seal = %q, %v: the lines should be gone from the database", lines, err)
	}
	write(t, d, func(tx store.DriverTx) error {
		var err error
		tail, err = tx.LogTail("a")
		return err
	})
	if !tail.Sealed {
		t.Fatalf("LogTail after seal = %+v, want sealed", tail)
	}
	err = d.Write(ctx, func(tx store.DriverTx) error {
		_, err := tx.LogTail("nope")
		return err
	})
	if !errors.Is(err, errand.ErrNotFound) {
		t.Fatalf("LogTail of an unknown task: err = %v, want not found", err)
	}
}
