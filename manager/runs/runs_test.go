package runs

import (
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/sqlite"
	"github.com/errandci/errand/pipeline"
)

func newService(t *testing.T) (*Service, store.Store) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "errand.db"))
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	sched, err := scheduler.New(scheduler.Config{HeartbeatInterval: time.Second, LeaseTTL: 4 * time.Second,
		MaxWait: time.Second, SweepInterval: time.Hour, HeartbeatFlushInterval: time.Hour, Log: log}, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sched.Stop(ctx)
		_ = st.Close()
	})
	s, err := New(Config{MaxRunStages: 10, MaxStageSteps: 10, MaxRunTasks: 100, Log: log}, st, sched)
	if err != nil {
		t.Fatal(err)
	}
	return s, st
}

// A run stored before plans named their gates lists them by stage in
// the plan's gates: its gated stage still reads waiting from the gate,
// and approving it releases the stage.
func TestOlderPlanGates(t *testing.T) {
	s, st := newService(t)
	ctx := context.Background()
	cfg, err := pipeline.Parse("config.yml", []byte("stages:\n  - name: deploy\n    approval: {approvers: 1}\n    steps:\n      - name: ship\n        commands: [x]\n"), pipeline.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := pipeline.Expand(cfg, pipeline.ExpandOptions{RunID: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	// As such a run was stored: the gate in Gates, none in the stage.
	old := &runPlan{Plan: *plan, Gates: map[string]string{"deploy": plan.Stages[0].GateID}}
	initID := plan.Stages[0].InitializeID
	old.Stages[0].GateID = ""
	raw, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "gate_id") {
		t.Fatalf("plan still names its gate in the stage: %s", raw)
	}
	run := &store.Run{ID: "r1", Filename: "config.yml", Config: []byte("x"), Plan: raw, StageCount: 1}
	if _, err := st.RunCreate(ctx, store.RunCreateParams{Run: run, Tasks: plan.Tasks, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	view, err := s.Get(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if view.Stages[0].State != string(pipeline.StageWaiting) {
		t.Fatalf("stage %s, want waiting", view.Stages[0].State)
	}
	if err := s.Approve(ctx, "r1", "deploy", "alice"); err != nil {
		t.Fatal(err)
	}
	init, err := st.TaskGet(ctx, initID)
	if err != nil || init.State != errand.StateQueued {
		t.Fatalf("initialize after the approval: %+v, %v", init, err)
	}
	if err := s.Approve(ctx, "r1", "deploy", "bob"); errand.ErrorCode(err) != errand.CodeConflict {
		t.Fatalf("approving a released stage = %v, want conflict", err)
	}
}
