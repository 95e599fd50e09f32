package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
	"github.com/errandci/errand/tasks"
)

// leaseManager is a manager whose lease TTL is long enough to tell a
// lease ended by the delegate's own word from one that merely expired.
func leaseManager(t testing.TB) *testenv.Manager {
	return testenv.StartManager(t, testenv.Binary(t),
		"--heartbeat-interval", "300ms", "--lease-ttl", "30s", "--sweep-interval", "100ms")
}

// A delegate killed with SIGKILL mid-task and restarted with the same
// --state-dir resumes its identity; the task it no longer runs ends at
// once (retried here, attempts remain) instead of staying running on
// renewed leases, and cancelling the retry finishes.
func TestE2EResumedDelegateEndsTaskOfKilledProcess(t *testing.T) {
	m := leaseManager(t)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	state := t.TempDir()
	d := startDelegate(t, m, "phoenix", state)
	first := waitActive(t, admin, "phoenix")

	execStage(t, admin, "kill9", true, tasks.ExecuteData{Step: "long", Commands: []string{"echo started", "sleep 60"}})
	running := waitState(t, admin, "kill9-step0", 30*time.Second, errand.StateRunning)
	if running.Attempt != 1 || running.DelegateID != first.ID {
		t.Fatalf("step = attempt %d on %s", running.Attempt, running.DelegateID)
	}
	d.signal(syscall.SIGKILL)
	d.wait(t, 10*time.Second)
	restarted := time.Now()
	startDelegate(t, m, "phoenix", state)

	// The first attempt ends well within the lease TTL (30s): the
	// restarted delegate said it holds nothing.
	var attempt2 *client.Task
	poll(t, "the killed process's attempt to end", 10*time.Second, func() bool {
		tk, err := admin.GetTask(context.Background(), "kill9-step0")
		if err != nil {
			return false
		}
		attempt2 = tk
		return tk.Attempt >= 2 || tk.State.Terminal()
	})
	if took := time.Since(restarted); took > 15*time.Second {
		t.Fatalf("the dead attempt ended %s after the restart", took)
	}
	// The resumed delegate (same identity) runs the retry.
	retry := waitState(t, admin, "kill9-step0", 30*time.Second, errand.StateRunning)
	if retry.Attempt != 2 || retry.DelegateID != first.ID {
		t.Fatalf("retry = attempt %d on %s (was %+v), want attempt 2 on %s", retry.Attempt, retry.DelegateID, attempt2, first.ID)
	}
	l, err := admin.ListDelegates(context.Background())
	if err != nil || len(l.Items) != 1 {
		t.Fatalf("delegates after the restart: %+v, %v; want the one resumed", l, err)
	}

	cancel := exec.Command(testenv.Binary(t), "tasks", "cancel", "kill9-step0", "--manager", m.URL, "--token", m.AdminToken)
	cancel.Env = cleanEnv()
	if out, err := cancel.CombinedOutput(); err != nil {
		t.Fatalf("errand tasks cancel: %v\n%s", err, out)
	}
	if got := waitState(t, admin, "kill9-step0", 20*time.Second); got.State != errand.StateCancelled {
		t.Fatalf("cancelled step ended %s %+v", got.State, got.Error)
	}
	if got := waitState(t, admin, "kill9-cleanup", 30*time.Second); got.State != errand.StateSucceeded {
		t.Fatalf("cleanup ended %s %+v", got.State, got.Error)
	}
}

// A delegate killed while draining comes back active, and takes work.
func TestE2EDelegateKilledMidDrainComesBackActive(t *testing.T) {
	m := leaseManager(t)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	state := t.TempDir()
	d := startDelegate(t, m, "drainer", state, "--drain-timeout", "5m")
	first := waitActive(t, admin, "drainer")

	execStage(t, admin, "busy", true, tasks.ExecuteData{Step: "long", Commands: []string{"sleep 60"}})
	waitState(t, admin, "busy-step0", 30*time.Second, errand.StateRunning)
	d.signal(syscall.SIGTERM)
	poll(t, "the delegate draining", 10*time.Second, func() bool {
		got, err := admin.GetDelegate(context.Background(), first.ID)
		return err == nil && got.State == errand.DelegateDraining
	})
	d.signal(syscall.SIGKILL)
	d.wait(t, 10*time.Second)
	startDelegate(t, m, "drainer", state)
	poll(t, "the restarted delegate active", 10*time.Second, func() bool {
		got, err := admin.GetDelegate(context.Background(), first.ID)
		return err == nil && got.State == errand.DelegateActive && !got.DrainRequested
	})
	execStage(t, admin, "after", true, tasks.ExecuteData{Step: "quick", Commands: []string{"echo hi"}})
	if got := waitState(t, admin, "after-cleanup", 30*time.Second); got.State != errand.StateSucceeded {
		t.Fatalf("a stage after the restart ended %s %+v", got.State, got.Error)
	}
}

