package manager

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/scheduler"
)

func (e *env) heartbeat(d delegate, req *client.HeartbeatRequest) *client.HeartbeatResponse {
	e.t.Helper()
	var hb client.HeartbeatResponse
	e.must(200, "POST", "/api/v1/delegates/"+d.id+"/heartbeat", d.token, req, &hb)
	return &hb
}

func leaseEnv(t *testing.T) (*env, *clock) {
	clk := &clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	e := newEnv(t, func(c *Config) {
		c.Now = clk.Now
		c.HeartbeatInterval = 10 * time.Second
		c.LeaseTTL = 40 * time.Second
	})
	return e, clk
}

// A delegate that resumes its identity after a kill says it holds nothing:
// the tasks of the previous process end at once, though the delegate
// heartbeats, instead of running for ever on renewed leases.
func TestResumedDelegateEndsDeadLeases(t *testing.T) {
	e, _ := leaseEnv(t)
	d := e.register("d", nil)
	retried, oldLease := e.runningTask(d, &client.TaskSpec{Type: "noop", MaxAttempts: 2})
	last, _ := e.runningTask(d, &client.TaskSpec{Type: "noop", MaxAttempts: 1})
	asked, _ := e.runningTask(d, &client.TaskSpec{Type: "noop"})
	e.must(204, "POST", "/api/v1/tasks/"+asked.ID+"/cancel", testAdmin, nil, nil)

	e.heartbeat(d, &client.HeartbeatRequest{Resumed: true})
	if got := e.getTask(retried.ID); got.State != errand.StateQueued || got.Attempt != 1 {
		t.Fatalf("task of the killed process = %s attempt %d, want queued for a retry", got.State, got.Attempt)
	}
	if got := e.getTask(last.ID); got.State != errand.StateFailed || got.Error == nil || got.Error.Code != errand.CodeDelegateLost {
		t.Fatalf("last attempt = %s %+v, want failed delegate_lost", got.State, got.Error)
	}
	if got := e.getTask(asked.ID); got.State != errand.StateCancelled {
		t.Fatalf("cancelled task = %s, want the cancel finished", got.State)
	}
	e.fails(409, errand.CodeLeaseLost, "POST", "/api/v1/tasks/"+retried.ID+"/status", d.token,
		&client.StatusUpdate{Lease: oldLease, State: errand.StateSucceeded})
	// The resumed delegate takes the retry, and keeps it by naming it.
	a := e.acquire(d, "max=1")
	if len(a.Tasks) != 1 || a.Tasks[0].ID != retried.ID || a.Tasks[0].Attempt != 2 {
		t.Fatalf("acquire after resuming = %+v", a)
	}
	e.heartbeat(d, &client.HeartbeatRequest{Running: []string{retried.ID}})
	if got := e.getTask(retried.ID); got.State != errand.StateLeased {
		t.Fatalf("retried task = %s", got.State)
	}
	// A resume that names what it holds keeps it.
	e.heartbeat(d, &client.HeartbeatRequest{Resumed: true, Running: []string{retried.ID}})
	if got := e.getTask(retried.ID); got.State != errand.StateLeased {
		t.Fatalf("held task after a resume naming it = %s", got.State)
	}
}

// A delegate killed while draining is active again when it resumes,
// unless it says it drains.
func TestResumedDelegateIsActiveAgain(t *testing.T) {
	e, _ := leaseEnv(t)
	d := e.register("d", nil)
	e.must(204, "POST", "/api/v1/delegates/"+d.id+"/drain", testAdmin, nil, nil)
	if hb := e.heartbeat(d, &client.HeartbeatRequest{Draining: true}); !hb.Drain {
		t.Fatalf("heartbeat while drain requested = %+v", hb)
	}
	var got errand.Delegate
	e.must(200, "GET", "/api/v1/delegates/"+d.id, testAdmin, nil, &got)
	if got.State != errand.DelegateDraining {
		t.Fatalf("delegate = %s, want draining", got.State)
	}
	if hb := e.heartbeat(d, &client.HeartbeatRequest{Resumed: true}); hb.Drain {
		t.Fatalf("resumed delegate told to drain: %+v", hb)
	}
	got = errand.Delegate{}
	e.must(200, "GET", "/api/v1/delegates/"+d.id, testAdmin, nil, &got)
	if got.State != errand.DelegateActive || got.DrainRequested {
		t.Fatalf("resumed delegate = %s drain_requested %v, want active", got.State, got.DrainRequested)
	}
	task := e.create(&client.TaskSpec{Type: "noop"})
	if a := e.acquire(d, "max=1"); len(a.Tasks) != 1 || a.Tasks[0].ID != task.ID {
		t.Fatalf("resumed delegate acquired %+v", a)
	}
	// One that resumes draining stays so.
	e.heartbeat(d, &client.HeartbeatRequest{Resumed: true, Draining: true, Running: []string{task.ID}})
	got = errand.Delegate{}
	e.must(200, "GET", "/api/v1/delegates/"+d.id, testAdmin, nil, &got)
	if got.State != errand.DelegateDraining {
		t.Fatalf("delegate resumed draining = %s", got.State)
	}
}

