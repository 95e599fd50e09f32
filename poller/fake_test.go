package poller_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

// fakeManager is an in-test client.Client: it hands out queued tasks,
// records what the delegate says and fails on demand.
type fakeManager struct {
	mu         sync.Mutex
	regToken   string
	token      string // the token this client sends
	queue      []*errand.Task
	pendingCxl []string
	acquireMax []int
	acquireErr error
	acquires   int
	statuses   map[string][]client.StatusUpdate
	logs       map[string][]string
	lostLogs   map[string]bool // tasks whose log appends get lease_lost
	beats      []client.HeartbeatRequest
	beatCancel []string
	registered int
	failStatus int // fail this many outcome reports with unavailable
	wake       chan struct{}
}

func newFake() *fakeManager {
	return &fakeManager{
		regToken: "R", token: "R",
		statuses: map[string][]client.StatusUpdate{},
		logs:     map[string][]string{},
		lostLogs: map[string]bool{},
		wake:     make(chan struct{}, 1),
	}
}

var errNotHere = errors.New("not used by the delegate")

func (f *fakeManager) push(tasks ...*errand.Task) {
	f.mu.Lock()
	f.queue = append(f.queue, tasks...)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *fakeManager) cancelTask(id string) {
	f.mu.Lock()
	f.pendingCxl = append(f.pendingCxl, id)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *fakeManager) Register(_ context.Context, r *client.RegisterRequest) (*client.Registration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.token != f.regToken {
		return nil, errand.Errorf(errand.CodeUnauthorized, "bad registration token")
	}
	f.registered++
	return &client.Registration{Delegate: errand.Delegate{ID: "d1", Name: r.Name}, Token: "D", HeartbeatInterval: errand.Duration(20 * time.Millisecond)}, nil
}

func (f *fakeManager) Heartbeat(_ context.Context, id string, r *client.HeartbeatRequest) (*client.HeartbeatResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id != "d1" {
		return nil, errand.Errorf(errand.CodeNotFound, "no delegate %s", id)
	}
	f.beats = append(f.beats, *r)
	c := f.beatCancel
	f.beatCancel = nil
	return &client.HeartbeatResponse{Cancel: c, HeartbeatInterval: errand.Duration(20 * time.Millisecond)}, nil
}

func (f *fakeManager) Acquire(ctx context.Context, _ string, r *client.AcquireRequest) (*client.AcquireResponse, error) {
	f.mu.Lock()
	f.acquires++
	f.acquireMax = append(f.acquireMax, r.Max)
	if err := f.acquireErr; err != nil {
		f.mu.Unlock()
		return nil, err
	}
	f.mu.Unlock()
	deadline := time.NewTimer(time.Duration(r.Wait))
	defer deadline.Stop()
	for {
		f.mu.Lock()
		resp := &client.AcquireResponse{Cancel: f.pendingCxl}
		f.pendingCxl = nil
		n := min(r.Max, len(f.queue))
		resp.Tasks, f.queue = f.queue[:n:n], f.queue[n:]
		f.mu.Unlock()
		if len(resp.Tasks) > 0 || len(resp.Cancel) > 0 {
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

func (f *fakeManager) UpdateStatus(_ context.Context, id string, u *client.StatusUpdate) (*client.Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lostLogs[id] && u.State != errand.StateRunning {
		return nil, errand.Errorf(errand.CodeLeaseLost, "stale")
	}
	if u.State != errand.StateRunning && f.failStatus > 0 {
		f.failStatus--
		return nil, errand.Errorf(errand.CodeUnavailable, "manager down")
	}
	f.statuses[id] = append(f.statuses[id], *u)
	return &client.Task{ID: id, State: u.State}, nil
}

func (f *fakeManager) AppendLogs(_ context.Context, id string, a *client.LogAppend) (*client.LogAppendResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lostLogs[id] {
		return nil, errand.Errorf(errand.CodeLeaseLost, "stale")
	}
	f.logs[id] = append(f.logs[id][:a.Offset], a.Lines...)
	return &client.LogAppendResult{Next: int64(len(f.logs[id]))}, nil
}

func (f *fakeManager) states(id string) []errand.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []errand.State
	for _, u := range f.statuses[id] {
		out = append(out, u.State)
	}
	return out
}

func (f *fakeManager) last(id string) client.StatusUpdate {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.statuses[id]
	if len(s) == 0 {
		return client.StatusUpdate{}
	}
	return s[len(s)-1]
}

func (f *fakeManager) Deregister(context.Context, string) error { return nil }
func (f *fakeManager) CreateTasks(context.Context, []*client.TaskSpec) ([]*client.Task, error) {
	return nil, errNotHere
}
func (f *fakeManager) GetTask(context.Context, string) (*client.Task, error) { return nil, errNotHere }
func (f *fakeManager) ListTasks(context.Context, *client.TaskFilter) (*client.TaskList, error) {
	return nil, errNotHere
}
func (f *fakeManager) CancelTask(context.Context, string) error { return errNotHere }
func (f *fakeManager) TaskLogs(context.Context, string, *client.LogOptions, io.Writer) error {
	return errNotHere
}
func (f *fakeManager) ListDelegates(context.Context) (*client.DelegateList, error) {
	return nil, errNotHere
}
func (f *fakeManager) GetDelegate(context.Context, string) (*client.Delegate, error) {
	return nil, errNotHere
}
func (f *fakeManager) DrainDelegate(context.Context, string) error { return errNotHere }

var _ client.Client = (*fakeManager)(nil)
