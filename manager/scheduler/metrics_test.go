package scheduler

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/clock"
	"github.com/errandci/errand/manager/store"
)

// A batch announces its creation once per type and state, with a count,
// and errand_tasks_created_total counts from that announcement.
func TestCreatedCountedFromChanges(t *testing.T) {
	clk := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	s := newScheduler(t, clk)
	var (
		mu      sync.Mutex
		created []store.Change
	)
	defer s.store.Subscribe(func(c store.Change) {
		if c.Kind == store.ChangeTaskCreated {
			mu.Lock()
			created = append(created, c)
			mu.Unlock()
		}
	})()
	_, err := s.Create(context.Background(), []*errand.Task{
		{ID: "a", Type: "x"}, {ID: "b", Type: "x"},
		{ID: "c", Type: "x", DependsOn: []errand.Dependency{{Task: "a"}}},
		{ID: "d", Type: "y"},
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := fmt.Sprintf("%+v", created)
	mu.Unlock()
	want := fmt.Sprintf("%+v", []store.Change{
		{Kind: store.ChangeTaskCreated, TaskType: "x", TaskState: errand.StateQueued, Count: 2},
		{Kind: store.ChangeTaskCreated, TaskType: "x", TaskState: errand.StatePending, Count: 1},
		{Kind: store.ChangeTaskCreated, TaskType: "y", TaskState: errand.StateQueued, Count: 1},
	})
	if got != want {
		t.Errorf("creation changes = %s, want %s", got, want)
	}
	for state, want := range map[errand.State]float64{errand.StateQueued: 3, errand.StatePending: 1} {
		if n := createdCount(t, s, state); n != want {
			t.Errorf("errand_tasks_created_total{state=%q} = %v, want %v", state, n, want)
		}
	}
	// A change another manager made is that manager's to count.
	s.metrics.change(store.Change{Kind: store.ChangeTaskCreated, TaskType: "x", TaskState: errand.StateQueued, Count: 5, Remote: true})
	if n := createdCount(t, s, errand.StateQueued); n != 3 {
		t.Errorf("errand_tasks_created_total{queued} = %v after a remote creation, want 3", n)
	}
}

func createdCount(t *testing.T, s *Scheduler, state errand.State) float64 {
	t.Helper()
	var m dto.Metric
	if err := s.metrics.tasksCreated.WithLabelValues(string(state)).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