// A stage's cleanup whose delegate stopped and deregistered, with no
// sibling to take it, fails affinity_lost instead of staying queued.
func TestE2ECleanupOfDeregisteredDelegateFails(t *testing.T) {
	m := leaseManager(t)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	d := startDelegate(t, m, "leaver", t.TempDir(), "--drain-timeout", "500ms")
	waitActive(t, admin, "leaver")
	execStage(t, admin, "left", true, tasks.ExecuteData{Step: "long", Commands: []string{"sleep 60"}})
	waitState(t, admin, "left-step0", 30*time.Second, errand.StateRunning)
	d.signal(syscall.SIGTERM)
	if code := d.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("delegate exited %d", code)
	}
	got := waitState(t, admin, "left-cleanup", 10*time.Second)
	if got.State != errand.StateFailed || got.Error == nil || got.Error.Code != errand.CodeAffinityLost {
		t.Fatalf("cleanup of a deregistered delegate = %s %+v, want failed affinity_lost", got.State, got.Error)
	}
}

// A task no registered delegate may run says why, in `errand tasks get`.
func TestE2EQueuedTaskSaysWhyItWaits(t *testing.T) {
	m := leaseManager(t)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	startDelegate(t, m, "plain", t.TempDir())
	waitActive(t, admin, "plain")
	created, err := admin.CreateTasks(context.Background(), []*client.TaskSpec{
		{ID: "picky", Type: errand.TypeExecExecute, Data: mustJSON(t, tasks.ExecuteData{Step: "x", Commands: []string{"true"}}),
			Selector: errand.Selector{Labels: map[string]string{"env": "prod"}}},
		{ID: "alien", Type: "alien.task"},
	})
	if err != nil || len(created) != 2 {
		t.Fatalf("create: %v", err)
	}
	for id, want := range map[string]string{
		"picky": "matches the selector label env=prod",
		"alien": "no registered delegate serves task type alien.task",
	} {
		cmd := exec.Command(testenv.Binary(t), "tasks", "get", id, "-o", "json", "--manager", m.URL, "--token", m.AdminToken)
		cmd.Env = cleanEnv()
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("errand tasks get %s: %v", id, err)
		}
		var tk client.Task
		if err := json.Unmarshal(out, &tk); err != nil {
			t.Fatalf("errand tasks get %s -o json: %v\n%s", id, err, out)
		}
		if tk.State != errand.StateQueued || !strings.Contains(tk.WaitingReason, want) {
			t.Fatalf("task %s = %s waiting_reason %q, want it to say %q", id, tk.State, tk.WaitingReason, want)
		}
	}
}

// A step that runs for several lease TTLs keeps its lease: the delegate's
// heartbeats name it, and renew it.
func TestE2ELongStepKeepsItsLease(t *testing.T) {
	m := fastManager(t) // lease TTL 1s
	admin := testenv.Client(t, m.URL, m.AdminToken)
	startDelegate(t, m, "steady", t.TempDir())
	waitActive(t, admin, "steady")
	execStage(t, admin, "long", true, tasks.ExecuteData{Step: "long", Commands: []string{"sleep 4", "echo done"}})
	got := waitState(t, admin, "long-step0", 30*time.Second)
	if got.State != errand.StateSucceeded || got.Attempt != 1 {
		t.Fatalf("a step of 4 lease TTLs = %s on attempt %d %+v, want succeeded on attempt 1", got.State, got.Attempt, got.Error)
	}
}
