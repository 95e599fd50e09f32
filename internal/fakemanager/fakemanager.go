// Package fakemanager is a manager in memory for the tests of the
// delegate side: it speaks client.DelegateClient, hands out the tasks a
// test pushes and records what the delegate says.
package fakemanager

import (
	"context"
	"sync"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

// Manager is an in-memory client.DelegateClient: it hands out queued
// tasks, records what the delegate says and fails on demand. Lock it to
// read or change its fields while a delegate runs.
type Manager struct {
	sync.Mutex
	// RegToken is the registration token; Token is the one the delegate
	// sends (Register fails unauthorized when they differ).
	RegToken, Token string
	// Queue holds the tasks to hand out; PendingCancel the ids the next
	// acquire answer tells the delegate to cancel.
	Queue         []*errand.Task
	PendingCancel []string
	// AcquireMax records each acquire's Max; Acquires counts them;
	// AcquireErr, when set, fails every acquire.
	AcquireMax []int
	// AcquireCarried records how many reports each acquire carried.
	AcquireCarried []int
	AcquireErr     error
	Acquires       int
	// Statuses and Logs record the reports and log lines of each task.
	Statuses map[string][]client.StatusUpdate
	Logs     map[string][]string
	// LostLogs are the tasks whose log appends and final reports get
	// lease_lost.
	LostLogs map[string]bool
	// Beats records the heartbeats; BeatCancel is what the next one
	// answers to cancel.
	Beats      []client.HeartbeatRequest
	BeatCancel []string
	// Registered counts registrations.
	Registered int
	// FailStatus fails this many outcome reports (or calls carrying
	// one) with unavailable.
	FailStatus int
	// Batches records every call that carried reports, in order.
	Batches []Batch
	// ReportGate, when set, holds every call to Reports until it can
	// receive from it (or the call's context ends).
	ReportGate chan struct{}
	wake       chan struct{}
}

// New returns a manager with registration token "R" that registers the
// delegate as d1 with a 20ms heartbeat interval.
func New() *Manager {
	return &Manager{
		RegToken: "R", Token: "R",
		Statuses: map[string][]client.StatusUpdate{},
		Logs:     map[string][]string{},
		LostLogs: map[string]bool{},
		wake:     make(chan struct{}, 1),
	}
}

// Push queues tasks and wakes a waiting acquire.
func (f *Manager) Push(tasks ...*errand.Task) {
	f.Lock()
	f.Queue = append(f.Queue, tasks...)
	f.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// CancelTask has the next acquire answer tell the delegate to cancel id.
func (f *Manager) CancelTask(id string) {
	f.Lock()
	f.PendingCancel = append(f.PendingCancel, id)
	f.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Register registers the delegate as d1 with token D.
func (f *Manager) Register(_ context.Context, r *client.RegisterRequest) (*client.Registration, error) {
	f.Lock()
	defer f.Unlock()
	if f.Token != f.RegToken {
		return nil, errand.Errorf(errand.CodeUnauthorized, "bad registration token")
	}
	f.Registered++
	return &client.Registration{Delegate: errand.Delegate{ID: "d1", Name: r.Name}, Token: "D", HeartbeatInterval: errand.Duration(20 * time.Millisecond)}, nil
}

// Heartbeat records r and answers BeatCancel.
func (f *Manager) Heartbeat(_ context.Context, id string, r *client.HeartbeatRequest) (*client.HeartbeatResponse, error) {
	f.Lock()
	defer f.Unlock()
	if id != "d1" {
		return nil, errand.Errorf(errand.CodeNotFound, "no delegate %s", id)
	}
	f.Beats = append(f.Beats, *r)
	c := f.BeatCancel
	f.BeatCancel = nil
	return &client.HeartbeatResponse{Cancel: c, HeartbeatInterval: errand.Duration(20 * time.Millisecond)}, nil
}

// Batch is one call that carried reports: Via is "reports" or
// "acquire".
type Batch struct {
	Via     string
	Reports []client.Report
	Results []*client.ReportResult
}

// Acquire hands out up to r.Max queued tasks, waiting up to r.Wait; one
// that carries reports applies them and does not wait.
func (f *Manager) Acquire(ctx context.Context, _ string, r *client.AcquireRequest) (*client.AcquireResponse, error) {
	f.Lock()
	f.Acquires++
	f.AcquireMax = append(f.AcquireMax, r.Max)
	f.AcquireCarried = append(f.AcquireCarried, len(r.Reports))
	if err := f.AcquireErr; err != nil {
		f.Unlock()
		return nil, err
	}
	var results []*client.ReportResult
	if len(r.Reports) > 0 {
		var err error
		if results, err = f.reportsLocked("acquire", r.Reports); err != nil {
			f.Unlock()
			return nil, err
		}
	}
	f.Unlock()
	deadline := time.NewTimer(time.Duration(r.Wait))
	defer deadline.Stop()
	for {
		f.Lock()
		resp := &client.AcquireResponse{Cancel: f.PendingCancel, Reports: results}
		f.PendingCancel = nil
		n := min(r.Max, len(f.Queue))
		resp.Tasks, f.Queue = f.Queue[:n:n], f.Queue[n:]
		f.Unlock()
		if len(resp.Tasks) > 0 || len(resp.Cancel) > 0 || results != nil {
			return resp, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return resp, nil
		case <-f.wake:
		}
	}
}

// UpdateStatus records a report.
func (f *Manager) UpdateStatus(_ context.Context, id string, u *client.StatusUpdate) (*client.Task, error) {
	f.Lock()
	defer f.Unlock()
	if f.LostLogs[id] && u.State != errand.StateRunning {
		return nil, errand.Errorf(errand.CodeLeaseLost, "stale")
	}
	if u.State != errand.StateRunning && f.FailStatus > 0 {
		f.FailStatus--
		return nil, errand.Errorf(errand.CodeUnavailable, "manager down")
	}
	f.Statuses[id] = append(f.Statuses[id], *u)
	return &client.Task{ID: id, State: u.State}, nil
}

// Reports records a batch of reports, each as UpdateStatus would.
func (f *Manager) Reports(ctx context.Context, _ string, reports []*client.Report) ([]*client.ReportResult, error) {
	f.Lock()
	gate := f.ReportGate
	f.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.Lock()
	defer f.Unlock()
	return f.reportsLocked("reports", reports)
}

func (f *Manager) reportsLocked(via string, reports []*client.Report) ([]*client.ReportResult, error) {
	b := Batch{Via: via}
	outcome := false
	for _, r := range reports {
		b.Reports = append(b.Reports, *r)
		outcome = outcome || r.State != errand.StateRunning
	}
	if outcome && f.FailStatus > 0 {
		f.FailStatus--
		f.Batches = append(f.Batches, b)
		return nil, errand.Errorf(errand.CodeUnavailable, "manager down")
	}
	for _, r := range reports {
		res := &client.ReportResult{TaskID: r.TaskID, Status: client.ReportApplied, State: r.State}
		if f.LostLogs[r.TaskID] && r.State != errand.StateRunning {
			res = &client.ReportResult{TaskID: r.TaskID, Status: client.ReportRefused, Error: errand.Errorf(errand.CodeLeaseLost, "stale")}
		} else {
			f.Statuses[r.TaskID] = append(f.Statuses[r.TaskID], client.StatusUpdate{Lease: r.Lease, State: r.State, Result: r.Result, Error: r.Error})
		}
		b.Results = append(b.Results, res)
	}
	f.Batches = append(f.Batches, b)
	return b.Results, nil
}

// AppendLogs stores lines at their offset.
func (f *Manager) AppendLogs(_ context.Context, id string, a *client.LogAppend) (*client.LogAppendResult, error) {
	f.Lock()
	defer f.Unlock()
	if f.LostLogs[id] {
		return nil, errand.Errorf(errand.CodeLeaseLost, "stale")
	}
	f.Logs[id] = append(f.Logs[id][:a.Offset], a.Lines...)
	return &client.LogAppendResult{Next: int64(len(f.Logs[id]))}, nil
}

// States returns the states reported for id, in order.
func (f *Manager) States(id string) []errand.State {
	f.Lock()
	defer f.Unlock()
	var out []errand.State
	for _, u := range f.Statuses[id] {
		out = append(out, u.State)
	}
	return out
}

// Last returns the last report of id.
func (f *Manager) Last(id string) client.StatusUpdate {
	f.Lock()
	defer f.Unlock()
	s := f.Statuses[id]
	if len(s) == 0 {
		return client.StatusUpdate{}
	}
	return s[len(s)-1]
}

// Authenticated returns the manager as seen with token.
func (f *Manager) Authenticated(string) client.DelegateClient { return f }

// ListDelegates lists the one delegate.
func (f *Manager) ListDelegates(context.Context) (*client.DelegateList, error) {
	return &client.DelegateList{Kind: "delegate_list", Items: []*client.Delegate{{ID: "d1"}}}, nil
}

// Deregister accepts.
func (f *Manager) Deregister(context.Context, string) error { return nil }

var _ client.DelegateClient = (*Manager)(nil)
