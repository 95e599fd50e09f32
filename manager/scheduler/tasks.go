package scheduler

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/oklog/ulid/v2"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// Create validates a batch of tasks as its author wrote it
// (errand.NewTasks; problems' paths start "tasks[i]."), stores it and
// returns the tasks as stored. Defaults are applied here: a new id (a
// ULID) for a task without one, DefaultMaxAttempts for one that does not
// say.
func (s *Scheduler) Create(ctx context.Context, tasks []*errand.Task) ([]*errand.Task, error) {
	return s.create(ctx, errand.NewTasks{Tasks: tasks})
}

// CreateOne is Create for a single task: its problems' paths name its
// fields alone.
func (s *Scheduler) CreateOne(ctx context.Context, t *errand.Task) (*errand.Task, error) {
	created, err := s.create(ctx, errand.NewTasks{Tasks: []*errand.Task{t}, Single: true})
	if err != nil {
		return nil, err
	}
	return created[0], nil
}

func (s *Scheduler) create(ctx context.Context, req errand.NewTasks) ([]*errand.Task, error) {
	// The caller's problem, said as it is: not wrapped in what was
	// attempted.
	if err := req.Validate(); err != nil {
		return nil, err
	}
	tasks := req.Tasks
	for _, t := range tasks {
		if t.ID == "" {
			t.ID = ulid.Make().String()
		}
		if t.MaxAttempts == 0 {
			t.MaxAttempts = errand.DefaultMaxAttempts
		}
	}
	created, err := s.store.TaskCreate(ctx, store.TaskCreateParams{Tasks: tasks, Now: s.now()})
	if err != nil {
		return nil, fmt.Errorf("create %d tasks: %w", len(tasks), err)
	}
	if s.log.IsLevelEnabled(logrus.DebugLevel) {
		s.log.WithField("tasks", len(created)).Debug("tasks created")
	}
	return created, nil
}

// CreateRun stores a pipeline run with its tasks.
func (s *Scheduler) CreateRun(ctx context.Context, run *store.Run, tasks []*errand.Task) ([]*errand.Task, error) {
	created, err := s.store.RunCreate(ctx, store.RunCreateParams{Run: run, Tasks: tasks, Now: s.now()})
	if err != nil {
		return nil, fmt.Errorf("create run %s: %w", run.ID, err)
	}
	return created, nil
}

// Cancel cancels task id: at once when no delegate holds it, otherwise
// the delegate holding it is told.
func (s *Scheduler) Cancel(ctx context.Context, id string) (*errand.Task, error) {
	t, err := s.store.TaskCancel(ctx, store.TaskCancelParams{TaskID: id, Now: s.now()})
	if err != nil {
		return nil, fmt.Errorf("cancel task %s: %w", id, err)
	}
	fields := logrus.Fields{"task_id": id, "state": t.State}
	if !t.State.Terminal() && t.DelegateID != "" {
		fields["delegate_id"] = t.DelegateID
	}
	s.log.WithFields(fields).Info("task cancelled")
	return t, nil
}

// Report is a delegate's report of a task it holds.
type Report struct {
	TaskID     string
	DelegateID string
	LeaseToken string
	State      errand.State
	Result     json.RawMessage
	Error      *errand.Error
}

// Report records what a delegate reports of a task it holds, with the
// values of the task's secrets masked in the result and the error.
func (s *Scheduler) Report(ctx context.Context, r Report) (*errand.Task, error) {
	s.Heard(r.DelegateID)
	result, e, err := s.maskReport(ctx, r.TaskID, r.Result, r.Error)
	if err != nil {
		return nil, fmt.Errorf("report %s on task %s: %w", r.State, r.TaskID, err)
	}
	t, err := s.store.TaskReport(ctx, store.TaskReportParams{
		TaskID: r.TaskID, DelegateID: r.DelegateID, LeaseToken: r.LeaseToken,
		State: r.State, Result: result, Error: e, Now: s.now(),
	})
	if err != nil {
		return nil, fmt.Errorf("report %s on task %s: %w", r.State, r.TaskID, err)
	}
	if t.State.Terminal() && s.log.IsLevelEnabled(logrus.DebugLevel) {
		s.log.WithFields(logrus.Fields{"task_id": r.TaskID, "delegate_id": r.DelegateID, "state": t.State}).Debug("task ended")
	}
	return t, nil
}
