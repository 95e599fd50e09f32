package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
	"github.com/errandci/errand/tasks"
)

// fastManager is a manager whose delegates are found lost within a
// second.
func fastManager(t testing.TB) *testenv.Manager {
	return testenv.StartManager(t, testenv.Binary(t),
		"--heartbeat-interval", "200ms", "--lease-ttl", "1s", "--sweep-interval", "100ms")
}

// delegateProc is a running `errand delegate` (or another program that
// takes the same environment).
type delegateProc struct {
	name string
	cmd  *exec.Cmd
	out  *procOutput
	done chan struct{}
}

type procOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *procOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *procOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// cleanEnv is the test's environment without ERRAND_ settings.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ERRAND_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

func startProc(t testing.TB, name string, cmd *exec.Cmd) *delegateProc {
	t.Helper()
	d := &delegateProc{name: name, cmd: cmd, out: &procOutput{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.signal(syscall.SIGCONT)
		d.signal(syscall.SIGKILL)
		<-d.done
		if t.Failed() {
			t.Logf("%s output:\n%s", name, d.out.String())
		}
	})
	return d
}

// startDelegate runs `errand delegate` against m.
func startDelegate(t testing.TB, m *testenv.Manager, name, stateDir string, extra ...string) *delegateProc {
	t.Helper()
	args := []string{"delegate", "--manager", m.URL, "--name", name, "--state-dir", stateDir}
	for _, def := range [][2]string{{"--capacity", "2"}, {"--log-level", "debug"}} {
		if !slices.Contains(extra, def[0]) {
			args = append(args, def[0], def[1])
		}
	}
	args = append(args, extra...)
	cmd := exec.Command(testenv.Binary(t), args...)
	cmd.Env = cleanEnv("ERRAND_TOKEN=" + m.RegistrationToken)
	return startProc(t, name, cmd)
}

func (d *delegateProc) signal(sig syscall.Signal) {
	select {
	case <-d.done:
	default:
		_ = d.cmd.Process.Signal(sig)
	}
}

// wait waits for the process to exit and returns its exit code.
func (d *delegateProc) wait(t testing.TB, within time.Duration) int {
	t.Helper()
	select {
	case <-d.done:
		return d.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("%s still running after %s", d.name, within)
		return -1
	}
}

// waitActive waits until a delegate of that name is registered and
// returns it.
func waitActive(t testing.TB, admin client.Client, name string) *client.Delegate {
	t.Helper()
	var found *client.Delegate
	poll(t, "delegate "+name+" registered", 30*time.Second, func() bool {
		l, err := admin.ListDelegates(context.Background())
		if err != nil {
			return false
		}
		for _, d := range l.Items {
			if d.Name == name && d.State == errand.DelegateActive {
				found = d
				return true
			}
		}
		return false
	})
	return found
}

