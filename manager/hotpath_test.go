package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/manager/store"
)

// runningTask creates a task, leases it to d and reports it running.
func (e *env) runningTask(d delegate, spec *client.TaskSpec) (*errand.Task, string) {
	e.t.Helper()
	task := e.create(spec)
	a := e.acquire(d, "max=1")
	if len(a.Tasks) != 1 || a.Tasks[0].ID != task.ID {
		e.t.Fatalf("acquire = %+v, want task %s", a, task.ID)
	}
	lease := a.Tasks[0].Lease.Token
	e.must(200, "POST", "/api/v1/tasks/"+task.ID+"/status", d.token, &client.StatusUpdate{Lease: lease, State: errand.StateRunning}, nil)
	return task, lease
}

// asyncAcquire starts an acquire and returns where its answer arrives.
func (e *env) asyncAcquire(d delegate, query string) <-chan *client.AcquireResponse {
	got := make(chan *client.AcquireResponse, 1)
	go func() {
		code, b := e.do("POST", "/api/v1/delegates/"+d.id+"/acquire?"+query, d.token, nil)
		var a client.AcquireResponse
		if code != http.StatusOK || json.Unmarshal(b, &a) != nil {
			e.t.Errorf("acquire = %d %s", code, b)
		}
		got <- &a
	}()
	return got
}

func within(t *testing.T, got <-chan *client.AcquireResponse, d time.Duration, what string) *client.AcquireResponse {
	t.Helper()
	select {
	case a := <-got:
		return a
	case <-time.After(d):
		t.Fatalf("%s: the long-poll did not return within %s", what, d)
		return nil
	}
}

// A cancel asked between two polls was never told: the next poll answers
// at once. A cancel already told does not end a poll.
func TestCancelBetweenPollsEndsNextPoll(t *testing.T) {
	e := newEnv(t)
	d := e.register("d", nil)
	task, _ := e.runningTask(d, &client.TaskSpec{Type: "noop"})

	// No poll in flight when the cancel lands.
	e.must(http.StatusNoContent, "POST", "/api/v1/tasks/"+task.ID+"/cancel", testAdmin, nil, nil)
	a := within(t, e.asyncAcquire(d, "wait=30s&max=0"), 5*time.Second, "cancel asked before the poll")
	if fmt.Sprint(a.Cancel) != fmt.Sprint([]string{task.ID}) {
		t.Fatalf("acquire = %+v, want the cancel", a)
	}

	// Told: the next poll waits its whole wait, still listing the cancel.
	const wait = 300 * time.Millisecond
	start := time.Now()
	a = within(t, e.asyncAcquire(d, "wait=300ms&max=0"), 5*time.Second, "cancel already told")
	if took := time.Since(start); took < wait {
		t.Fatalf("a poll with only told cancels returned after %s, before its wait of %s", took, wait)
	}
	if fmt.Sprint(a.Cancel) != fmt.Sprint([]string{task.ID}) {
		t.Fatalf("acquire = %+v, want the cancel listed", a)
	}
}

// A cancel told by a heartbeat answer does not end the next poll; one
// asked after that heartbeat does.
func TestCancelToldByHeartbeat(t *testing.T) {
	e := newEnv(t)
	d := e.register("d", nil)
	first, _ := e.runningTask(d, &client.TaskSpec{Type: "noop"})
	second, _ := e.runningTask(d, &client.TaskSpec{Type: "noop"})

	e.must(http.StatusNoContent, "POST", "/api/v1/tasks/"+first.ID+"/cancel", testAdmin, nil, nil)
	var hb client.HeartbeatResponse
	e.must(200, "POST", "/api/v1/delegates/"+d.id+"/heartbeat", d.token, nil, &hb)
	if fmt.Sprint(hb.Cancel) != fmt.Sprint([]string{first.ID}) {
		t.Fatalf("heartbeat = %+v", hb)
	}
	start := time.Now()
	within(t, e.asyncAcquire(d, "wait=300ms&max=0"), 5*time.Second, "told by heartbeat")
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("a poll after the heartbeat told the cancel returned after %s", took)
	}

	e.must(http.StatusNoContent, "POST", "/api/v1/tasks/"+second.ID+"/cancel", testAdmin, nil, nil)
	a := within(t, e.asyncAcquire(d, "wait=30s&max=0"), 5*time.Second, "second cancel")
	if fmt.Sprint(a.Cancel) != fmt.Sprint([]string{first.ID, second.ID}) {
		t.Fatalf("acquire = %+v, want both cancels", a)
	}
}

