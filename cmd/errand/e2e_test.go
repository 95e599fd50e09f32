package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
)

// delegateClient is a registered delegate: its id and a client that
// sends its own token.
type delegateClient struct {
	id string
	*client.HTTP
}

func register(t *testing.T, m *testenv.Manager, name string) *delegateClient {
	t.Helper()
	c := testenv.Client(t, m.URL, m.RegistrationToken)
	reg, err := c.Register(context.Background(), &client.RegisterRequest{Name: name, Hostname: "e2e", Capacity: 4})
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	if reg.ID == "" || reg.Token == "" || reg.HeartbeatInterval <= 0 {
		t.Fatalf("registration %+v lacks id, token or heartbeat interval", reg)
	}
	return &delegateClient{id: reg.ID, HTTP: c.WithToken(reg.Token)}
}

// acquire long-polls until it holds want tasks or the deadline passes.
func (d *delegateClient) acquire(t *testing.T, want int, within time.Duration) []*client.Task {
	t.Helper()
	var got []*client.Task
	deadline := time.Now().Add(within)
	for len(got) < want && time.Now().Before(deadline) {
		resp, err := d.Acquire(context.Background(), d.id, &client.AcquireRequest{Wait: errand.Duration(time.Second), Max: want - len(got)})
		if err != nil {
			t.Fatalf("acquire: %v", err)
		}
		got = append(got, resp.Tasks...)
	}
	if len(got) != want {
		t.Fatalf("acquired %d tasks in %s, want %d", len(got), within, want)
	}
	for _, task := range got {
		if task.Lease == nil || task.Lease.Token == "" || task.Lease.DelegateID != d.id {
			t.Fatalf("task %s acquired with lease %+v, want one of delegate %s", task.ID, task.Lease, d.id)
		}
	}
	return got
}

// report sends a status under the task's lease.
func (d *delegateClient) report(t *testing.T, task *client.Task, state errand.State, result string, e *errand.Error) {
	t.Helper()
	u := &client.StatusUpdate{Lease: task.Lease.Token, State: state, Error: e}
	if result != "" {
		u.Result = json.RawMessage(result)
	}
	got, err := d.UpdateStatus(context.Background(), task.ID, u)
	if err != nil {
		t.Fatalf("report %s for %s: %v", state, task.ID, err)
	}
	if got.State != state {
		t.Fatalf("task %s is %s after reporting %s", task.ID, got.State, state)
	}
}

func byID(tasks []*client.Task) map[string]*client.Task {
	m := make(map[string]*client.Task, len(tasks))
	for _, t := range tasks {
		m[t.ID] = t
	}
	return m
}

func ids(tasks []*client.Task) []string {
	var out []string
	for _, t := range tasks {
		out = append(out, t.ID)
	}
	slices.Sort(out)
	return out
}

