package sqlite_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/sqlite"
)

// TestApprovalGatesMigration opens a database written when the manager
// leased approval gates to a delegate of its own: its gates become
// waiting gates, one that had its approvers succeeds and opens its stage.
func TestApprovalGatesMigration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "errand.db")
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	gate := func(id, stage string, approvers int, deps ...string) *errand.Task {
		tk := &errand.Task{ID: id, Type: "errand.approval",
			Data:     json.RawMessage(fmt.Sprintf(`{"stage":%q,"approvers":%d}`, stage, approvers)),
			Selector: errand.Selector{Labels: map[string]string{"errand.internal": "approval", "errand.gate": id}}}
		for _, d := range deps {
			tk.DependsOn = append(tk.DependsOn, errand.Dependency{Task: d})
		}
		return tk
	}
	after := func(id, dep string) *errand.Task {
		return &errand.Task{ID: id, Type: "x", DependsOn: []errand.Dependency{{Task: dep}}}
	}
	if _, err := s.RunCreate(ctx, store.RunCreateParams{Now: now, Run: &store.Run{ID: "r"}, Tasks: []*errand.Task{
		gate("g1", "one", 2), after("i1", "g1"),
		gate("g2", "two", 1), after("i2", "g2"),
		{ID: "b", Type: "x"}, gate("g3", "three", 1, "b"), after("i3", "g3"),
	}}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct{ stage, who string }{{"one", "alice"}, {"two", "alice"}} {
		if _, err := s.RunApprove(ctx, store.RunApproveParams{RunID: "r", Stage: a.stage, Approver: a.who, Now: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Back to the schema before gates were in the state machine: g2 was
	// being released, leased by the manager's approval delegate.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`ALTER TABLE tasks DROP COLUMN approvals`,
		`ALTER TABLE tasks DROP COLUMN approved`,
		`DELETE FROM schema_migrations WHERE name = '0007_approval_gates.sql'`,
		`INSERT INTO delegates (id, name, state, token_hash, created_at, last_heartbeat) VALUES ('manager-approvals', 'manager-approvals', 'active', 'h', 1, 1)`,
		`UPDATE tasks SET state = 'leased', attempt = 1, delegate_id = 'manager-approvals', lease_token = 'tok' WHERE id = 'g2'`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, path)
	for _, want := range []struct {
		id                  string
		state               errand.State
		approvals, approved int
	}{
		{"g1", errand.StateWaiting, 2, 1},
		{"i1", errand.StatePending, 0, 0},
		{"g2", errand.StateSucceeded, 1, 1},
		{"i2", errand.StateQueued, 0, 0},
		{"g3", errand.StatePending, 1, 0},
	} {
		tk, err := s.TaskGet(ctx, want.id)
		if err != nil {
			t.Fatal(err)
		}
		if tk.State != want.state || tk.Approvals != want.approvals || tk.Approved != want.approved {
			t.Errorf("migrated %s = %s %d/%d, want %s %d/%d", want.id, tk.State, tk.Approved, tk.Approvals,
				want.state, want.approved, want.approvals)
		}
		if want.id == "g2" && (tk.FinishedAt == nil || !tk.FinishedAt.Equal(now.Add(time.Minute)) || tk.DelegateID != "") {
			t.Errorf("migrated g2 finished %v by %q, want at the last approval with no delegate", tk.FinishedAt, tk.DelegateID)
		}
	}
	if _, err := s.DelegateGet(ctx, "manager-approvals"); !errandIsNotFound(err) {
		t.Errorf("approval delegate after migration: %v, want not found", err)
	}
	// The migrated gate takes approvals like a new one.
	if _, err := s.RunApprove(ctx, store.RunApproveParams{RunID: "r", Stage: "one", Approver: "bob", TaskID: "g1", Now: now}); err != nil {
		t.Fatal(err)
	}
	if tk, _ := s.TaskGet(ctx, "i1"); tk.State != errand.StateQueued {
		t.Errorf("stage one after its second approver: %s, want queued", tk.State)
	}
}

func errandIsNotFound(err error) bool { return errors.Is(err, errand.ErrNotFound) }