// A cancel whose task ends is dropped from what the delegate is told.
func TestCancelDroppedWhenTaskEnds(t *testing.T) {
	e := newEnv(t)
	d := e.register("d", nil)
	task, lease := e.runningTask(d, &client.TaskSpec{Type: "noop"})
	e.must(http.StatusNoContent, "POST", "/api/v1/tasks/"+task.ID+"/cancel", testAdmin, nil, nil)
	e.must(200, "POST", "/api/v1/tasks/"+task.ID+"/status", d.token, &client.StatusUpdate{Lease: lease, State: errand.StateCancelled}, nil)
	var hb client.HeartbeatResponse
	e.must(200, "POST", "/api/v1/delegates/"+d.id+"/heartbeat", d.token, nil, &hb)
	if len(hb.Cancel) != 0 {
		t.Fatalf("heartbeat after the task ended = %+v, want no cancel", hb)
	}
}

// A delegate found lost gets no task, not even from a long-poll that was
// waiting from before; it takes tasks again once it heartbeats.
func TestLostDelegateGetsNoTask(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sweep func(e *env, now time.Time) (store.TaskSweepResult, error)
	}{
		{"this manager's sweep", func(e *env, _ time.Time) (store.TaskSweepResult, error) {
			return e.s.sched.Sweep(context.Background())
		}},
		// Another manager sweeping the shared store: this one learns it
		// only from the store.
		{"another manager's sweep", func(e *env, now time.Time) (store.TaskSweepResult, error) {
			return e.s.store.TaskSweep(context.Background(), store.TaskSweepParams{Now: now, LeaseTTL: e.s.cfg.LeaseTTL, TimeoutGrace: e.s.cfg.TimeoutGrace})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := &clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
			e := newEnv(t, func(c *Config) {
				c.Now = clk.Now
				c.HeartbeatInterval = 10 * time.Second
				c.LeaseTTL = 40 * time.Second
			})
			d := e.register("d", nil)
			task, _ := e.runningTask(d, &client.TaskSpec{Type: "noop", MaxAttempts: 2})
			if err := e.s.sched.FlushHeartbeats(context.Background()); err != nil {
				t.Fatal(err)
			}

			// The delegate freezes with a long-poll waiting.
			stale := e.asyncAcquire(d, "wait=1s&max=1")
			e.waitAcquirers(1)
			clk.Add(41 * time.Second)
			res, err := tc.sweep(e, clk.Now())
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(res.Requeued) != fmt.Sprint([]string{task.ID}) {
				t.Fatalf("sweep = %+v, want the task requeued", res)
			}
			if a := within(t, stale, 5*time.Second, "stale poll"); len(a.Tasks) != 0 {
				t.Fatalf("the stale long-poll of a lost delegate leased %+v", a.Tasks)
			}
			if a := e.acquire(d, "max=1"); len(a.Tasks) != 0 {
				t.Fatalf("a lost delegate's acquire leased %+v", a.Tasks)
			}
			if got := e.getTask(task.ID); got.State != errand.StateQueued {
				t.Fatalf("task = %s, want queued", got.State)
			}

			// A poll waiting while lost ends when the delegate heartbeats,
			// and the next one takes the task.
			waiting := e.asyncAcquire(d, "wait=30s&max=1")
			e.waitAcquirers(1)
			e.must(200, "POST", "/api/v1/delegates/"+d.id+"/heartbeat", d.token, nil, nil)
			if a := within(t, waiting, 5*time.Second, "poll of a delegate back from lost"); len(a.Tasks) != 0 {
				t.Fatalf("poll waiting while lost leased %+v", a.Tasks)
			}
			a := e.acquire(d, "max=1")
			if len(a.Tasks) != 1 || a.Tasks[0].ID != task.ID || a.Tasks[0].Attempt != 2 {
				t.Fatalf("acquire after the heartbeat = %+v, want attempt 2 of %s", a, task.ID)
			}
		})
	}
}

// countingStore counts the store calls the hot paths should avoid.
type countingStore struct {
	store.Store
	mu      sync.Mutex
	acquire int
	touched []string
}

func (c *countingStore) TaskAcquire(ctx context.Context, p store.TaskAcquireParams) ([]*errand.Task, error) {
	c.mu.Lock()
	c.acquire++
	c.mu.Unlock()
	return c.Store.TaskAcquire(ctx, p)
}