// Heartbeats renew exactly the tasks they name. A task leased while a
// heartbeat that could not name it was in flight keeps its lease for one
// TTL; one the delegate never names (its acquire answer was lost) is
// taken back after the TTL, though the delegate heartbeats.
func TestHeartbeatRenewsOnlyNamedTasks(t *testing.T) {
	e, clk := leaseEnv(t)
	ctx := context.Background()
	d := e.register("d", nil)
	held, _ := e.runningTask(d, &client.TaskSpec{Type: "noop"})
	// The delegate builds a heartbeat naming what it runs, then an
	// acquire answer leases another task before the heartbeat arrives.
	inflight := e.create(&client.TaskSpec{Type: "noop"})
	if a := e.acquire(d, "max=1"); len(a.Tasks) != 1 || a.Tasks[0].ID != inflight.ID {
		t.Fatalf("acquire = %+v", a)
	}
	lost := e.create(&client.TaskSpec{Type: "noop", MaxAttempts: 1})
	if a := e.acquire(d, "max=1"); len(a.Tasks) != 1 || a.Tasks[0].ID != lost.ID {
		t.Fatalf("acquire = %+v", a)
	}
	beat := func(running ...string) {
		t.Helper()
		e.heartbeat(d, &client.HeartbeatRequest{Running: running})
		if err := e.s.sched.FlushHeartbeats(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sweep := func() string {
		t.Helper()
		res, err := e.s.sched.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.LostDelegates) > 0 {
			t.Fatalf("sweep lost the heartbeating delegate: %+v", res)
		}
		return fmt.Sprint(res.Requeued, res.Failed)
	}
	beat(held.ID)
	if got := sweep(); got != "[] []" {
		t.Fatalf("sweep right after the in-flight leases took back %s", got)
	}
	if got := e.getTask(inflight.ID); got.State != errand.StateLeased {
		t.Fatalf("task leased in flight = %s, want kept", got.State)
	}
	// The answer arrived: the delegate names it; the other answer was
	// lost, and that task is never named.
	clk.Add(20 * time.Second)
	beat(held.ID, inflight.ID)
	if got := sweep(); got != "[] []" {
		t.Fatalf("sweep within the TTL took back %s", got)
	}
	clk.Add(21 * time.Second)
	beat(held.ID, inflight.ID)
	if got, want := sweep(), "[] ["+lost.ID+"]"; got != want {
		t.Fatalf("sweep past the TTL = %s, want %s", got, want)
	}
	if got := e.getTask(lost.ID); got.State != errand.StateFailed || got.Error == nil || got.Error.Code != errand.CodeDelegateLost {
		t.Fatalf("never-named task = %s %+v, want failed delegate_lost", got.State, got.Error)
	}
	for i := 0; i < 4; i++ {
		clk.Add(20 * time.Second)
		beat(held.ID, inflight.ID)
		if got := sweep(); got != "[] []" {
			t.Fatalf("sweep while named took back %s", got)
		}
	}
	if got := e.getTask(held.ID); got.State != errand.StateRunning {
		t.Fatalf("named task = %s", got.State)
	}
	if got := e.getTask(inflight.ID); got.State != errand.StateLeased {
		t.Fatalf("named task = %s", got.State)
	}
	// What a heartbeat names is bounded.
	e.fails(400, errand.CodeInvalid, "POST", "/api/v1/delegates/"+d.id+"/heartbeat", d.token, &client.HeartbeatRequest{Running: []string{""}})
	e.fails(400, errand.CodeInvalid, "POST", "/api/v1/delegates/"+d.id+"/heartbeat", d.token, &client.HeartbeatRequest{Running: make([]string, maxHeld+1)})
}

// A cleanup that must follow a delegate that deregistered, and that no
// live delegate of its group may take, fails affinity_lost instead of
// staying queued; with a sibling of the group it waits for the sibling.
func TestCleanupOfGoneDelegateFailsAffinityLost(t *testing.T) {
	e, _ := leaseEnv(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		sibling bool
	}{{"alone", false}, {"with a sibling", true}} {
		t.Run(tc.name, func(t *testing.T) {
			group := "g-" + strings.ReplaceAll(tc.name, " ", "-")
			d := e.register("runner", &client.RegisterRequest{Group: group})
			other := e.register("other-group", &client.RegisterRequest{Group: "elsewhere"})
			var sib delegate
			if tc.sibling {
				sib = e.register("sibling", &client.RegisterRequest{Group: group})
			}
			var list client.TaskList
			e.must(201, "POST", "/api/v1/tasks", testAdmin, &client.TaskBatch{Tasks: []*client.TaskSpec{
				{ID: group + "-init", Type: "noop"},
				{ID: group + "-cleanup", Type: "noop", Affinity: group + "-init",
					DependsOn: []errand.Dependency{{Task: group + "-init", Condition: errand.Always}}},
			}}, &list)
			a := e.acquire(d, "max=1")
			if len(a.Tasks) != 1 || a.Tasks[0].ID != group+"-init" {
				t.Fatalf("acquire = %+v", a)
			}
			e.must(200, "POST", "/api/v1/tasks/"+group+"-init/status", d.token,
				&client.StatusUpdate{Lease: a.Tasks[0].Lease.Token, State: errand.StateSucceeded}, nil)
			e.must(204, "DELETE", "/api/v1/delegates/"+d.id, d.token, nil, nil)
			if _, err := e.s.sched.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
			got := e.getTask(group + "-cleanup")
			if !tc.sibling {
				if got.State != errand.StateFailed || got.Error == nil || got.Error.Code != errand.CodeAffinityLost {
					t.Fatalf("cleanup of a gone delegate = %s %+v, want failed affinity_lost", got.State, got.Error)
				}
				return
			}
			if got.State != errand.StateQueued {
				t.Fatalf("cleanup with a sibling = %s %+v, want queued", got.State, got.Error)
			}
			if a := e.acquire(other, "max=1"); len(a.Tasks) != 0 {
				t.Fatalf("a delegate of another group took %+v", a.Tasks)
			}
			if a := e.acquire(sib, "max=1"); len(a.Tasks) != 1 || a.Tasks[0].ID != group+"-cleanup" {
				t.Fatalf("the sibling acquired %+v, want the cleanup", a)
			}
		})
	}
}

// A queued task that no registered delegate may run says why, in get and
// list; one an active delegate may run says nothing.
func TestQueuedTaskSaysWhyItWaits(t *testing.T) {
	e, clk := leaseEnv(t)
	ctx := context.Background()
	nobody := e.create(&client.TaskSpec{Type: "exec.execute"})
	if got := e.getTask(nobody.ID).WaitingReason; got != "no delegate is registered" {
		t.Fatalf("waiting_reason with no delegate = %q", got)
	}
	d := e.register("d", &client.RegisterRequest{TaskTypes: []string{"exec.execute"}, Labels: map[string]string{"os": "linux"}})
	unserved := e.create(&client.TaskSpec{Type: "docker.execute"})
	picky := e.create(&client.TaskSpec{Type: "exec.execute", Selector: errand.Selector{Labels: map[string]string{"env": "prod"}, Arch: "arm64"}})
	clk.Add(2 * scheduler.FleetMaxAge)
	for _, tc := range []struct {
		id, want string
	}{
		{nobody.ID, ""},
		{unserved.ID, "no registered delegate serves task type docker.execute"},
		{picky.ID, "no registered delegate serving exec.execute matches the selector label env=prod, arch arm64"},
	} {
		if got := e.getTask(tc.id).WaitingReason; got != tc.want {
			t.Errorf("waiting_reason of %s = %q, want %q", tc.id, got, tc.want)
		}
	}
	var list client.TaskList
	e.must(200, "GET", "/api/v1/tasks?state=queued", testAdmin, nil, &list)
	reasons := map[string]string{}
	for _, tk := range list.Items {
		reasons[tk.ID] = tk.WaitingReason
	}
	if reasons[unserved.ID] == "" || reasons[picky.ID] == "" || reasons[nobody.ID] != "" {
		t.Fatalf("list reasons = %v", reasons)
	}
	// The only delegate that may run it is lost.
	clk.Add(time.Minute)
	if _, err := e.s.sched.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.getTask(nobody.ID).WaitingReason; got != "the delegates that may run it are lost (1) or draining (0)" {
		t.Fatalf("waiting_reason with the delegate lost = %q", got)
	}
	// Back: nothing to say; a leased task says nothing either.
	e.heartbeat(d, &client.HeartbeatRequest{})
	if err := e.s.sched.FlushHeartbeats(ctx); err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * scheduler.FleetMaxAge)
	if got := e.getTask(nobody.ID).WaitingReason; got != "" {
		t.Fatalf("waiting_reason with the delegate back = %q", got)
	}
	a := e.acquire(d, "max=1")
	if len(a.Tasks) != 1 || a.Tasks[0].ID != nobody.ID {
		t.Fatalf("acquire = %+v", a)
	}
	if got := e.getTask(nobody.ID); got.State != errand.StateLeased || got.WaitingReason != "" {
		t.Fatalf("leased task = %s %q", got.State, got.WaitingReason)
	}
}