func TestE2EDependenciesConditionsAndResults(t *testing.T) {
	m := testenv.StartManager(t, testenv.Binary(t))
	admin := testenv.Client(t, m.URL, m.AdminToken)
	d1 := register(t, m, "d1")
	d2 := register(t, m, "d2")
	ctx := context.Background()

	// build succeeds and flaky fails; each has an on_success and an
	// on_failure dependent; report runs always, after both branches.
	dep := func(id string, c errand.Condition) []errand.Dependency {
		return []errand.Dependency{{Task: id, Condition: c}}
	}
	created, err := admin.CreateTasks(ctx, []*client.TaskSpec{
		{ID: "build", Type: "e2e.step", Data: json.RawMessage(`{"n":1}`)},
		{ID: "flaky", Type: "e2e.step", MaxAttempts: 1},
		{ID: "test", Type: "e2e.step", DependsOn: dep("build", errand.OnSuccess)},
		{ID: "build-failed", Type: "e2e.step", DependsOn: dep("build", errand.OnFailure)},
		{ID: "flaky-passed", Type: "e2e.step", DependsOn: dep("flaky", "")},
		{ID: "flaky-failed", Type: "e2e.step", DependsOn: dep("flaky", errand.OnFailure)},
		{ID: "report", Type: "e2e.step", DependsOn: []errand.Dependency{
			{Task: "test", Condition: errand.Always}, {Task: "build-failed", Condition: errand.Always}}},
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	states := map[string]errand.State{}
	for _, c := range created {
		states[c.ID] = c.State
	}
	want := map[string]errand.State{"build": errand.StateQueued, "flaky": errand.StateQueued, "test": errand.StatePending,
		"build-failed": errand.StatePending, "flaky-passed": errand.StatePending, "flaky-failed": errand.StatePending, "report": errand.StatePending}
	if fmt.Sprint(states) != fmt.Sprint(want) {
		t.Fatalf("created states %v, want %v", states, want)
	}

	// d1 runs both roots.
	roots := byID(d1.acquire(t, 2, 10*time.Second))
	if fmt.Sprint(ids(slices.Collect(mapValues(roots)))) != "[build flaky]" {
		t.Fatalf("first acquire got %v", ids(slices.Collect(mapValues(roots))))
	}
	build, flaky := roots["build"], roots["flaky"]
	if string(build.Data) != `{"n":1}` {
		t.Errorf("build data %s", build.Data)
	}
	d1.report(t, build, errand.StateRunning, "", nil)
	res, err := d1.AppendLogs(ctx, build.ID, &client.LogAppend{Lease: build.Lease.Token, Lines: []string{"compiling", "linking"}})
	if err != nil || res.Next != 2 {
		t.Fatalf("append logs: %+v, %v", res, err)
	}
	// A retried append at the same offset is stored once.
	if res, err = d1.AppendLogs(ctx, build.ID, &client.LogAppend{Lease: build.Lease.Token, Lines: []string{"compiling", "linking"}}); err != nil || res.Next != 2 {
		t.Fatalf("retried append: %+v, %v", res, err)
	}
	if _, err := d1.AppendLogs(ctx, build.ID, &client.LogAppend{Lease: build.Lease.Token, Offset: 5, Lines: []string{"gap"}}); !errors.Is(err, client.ErrLogOffset) {
		t.Fatalf("append past the end: %v, want log_offset", err)
	}
	d1.report(t, build, errand.StateSucceeded, `{"workspace":"/w/build"}`, nil)
	d1.report(t, flaky, errand.StateRunning, "", nil)
	d1.report(t, flaky, errand.StateFailed, "", &errand.Error{Code: errand.CodeExitCode, Reason: "exit 3"})

	// Released dependents reach d2 with their dependencies' outcomes.
	second := byID(d2.acquire(t, 2, 10*time.Second))
	if fmt.Sprint(ids(slices.Collect(mapValues(second)))) != "[flaky-failed test]" {
		t.Fatalf("second acquire got %v, want flaky-failed and test", ids(slices.Collect(mapValues(second))))
	}
	testTask := second["test"]
	if len(testTask.Dependencies) != 1 || testTask.Dependencies[0].State != errand.StateSucceeded ||
		string(testTask.Dependencies[0].Result) != `{"workspace":"/w/build"}` {
		t.Errorf("test's dependencies %+v, want build's result", testTask.Dependencies)
	}
	ff := second["flaky-failed"]
	if len(ff.Dependencies) != 1 || ff.Dependencies[0].State != errand.StateFailed ||
		ff.Dependencies[0].Error == nil || ff.Dependencies[0].Error.Code != errand.CodeExitCode {
		t.Errorf("flaky-failed's dependencies %+v, want flaky's error", ff.Dependencies)
	}
	for _, id := range []string{"build-failed", "flaky-passed"} {
		got, err := admin.GetTask(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != errand.StateSkipped || got.Error == nil || got.Error.Code != errand.CodeDependencyUnmet {
			t.Errorf("%s is %s (%+v), want skipped with dependency_unmet", id, got.State, got.Error)
		}
	}

	// Another delegate's lease is refused, and the holder's is kept.
	_, err = d1.UpdateStatus(ctx, testTask.ID, &client.StatusUpdate{Lease: testTask.Lease.Token, State: errand.StateRunning})
	if !errors.Is(err, client.ErrForbidden) && !errors.Is(err, client.ErrLeaseLost) {
		t.Errorf("report under another delegate's lease: %v, want forbidden or lease_lost", err)
	}
	d2.report(t, testTask, errand.StateRunning, "", nil)
	d2.report(t, testTask, errand.StateSucceeded, `{}`, nil)
	d2.report(t, ff, errand.StateSucceeded, `{}`, nil)

	// report runs always: after test succeeded and build-failed was skipped.
	last := d1.acquire(t, 1, 10*time.Second)[0]
	if last.ID != "report" || len(last.Dependencies) != 2 ||
		last.Dependencies[0].State != errand.StateSucceeded || last.Dependencies[1].State != errand.StateSkipped {
		t.Fatalf("last acquire %s with %+v, want report after succeeded and skipped", last.ID, last.Dependencies)
	}

	// Follow the log of a running task: lines arrive live, the follow ends
	// when the task does.
	d1.report(t, last, errand.StateRunning, "", nil)
	pr := newLineRecorder()
	followed := make(chan error, 1)
	go func() { followed <- admin.TaskLogs(ctx, last.ID, &client.LogOptions{Follow: true}, pr) }()
	for i := 0; i < 3; i++ {
		line := fmt.Sprintf("report line %d", i)
		if _, err := d1.AppendLogs(ctx, last.ID, &client.LogAppend{Lease: last.Lease.Token, Offset: int64(i), Lines: []string{line}}); err != nil {
			t.Fatal(err)
		}
		pr.waitFor(t, line+"\n", 10*time.Second)
	}
	d1.report(t, last, errand.StateSucceeded, `{}`, nil)
	select {
	case err := <-followed:
		if err != nil {
			t.Fatalf("follow: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("log follow did not end after the task ended")
	}

	// The whole log reads back, sealed or not.
	var sb strings.Builder
	if err := admin.TaskLogs(ctx, build.ID, nil, &sb); err != nil {
		t.Fatal(err)
	}
	if sb.String() != "compiling\nlinking\n" {
		t.Errorf("build log %q", sb.String())
	}
}

func mapValues(m map[string]*client.Task) func(func(*client.Task) bool) {
	return func(yield func(*client.Task) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

// lineRecorder is a writer whose content a test waits on.
type lineRecorder struct {
	mu      sync.Mutex
	text    strings.Builder
	changed chan struct{}
}

func newLineRecorder() *lineRecorder { return &lineRecorder{changed: make(chan struct{}, 1)} }

func (r *lineRecorder) Write(b []byte) (int, error) {
	r.mu.Lock()
	r.text.Write(b)
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	return len(b), nil
}

func (r *lineRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.text.String()
}

func (r *lineRecorder) waitFor(t *testing.T, s string, within time.Duration) {
	t.Helper()
	timeout := time.After(within)
	for !strings.Contains(r.String(), s) {
		select {
		case <-r.changed:
		case <-timeout:
			t.Fatalf("%q not written within %s; got %q", s, within, r.String())
		}
	}
}

func TestE2EStaleLeaseRefusedAfterExpiry(t *testing.T) {
	m := testenv.StartManager(t, testenv.Binary(t),
		"--heartbeat-interval", "200ms", "--lease-ttl", "1s", "--sweep-interval", "100ms")
	admin := testenv.Client(t, m.URL, m.AdminToken)
	ctx := context.Background()
	silent := register(t, m, "silent")
	alive := register(t, m, "alive")

	// alive heartbeats throughout; silent stops after acquiring.
	hbCtx, stopHB := context.WithCancel(ctx)
	var hb sync.WaitGroup
	hb.Add(1)
	go func() {
		defer hb.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			_, _ = alive.Heartbeat(hbCtx, alive.id, &client.HeartbeatRequest{})
			select {
			case <-hbCtx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { stopHB(); hb.Wait() })

	if _, err := admin.CreateTasks(ctx, []*client.TaskSpec{{ID: "job", Type: "e2e.step", MaxAttempts: 2}}); err != nil {
		t.Fatal(err)
	}
	first := silent.acquire(t, 1, 10*time.Second)[0]
	silent.report(t, first, errand.StateRunning, "", nil)

	// The silent delegate's lease expires and the task goes to alive.
	second := alive.acquire(t, 1, 20*time.Second)[0]
	if second.ID != "job" || second.Attempt != 2 || second.Lease.Token == first.Lease.Token {
		t.Fatalf("alive got %s attempt %d, want job's second attempt under a new lease", second.ID, second.Attempt)
	}
	_, err := silent.UpdateStatus(ctx, "job", &client.StatusUpdate{Lease: first.Lease.Token, State: errand.StateSucceeded, Result: json.RawMessage(`{"late":true}`)})
	if !errors.Is(err, client.ErrLeaseLost) {
		t.Fatalf("late result under the expired lease: %v, want lease_lost", err)
	}
	if _, err := silent.AppendLogs(ctx, "job", &client.LogAppend{Lease: first.Lease.Token, Lines: []string{"late"}}); !errors.Is(err, client.ErrLeaseLost) {
		t.Fatalf("late log under the expired lease: %v, want lease_lost", err)
	}
	alive.report(t, second, errand.StateRunning, "", nil)
	alive.report(t, second, errand.StateSucceeded, `{"by":"alive"}`, nil)
	got, err := admin.GetTask(ctx, "job")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != errand.StateSucceeded || string(got.Result) != `{"by":"alive"}` || got.DelegateID != alive.id {
		t.Errorf("job is %s with %s by %s, want alive's result", got.State, got.Result, got.DelegateID)
	}
	// The lease may have expired by itself before the delegate's silence
	// passed the TTL; the sweep marks the delegate lost soon after.
	var state errand.DelegateState
	for deadline := time.Now().Add(20 * time.Second); ; {
		d, err := admin.GetDelegate(ctx, silent.id)
		if err != nil {
			t.Fatal(err)
		}
		if state = d.State; state == errand.DelegateLost || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if state != errand.DelegateLost {
		t.Errorf("silent delegate is %s, want lost", state)
	}
}

func TestE2ECancelReachesHolder(t *testing.T) {
	m := testenv.StartManager(t, testenv.Binary(t))
	admin := testenv.Client(t, m.URL, m.AdminToken)
	ctx := context.Background()
	d := register(t, m, "holder")
	if _, err := admin.CreateTasks(ctx, []*client.TaskSpec{{ID: "long", Type: "e2e.step"}}); err != nil {
		t.Fatal(err)
	}
	task := d.acquire(t, 1, 10*time.Second)[0]
	d.report(t, task, errand.StateRunning, "", nil)

	// The holder long-polls for nothing but cancels and drain.
	type answer struct {
		resp *client.AcquireResponse
		err  error
		at   time.Time
	}
	answered := make(chan answer, 1)
	polling := make(chan struct{})
	go func() {
		close(polling)
		resp, err := d.Acquire(ctx, d.id, &client.AcquireRequest{Wait: errand.Duration(30 * time.Second), Max: 0})
		answered <- answer{resp, err, time.Now()}
	}()
	<-polling
	time.Sleep(200 * time.Millisecond) // let the long-poll reach the manager
	cancelled := time.Now()
	if err := admin.CancelTask(ctx, "long"); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-answered:
		if a.err != nil {
			t.Fatalf("acquire: %v", a.err)
		}
		if !slices.Contains(a.resp.Cancel, "long") {
			t.Fatalf("acquire answered %+v, want a cancel of long", a.resp)
		}
		t.Logf("cancel reached the holder %s after the request", a.at.Sub(cancelled))
	case <-time.After(10 * time.Second):
		t.Fatal("the holder's long-poll did not return the cancel")
	}
	hb, err := d.Heartbeat(ctx, d.id, &client.HeartbeatRequest{Running: []string{"long"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(hb.Cancel, "long") {
		t.Errorf("heartbeat cancel %v, want long", hb.Cancel)
	}
	got, err := admin.GetTask(ctx, "long")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != errand.StateRunning || !got.CancelRequested {
		t.Errorf("long is %s, cancel requested %v; want running with cancel requested", got.State, got.CancelRequested)
	}
	d.report(t, task, errand.StateCancelled, "", nil)
	if err := admin.CancelTask(ctx, "long"); !errors.Is(err, client.ErrIllegalTransition) {
		t.Errorf("cancel of an ended task: %v, want illegal_transition", err)
	}
}

func TestE2EDurableAcrossKill(t *testing.T) {
	m := testenv.StartManager(t, testenv.Binary(t))
	ctx := context.Background()
	admin := testenv.Client(t, m.URL, m.AdminToken)
	d := register(t, m, "writer")
	if _, err := admin.CreateTasks(ctx, []*client.TaskSpec{{ID: "logger", Type: "e2e.step"}}); err != nil {
		t.Fatal(err)
	}
	task := d.acquire(t, 1, 10*time.Second)[0]
	d.report(t, task, errand.StateRunning, "", nil)

	// Load: one goroutine creates tasks, another appends log lines; each
	// records what the manager acknowledged, until the manager dies.
	creator := testenv.Client(t, m.URL, m.AdminToken)
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var (
		wg       sync.WaitGroup
		acked    []string
		logNext  int64
		logLines []string
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; loadCtx.Err() == nil; i++ {
			id := fmt.Sprintf("load-%05d", i)
			tasks, err := creator.CreateTasks(loadCtx, []*client.TaskSpec{{ID: id, Type: "e2e.load"}})
			if err != nil {
				return
			}
			acked = append(acked, tasks[0].ID)
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; loadCtx.Err() == nil; i++ {
			lines := []string{fmt.Sprintf("line %d a", i), fmt.Sprintf("line %d b", i)}
			res, err := d.AppendLogs(loadCtx, "logger", &client.LogAppend{Lease: task.Lease.Token, Offset: logNext, Lines: lines})
			if err != nil {
				return
			}
			logLines = append(logLines, lines...)
			logNext = res.Next
		}
	}()
	time.Sleep(time.Second)
	m.Kill()
	stopLoad()
	wg.Wait()
	if len(acked) == 0 || logNext == 0 {
		t.Fatalf("no load acknowledged before the kill: %d tasks, %d lines", len(acked), logNext)
	}
	t.Logf("acknowledged before SIGKILL: %d tasks, %d log lines", len(acked), logNext)

	m.Restart(t)
	admin = testenv.Client(t, m.URL, m.AdminToken)
	for _, id := range acked {
		got, err := admin.GetTask(ctx, id)
		if err != nil {
			t.Fatalf("task %s acknowledged before the kill: %v", id, err)
		}
		if got.State != errand.StateQueued {
			t.Errorf("task %s is %s, want queued", id, got.State)
		}
	}
	var sb strings.Builder
	if err := admin.TaskLogs(ctx, "logger", nil, &sb); err != nil {
		t.Fatal(err)
	}
	stored := strings.Split(strings.TrimSuffix(sb.String(), "\n"), "\n")
	if int64(len(stored)) < logNext {
		t.Fatalf("%d log lines after restart, %d were acknowledged", len(stored), logNext)
	}
	if !slices.Equal(stored[:len(logLines)], logLines) {
		t.Errorf("log after restart differs from the acknowledged lines")
	}
	// The holder still holds its lease and can finish.
	d.report(t, task, errand.StateSucceeded, `{}`, nil)
}

func TestE2EGracefulStop(t *testing.T) {
	m := testenv.StartManager(t, testenv.Binary(t), "--heartbeat-interval", "3s")
	d := register(t, m, "poller")
	reg, err := testenv.Client(t, m.URL, m.RegistrationToken).Register(context.Background(), &client.RegisterRequest{Name: "interval", Capacity: 1})
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(reg.HeartbeatInterval) != 3*time.Second {
		t.Errorf("heartbeat interval %s, want the --heartbeat-interval 3s", reg.HeartbeatInterval)
	}
	if !strings.Contains(m.Output(), "admin token: "+m.DataDir) {
		t.Errorf("the manager did not say where the admin token is:\n%s", m.Output())
	}

	// A long-poll in flight does not hold up a SIGTERM.
	polled := make(chan error, 1)
	go func() {
		_, err := d.Acquire(context.Background(), d.id, &client.AcquireRequest{Wait: errand.Duration(50 * time.Second), Max: 1})
		polled <- err
	}()
	time.Sleep(200 * time.Millisecond) // let the long-poll reach the manager
	if err := m.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	select {
	case err := <-polled:
		t.Logf("long-poll ended with %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll outlived the manager")
	}
}