func (c *countingStore) DelegateTouch(ctx context.Context, p store.DelegateTouchParams) error {
	c.mu.Lock()
	c.touched = append(c.touched, p.IDs...)
	c.mu.Unlock()
	return c.Store.DelegateTouch(ctx, p)
}

func (c *countingStore) counts() (int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	acquire, touched := c.acquire, c.touched
	c.acquire, c.touched = 0, nil
	return acquire, touched
}

// countedEnv is newEnv over a store that counts acquires and touches.
func countedEnv(t testing.TB, mods ...func(*Config)) (*env, *countingStore) {
	var c *countingStore
	e := newEnvOver(t, func(st store.Store) store.Store {
		c = &countingStore{Store: st}
		return c
	}, mods...)
	return e, c
}

// An idle delegate's next poll does not look for tasks again when none
// was queued since its last look; one queued between two polls is found.
func TestIdlePollSkipsLook(t *testing.T) {
	e, c := countedEnv(t)
	d := e.register("d", nil)
	e.acquire(d, "wait=10ms&max=1")
	e.acquire(d, "wait=10ms&max=1")
	if n, _ := c.counts(); n != 1 {
		t.Fatalf("two idle polls looked for tasks %d times, want 1", n)
	}
	task := e.create(&client.TaskSpec{Type: "noop"})
	a := e.acquire(d, "wait=10s&max=1")
	if len(a.Tasks) != 1 || a.Tasks[0].ID != task.ID {
		t.Fatalf("poll after a task was queued = %+v", a)
	}
	// A look that found tasks does not stand for the next poll.
	e.acquire(d, "wait=10ms&max=1")
	if n, _ := c.counts(); n != 2 {
		t.Fatalf("polls looked for tasks %d times, want 2", n)
	}
}

// Heartbeats reach the store only when the stored one gets old, and a
// lost delegate's heartbeat always does.
func TestHeartbeatTouchesOnlyOldHeartbeats(t *testing.T) {
	clk := &clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	e, c := countedEnv(t, func(c *Config) {
		c.Now = clk.Now
		c.HeartbeatInterval = 10 * time.Second
		c.LeaseTTL = 40 * time.Second
	})
	d := e.register("d", nil)
	ctx := context.Background()
	beat := func() []string {
		t.Helper()
		e.must(200, "POST", "/api/v1/delegates/"+d.id+"/heartbeat", d.token, nil, nil)
		if err := e.s.sched.FlushHeartbeats(ctx); err != nil {
			t.Fatal(err)
		}
		_, touched := c.counts()
		return touched
	}
	if got := beat(); len(got) != 0 {
		t.Fatalf("a fresh heartbeat was written: %v", got)
	}
	clk.Add(e.s.sched.TouchAfter() + time.Second)
	if got := beat(); fmt.Sprint(got) != fmt.Sprint([]string{d.id}) {
		t.Fatalf("an old heartbeat was not written: %v", got)
	}
	clk.Add(10 * time.Second)
	if got := beat(); len(got) != 0 {
		t.Fatalf("a heartbeat renewed 10s ago was written again: %v", got)
	}
	// Silent past the TTL: lost; the next heartbeat revives it in the store.
	clk.Add(41 * time.Second)
	if res, err := e.s.sched.Sweep(ctx); err != nil || len(res.LostDelegates) != 1 {
		t.Fatalf("sweep = %+v, %v", res, err)
	}
	if got := beat(); fmt.Sprint(got) != fmt.Sprint([]string{d.id}) {
		t.Fatalf("a lost delegate's heartbeat was not written: %v", got)
	}
	stored, err := e.s.store.DelegateGet(ctx, d.id)
	if err != nil || stored.State != errand.DelegateActive {
		t.Fatalf("delegate after its heartbeat = %+v, %v", stored, err)
	}
}