func poll(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitState polls a task until its state is terminal (or want) and
// returns it.
func waitState(t testing.TB, admin client.Client, id string, within time.Duration, want ...errand.State) *client.Task {
	t.Helper()
	var (
		task *client.Task
		err  error
	)
	deadline := time.Now().Add(within)
	for {
		task, err = admin.GetTask(context.Background(), id)
		if err == nil {
			if slices.Contains(want, task.State) || len(want) == 0 && task.State.Terminal() {
				return task
			}
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("timed out after %s waiting for task %s to end: %v", within, id, err)
	}
	t.Fatalf("timed out after %s waiting for task %s to end: state %s (attempt %d, delegate %s, error %v), want %v",
		within, id, task.State, task.Attempt, task.DelegateID, task.Error, want)
	return nil
}

func taskLog(t testing.TB, admin client.Client, id string) string {
	t.Helper()
	var b bytes.Buffer
	if err := admin.TaskLogs(context.Background(), id, &client.LogOptions{}, &b); err != nil {
		t.Fatalf("logs of %s: %v", id, err)
	}
	return b.String()
}

func mustJSON(t testing.TB, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// execStage creates an exec stage: initialize, the steps in order, and
// cleanup (always). With affinity, steps and cleanup follow initialize's
// delegate, as pipelines do.
func execStage(t testing.TB, admin client.Client, prefix string, affinity bool, steps ...tasks.ExecuteData) []*client.Task {
	t.Helper()
	initID := prefix + "-init"
	specs := []*client.TaskSpec{{ID: initID, Type: errand.TypeExecInitialize,
		Data: mustJSON(t, tasks.InitializeData{Stage: tasks.Stage{RunID: prefix, Stage: "build"}})}}
	prev := initID
	aff := ""
	if affinity {
		aff = initID
	}
	for i, s := range steps {
		s.Stage = tasks.Stage{RunID: prefix, Stage: "build"}
		id := fmt.Sprintf("%s-step%d", prefix, i)
		deps := []errand.Dependency{{Task: initID}}
		if prev != initID {
			deps = append(deps, errand.Dependency{Task: prev})
		}
		specs = append(specs, &client.TaskSpec{ID: id, Type: errand.TypeExecExecute, Data: mustJSON(t, s),
			DependsOn: deps, Affinity: aff, MaxAttempts: 3})
		prev = id
	}
	specs = append(specs, &client.TaskSpec{ID: prefix + "-cleanup", Type: errand.TypeExecCleanup,
		Data:      mustJSON(t, tasks.CleanupData{Stage: tasks.Stage{RunID: prefix, Stage: "build"}}),
		DependsOn: []errand.Dependency{{Task: initID}, {Task: prev, Condition: errand.Always}}, Affinity: aff})
	created, err := admin.CreateTasks(context.Background(), specs)
	if err != nil {
		t.Fatalf("create stage %s: %v", prefix, err)
	}
	return created
}

func TestE2EDelegateRunsExecStage(t *testing.T) {
	m := fastManager(t)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	state := t.TempDir()
	startDelegate(t, m, "host-1", state)
	waitActive(t, admin, "host-1")

	ok := tasks.ExecuteData{Step: "greet", Commands: []string{"echo hello", `echo "token=$DEPLOY_KEY"`, "echo to stderr >&2"},
		Secrets: map[string]string{"DEPLOY_KEY": "k3y-v4lue-123"}}
	failing := tasks.ExecuteData{Step: "fail", Commands: []string{"echo before", "exit 3", "echo never"}}
	stage := execStage(t, admin, "run1", true, ok, failing)
	cleanup := waitState(t, admin, "run1-cleanup", 60*time.Second)
	if cleanup.State != errand.StateSucceeded {
		t.Fatalf("cleanup %s: %+v", cleanup.State, cleanup.Error)
	}

	step0 := waitState(t, admin, "run1-step0", time.Second)
	if step0.State != errand.StateSucceeded {
		t.Fatalf("step0 %s %+v", step0.State, step0.Error)
	}
	var res tasks.ExecuteResult
	if err := json.Unmarshal(step0.Result, &res); err != nil || res.ExitCode != 0 {
		t.Fatalf("step0 result %s: %v", step0.Result, err)
	}
	log := taskLog(t, admin, "run1-step0")
	if log != "hello\ntoken=******\nto stderr\n" {
		t.Fatalf("step0 log %q", log)
	}

	step1 := waitState(t, admin, "run1-step1", time.Second)
	if step1.State != errand.StateFailed || step1.Error == nil || step1.Error.Code != errand.CodeExitCode || !strings.Contains(step1.Error.Reason, "code 3") {
		t.Fatalf("step1 %s %+v", step1.State, step1.Error)
	}
	// The delegate reports the result with the failure; the store keeps
	// results of succeeded tasks only, so it may not be shown.
	if len(step1.Result) > 0 {
		if err := json.Unmarshal(step1.Result, &res); err != nil || res.ExitCode != 3 {
			t.Fatalf("step1 result %s: %v", step1.Result, err)
		}
	}
	if log := taskLog(t, admin, "run1-step1"); log != "before\n" {
		t.Fatalf("step1 log %q", log)
	}
	entries, _ := os.ReadDir(filepath.Join(state, "workspaces"))
	if len(entries) != 0 {
		t.Fatalf("workspaces left after cleanup: %v", entries)
	}
	if len(stage) != 4 {
		t.Fatalf("stage of %d tasks", len(stage))
	}
}

func TestE2EDelegateLostTaskRetriedElsewhere(t *testing.T) {
	m := fastManager(t)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	state := t.TempDir() // siblings on one host share the state dir
	a := startDelegate(t, m, "first", state)
	waitActive(t, admin, "first")

	slow := tasks.ExecuteData{Step: "slow", Commands: []string{"echo started", "sleep 2", "echo finished"}}

	// A frozen delegate loses its lease; when it wakes, its late outcome
	// is refused and the task keeps the second delegate's.
	execStage(t, admin, "frozen", false, slow)
	waitState(t, admin, "frozen-step0", 30*time.Second, errand.StateRunning)
	a.signal(syscall.SIGSTOP)
	b := startDelegate(t, m, "second", state)
	bd := waitActive(t, admin, "second")
	done := waitState(t, admin, "frozen-step0", 30*time.Second)
	// The frozen delegate's pending long-poll may be handed the requeued
	// task once more before the second gets it: attempt 2 or 3.
	if done.State != errand.StateSucceeded || done.DelegateID != bd.ID || done.Attempt < 2 {
		t.Fatalf("after the first froze: %s on %s attempt %d; want succeeded on %s on a later attempt", done.State, done.DelegateID, done.Attempt, bd.ID)
	}
	a.signal(syscall.SIGCONT)
	poll(t, "the first delegate to see its lease lost", 30*time.Second, func() bool {
		return strings.Contains(a.out.String(), "lease")
	})
	time.Sleep(500 * time.Millisecond)
	after, _ := admin.GetTask(context.Background(), "frozen-step0")
	if after.State != errand.StateSucceeded || after.DelegateID != bd.ID || string(after.Result) != string(done.Result) {
		t.Fatalf("late outcome overwrote the task: %+v", after)
	}
	waitState(t, admin, "frozen-cleanup", 30*time.Second)

	// A killed delegate's task is retried on a sibling.
	b.signal(syscall.SIGKILL)
	b.wait(t, 10*time.Second)
	poll(t, "the first delegate active again", 30*time.Second, func() bool {
		d, err := admin.GetDelegate(context.Background(), a.delegateID(t, admin))
		return err == nil && d.State == errand.DelegateActive
	})
	execStage(t, admin, "killed", false, slow)
	running := waitState(t, admin, "killed-step0", 30*time.Second, errand.StateRunning)
	aID := running.DelegateID
	a.signal(syscall.SIGKILL)
	a.wait(t, 10*time.Second)
	c := startDelegate(t, m, "third", state)
	cd := waitActive(t, admin, "third")
	done = waitState(t, admin, "killed-step0", 60*time.Second)
	if done.State != errand.StateSucceeded || done.DelegateID != cd.ID || done.DelegateID == aID {
		t.Fatalf("after the kill: %s on %s; want succeeded on %s", done.State, done.DelegateID, cd.ID)
	}
	if log := taskLog(t, admin, "killed-step0"); !strings.HasSuffix(log, "started\nfinished\n") {
		t.Fatalf("log of the retried step %q", log)
	}
	_ = c
}

// delegateID finds the id of the delegate by its name.
func (d *delegateProc) delegateID(t testing.TB, admin client.Client) string {
	t.Helper()
	l, err := admin.ListDelegates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range l.Items {
		if x.Name == d.name {
			return x.ID
		}
	}
	t.Fatalf("no delegate named %s", d.name)
	return ""
}

func TestE2EDelegateDrainsOnSIGTERM(t *testing.T) {
	m := fastManager(t)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	d := startDelegate(t, m, "drainer", t.TempDir())
	id := waitActive(t, admin, "drainer").ID
	execStage(t, admin, "drain", true, tasks.ExecuteData{Step: "s", Commands: []string{"echo start", "sleep 1", "echo end"}})
	waitState(t, admin, "drain-step0", 30*time.Second, errand.StateRunning)
	d.signal(syscall.SIGTERM)
	if code := d.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("delegate exited %d after SIGTERM", code)
	}
	step := waitState(t, admin, "drain-step0", time.Second)
	if step.State != errand.StateSucceeded {
		t.Fatalf("running step after drain: %s %+v", step.State, step.Error)
	}
	if log := taskLog(t, admin, "drain-step0"); log != "start\nend\n" {
		t.Fatalf("log %q", log)
	}
	if _, err := admin.GetDelegate(context.Background(), id); !errors.Is(err, errand.ErrNotFound) {
		t.Fatalf("delegate after drain: %v; want deregistered", err)
	}
	cleanup, _ := admin.GetTask(context.Background(), "drain-cleanup")
	if cleanup.State.Active() {
		t.Fatalf("a draining delegate took the cleanup: %s", cleanup.State)
	}
}

var childPID = regexp.MustCompile(`child=(\d+)`)

func TestE2ECancelKillsStepProcessGroup(t *testing.T) {
	m := fastManager(t)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	startDelegate(t, m, "canceller", t.TempDir())
	waitActive(t, admin, "canceller")
	execStage(t, admin, "cxl", true, tasks.ExecuteData{Step: "s", Commands: []string{`sleep 300 & echo "child=$!"; wait`}})
	var pid int
	poll(t, "the step's child pid in its log", 30*time.Second, func() bool {
		var b bytes.Buffer
		_ = admin.TaskLogs(context.Background(), "cxl-step0", &client.LogOptions{}, &b)
		if mm := childPID.FindStringSubmatch(b.String()); mm != nil {
			pid, _ = strconv.Atoi(mm[1])
			return true
		}
		return false
	})
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("child %d not running before cancel: %v", pid, err)
	}
	if err := admin.CancelTask(context.Background(), "cxl-step0"); err != nil {
		t.Fatal(err)
	}
	step := waitState(t, admin, "cxl-step0", 30*time.Second)
	if step.State != errand.StateCancelled {
		t.Fatalf("cancelled step ended %s", step.State)
	}
	poll(t, fmt.Sprintf("child %d gone", pid), 10*time.Second, func() bool { return processGone(pid) })
	if cl := waitState(t, admin, "cxl-cleanup", 30*time.Second); cl.State != errand.StateSucceeded {
		t.Fatalf("cleanup after cancel: %s", cl.State)
	}
}

// processGone reports whether pid no longer runs; a zombie waiting for
// its reaper counts as gone.
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+1:])
	return len(f) > 0 && f[0] == "Z"
}