// Cancels and drains written by another manager reach this one through
// the store's changes: the cache learns them and the long-poll ends.
func TestChangesFromAnotherManagerReachLongPoll(t *testing.T) {
	e := newEnv(t)
	d := e.register("d", nil)
	task, _ := e.runningTask(d, &client.TaskSpec{Type: "noop"})
	ctx := context.Background()

	got := e.asyncAcquire(d, "wait=30s&max=0")
	e.waitAcquirers(1)
	if _, err := e.s.store.TaskCancel(ctx, store.TaskCancelParams{TaskID: task.ID, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if a := within(t, got, 5*time.Second, "cancel from another manager"); fmt.Sprint(a.Cancel) != fmt.Sprint([]string{task.ID}) {
		t.Fatalf("acquire = %+v, want the cancel", a)
	}

	got = e.asyncAcquire(d, "wait=30s&max=1")
	e.waitAcquirers(1)
	yes := true
	if _, err := e.s.store.DelegateUpdate(ctx, store.DelegateUpdateParams{ID: d.id, DrainRequested: &yes}); err != nil {
		t.Fatal(err)
	}
	if a := within(t, got, 5*time.Second, "drain from another manager"); !a.Drain {
		t.Fatalf("acquire = %+v, want drain", a)
	}
	var hb client.HeartbeatResponse
	e.must(200, "POST", "/api/v1/delegates/"+d.id+"/heartbeat", d.token, nil, &hb)
	if !hb.Drain || fmt.Sprint(hb.Cancel) != fmt.Sprint([]string{task.ID}) {
		t.Fatalf("heartbeat = %+v, want drain and the cancel", hb)
	}
}

// A delegate dropped from the cache is read again whole, cancels
// included, on its next request.
func TestDelegateReadAgainAfterEviction(t *testing.T) {
	e := newEnv(t)
	d := e.register("d", nil)
	task, _ := e.runningTask(d, &client.TaskSpec{Type: "noop"})
	e.must(http.StatusNoContent, "POST", "/api/v1/tasks/"+task.ID+"/cancel", testAdmin, nil, nil)
	e.s.sched.Evict(d.id)
	a := within(t, e.asyncAcquire(d, "wait=30s&max=0"), 5*time.Second, "after eviction")
	if fmt.Sprint(a.Cancel) != fmt.Sprint([]string{task.ID}) {
		t.Fatalf("acquire = %+v, want the cancel read from the store", a)
	}
}

// The answers encoded once say what the encoded-per-call ones would.
func TestQuietAnswers(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.HeartbeatInterval = 7 * time.Second })
	d := e.register("d", nil)
	code, b := e.do("POST", "/api/v1/delegates/"+d.id+"/heartbeat", d.token, nil)
	want := `{"kind":"heartbeat","heartbeat_interval":"7s"}` + "\n"
	if code != 200 || string(b) != want {
		t.Fatalf("heartbeat = %d %q, want %q", code, b, want)
	}
	code, b = e.do("POST", "/api/v1/delegates/"+d.id+"/acquire?max=1", d.token, nil)
	want = `{"kind":"acquire","tasks":[]}` + "\n"
	if code != 200 || string(b) != want {
		t.Fatalf("acquire = %d %q, want %q", code, b, want)
	}
}

// A cancel told in an answer that never reached the delegate (a poll it
// gave up on as a slot freed) is told again once it has stayed pending
// for retellAfter: the next poll then answers at once.
func TestCancelStillPendingIsToldAgain(t *testing.T) {
	clk := &clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	e := newEnv(t, func(c *Config) { c.Now = clk.Now })
	d := e.register("d", nil)
	task, _ := e.runningTask(d, &client.TaskSpec{Type: "noop"})
	e.must(http.StatusNoContent, "POST", "/api/v1/tasks/"+task.ID+"/cancel", testAdmin, nil, nil)
	// This answer is the one taken to be lost.
	within(t, e.asyncAcquire(d, "wait=30s&max=0"), 5*time.Second, "first telling")

	start := time.Now()
	within(t, e.asyncAcquire(d, "wait=300ms&max=0"), 5*time.Second, "told just now")
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("a poll right after the telling returned after %s", took)
	}

	// While told cancels are pending, a long wait is cut to retellAfter
	// and the answer lists them.
	a := within(t, e.asyncAcquire(d, "wait=30s&max=0"), 5*time.Second, "long wait with a told cancel pending")
	if fmt.Sprint(a.Cancel) != fmt.Sprint([]string{task.ID}) {
		t.Fatalf("acquire = %+v, want the cancel listed", a)
	}

	clk.Add(scheduler.RetellAfter)
	a = within(t, e.asyncAcquire(d, "wait=30s&max=0"), 5*time.Second, "still pending")
	if fmt.Sprint(a.Cancel) != fmt.Sprint([]string{task.ID}) {
		t.Fatalf("acquire = %+v, want the cancel again", a)
	}
}