func TestE2EDelegateWrongToken(t *testing.T) {
	m := fastManager(t)
	cmd := exec.Command(testenv.Binary(t), "delegate", "--manager", m.URL, "--state-dir", t.TempDir())
	cmd.Env = cleanEnv("ERRAND_TOKEN=not-the-token")
	d := startProc(t, "bad-token", cmd)
	if code := d.wait(t, 30*time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if out := d.out.String(); !strings.Contains(out, "refused the registration token") {
		t.Fatalf("output does not say the token was refused:\n%s", out)
	}
}

func TestE2EEmbedExample(t *testing.T) {
	m := fastManager(t)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	bin := filepath.Join(t.TempDir(), "embed")
	build := exec.Command("go", "build", "-o", bin, "../../examples/embed")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build examples/embed: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-state-dir", t.TempDir())
	cmd.Env = cleanEnv("ERRAND_MANAGER="+m.URL, "ERRAND_TOKEN="+m.RegistrationToken)
	d := startProc(t, "embed", cmd)
	created, err := admin.CreateTasks(context.Background(), []*client.TaskSpec{
		{Type: "greet", Data: json.RawMessage(`{"name":"ada"}`)},
		{Type: "greet", Data: json.RawMessage(`{}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	good := waitState(t, admin, created[0].ID, 30*time.Second)
	if good.State != errand.StateSucceeded || string(good.Result) != `{"greeting":"hello, ada"}` {
		t.Fatalf("greet: %s %s %+v", good.State, good.Result, good.Error)
	}
	if log := taskLog(t, admin, good.ID); log != "greeting ada\n" {
		t.Fatalf("greet log %q", log)
	}
	bad := waitState(t, admin, created[1].ID, 30*time.Second)
	if bad.State != errand.StateFailed || bad.Error.Code != errand.CodeInvalid {
		t.Fatalf("greet without a name: %s %+v", bad.State, bad.Error)
	}
	d.signal(syscall.SIGTERM)
	if code := d.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("embed exited %d", code)
	}
}

// benchStage starts a manager and a delegate and returns an admin client
// and a succeeded initialize task that steps can depend on.
func benchStage(b *testing.B) (client.Client, string) {
	m := testenv.StartManager(b, testenv.Binary(b))
	admin := testenv.Client(b, m.URL, m.AdminToken)
	startDelegate(b, m, "bench", b.TempDir(), "--capacity", "4", "--log-level", "warn")
	waitActive(b, admin, "bench")
	created, err := admin.CreateTasks(context.Background(), []*client.TaskSpec{{Type: errand.TypeExecInitialize,
		Data: mustJSON(b, tasks.InitializeData{Stage: tasks.Stage{RunID: "bench", Stage: "s"}})}})
	if err != nil {
		b.Fatal(err)
	}
	if init := waitState(b, admin, created[0].ID, 30*time.Second); init.State != errand.StateSucceeded {
		b.Fatalf("initialize: %s", init.State)
	}
	return admin, created[0].ID
}

func createStep(b *testing.B, admin client.Client, initID string, commands ...string) string {
	created, err := admin.CreateTasks(context.Background(), []*client.TaskSpec{{Type: errand.TypeExecExecute,
		Data:      mustJSON(b, tasks.ExecuteData{Stage: tasks.Stage{RunID: "bench", Stage: "s"}, Step: "x", Commands: commands}),
		DependsOn: []errand.Dependency{{Task: initID}}}})
	if err != nil {
		b.Fatal(err)
	}
	return created[0].ID
}

// pollFast polls a task every millisecond until cond holds for it.
func pollFast(b *testing.B, admin client.Client, id string, cond func(*client.Task) bool) *client.Task {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		t, err := admin.GetTask(context.Background(), id)
		if err == nil && cond(t) {
			return t
		}
		time.Sleep(time.Millisecond)
	}
	b.Fatalf("task %s: timed out", id)
	return nil
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// BenchmarkCancelLatency measures how long a running step takes to end
// after its cancellation through the API: the delegate hears of it, the
// handler's context ends, the process group is killed and the outcome is
// reported. Reported as p50 and p99 in milliseconds.
func BenchmarkCancelLatency(b *testing.B) {
	admin, initID := benchStage(b)
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := createStep(b, admin, initID, "sleep 300")
		pollFast(b, admin, id, func(t *client.Task) bool { return t.State == errand.StateRunning })
		start := time.Now()
		if err := admin.CancelTask(context.Background(), id); err != nil {
			b.Fatal(err)
		}
		t := pollFast(b, admin, id, func(t *client.Task) bool { return t.State.Terminal() })
		lat = append(lat, time.Since(start))
		if t.State != errand.StateCancelled {
			b.Fatalf("cancelled step ended %s", t.State)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(lat, 0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
}

// BenchmarkStepOverhead measures a step of `true` through the manager and
// a delegate, from creation to its reported success, against running
// `sh -c true` directly; it reports the p50 of each and the p50 added.
func BenchmarkStepOverhead(b *testing.B) {
	admin, initID := benchStage(b)
	var step, direct []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		id := createStep(b, admin, initID, "true")
		t := pollFast(b, admin, id, func(t *client.Task) bool { return t.State.Terminal() })
		step = append(step, time.Since(start))
		if t.State != errand.StateSucceeded {
			b.Fatalf("step ended %s", t.State)
		}
		start = time.Now()
		if err := exec.Command("sh", "-c", "true").Run(); err != nil {
			b.Fatal(err)
		}
		direct = append(direct, time.Since(start))
	}
	b.StopTimer()
	s, d := percentile(step, 0.5), percentile(direct, 0.5)
	b.ReportMetric(float64(s.Microseconds())/1000, "step-p50-ms")
	b.ReportMetric(float64(d.Microseconds())/1000, "sh-p50-ms")
	b.ReportMetric(float64((s-d).Microseconds())/1000, "added-p50-ms")
}

func TestE2EDelegateResumesIdentityAfterKill(t *testing.T) {
	m := fastManager(t)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	state := t.TempDir()
	d := startDelegate(t, m, "phoenix", state)
	first := waitActive(t, admin, "phoenix")
	// The delegate keeps its identity once registered; killed before it
	// wrote it, it would rightly come back as a new delegate.
	poll(t, "the identity written", 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(state, "identity-phoenix.json"))
		return err == nil
	})
	d.signal(syscall.SIGKILL)
	d.wait(t, 10*time.Second)
	startDelegate(t, m, "phoenix", state)
	poll(t, "the restarted delegate heartbeating", 30*time.Second, func() bool {
		got, err := admin.GetDelegate(context.Background(), first.ID)
		return err == nil && got.State == errand.DelegateActive && got.LastHeartbeat.After(first.LastHeartbeat)
	})
	l, err := admin.ListDelegates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 1 {
		t.Fatalf("%d delegates after the restart; want the same one resumed", len(l.Items))
	}
	fi, err := os.Stat(filepath.Join(state, "identity-phoenix.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity file: %v %v", fi, err)
	}
}
