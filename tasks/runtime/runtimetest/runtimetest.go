// Package runtimetest is the conformance suite of runtime drivers: the
// same cases, run through the runtime's handlers and directly against
// its Driver and Handle, for every runtime (tasks/exec on the host,
// tasks/docker in containers). A runtime is done when Run passes.
package runtimetest

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/router"
	"github.com/errandci/errand/tasks"
	"github.com/errandci/errand/tasks/runtime"
)

// Runtime is what the cases need of the runtime under test.
type Runtime struct {
	// New returns the runtime's handlers as a delegate process starting
	// on this host and state has them: a second call is a restart.
	// Their StopGrace is short (a second or less).
	New func(t *testing.T) *runtime.Handlers
	// Stage returns the data of a stage's initialize task that the
	// runtime can run (e.g. with a local image).
	Stage func() tasks.InitializeData
	// Workspace is the workspace's path as steps see it.
	Workspace func(res tasks.InitializeResult) string
	// Remains lists what is left of the stage whose initialize task is
	// init; nothing once its cleanup ran.
	Remains func(t *testing.T, init errand.DependencyResult) []string
}

// Run runs every case against rt.
func Run(t *testing.T, rt Runtime) {
	t.Run("Steps", func(t *testing.T) { testSteps(t, rt) })
	t.Run("Workspace", func(t *testing.T) { testWorkspace(t, rt) })
	t.Run("Stop", func(t *testing.T) { testStop(t, rt) })
	t.Run("Leftovers", func(t *testing.T) { testLeftovers(t, rt) })
	t.Run("CleanupAfterRestart", func(t *testing.T) { testCleanupAfterRestart(t, rt) })
	t.Run("Handle", func(t *testing.T) { testHandle(t, rt) })
	t.Run("Archive", func(t *testing.T) { testArchive(t, rt) })
	t.Run("GitSource", func(t *testing.T) { testGitSource(t, rt) })
}

// Log is a task log for tests, safe for the handlers' goroutines.
type Log struct {
	mu    sync.Mutex
	b     bytes.Buffer
	masks []string
}

// Write appends p to the log.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := string(p)
	for _, m := range l.masks {
		s = strings.ReplaceAll(s, m, "[masked]")
	}
	l.b.WriteString(s)
	return len(p), nil
}

// String is what the log holds.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// maskingLog is a Log that masks, as the delegate's live log does: a
// router.Masker.
type maskingLog struct{ Log }

func (l *maskingLog) Mask(values ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.masks = append(l.masks, values...)
}

// stage is one initialized stage of the runtime under test.
type stage struct {
	t   *testing.T
	rt  Runtime
	h   *runtime.Handlers
	r   *router.Router
	dep errand.DependencyResult
	res tasks.InitializeResult
	seq int
}

// serveWith runs one task through r and returns its outcome and log.
func serveWith(ctx context.Context, t *testing.T, r *router.Router, id, typ string, data any, logs interface {
	Write([]byte) (int, error)
	String() string
}, deps ...errand.DependencyResult) (router.Outcome, string) {
	t.Helper()
	b, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	task := &errand.Task{ID: id, RunID: "r1", Type: typ, Data: b, Dependencies: deps, DelegateID: "d1",
		Lease: &errand.Lease{Token: "l", DelegateID: "d1"}}
	out := r.Serve(ctx, task, logs)
	return out, logs.String()
}

func newRouter(h *runtime.Handlers) *router.Router {
	r := router.New(router.WithGrace(30 * time.Second))
	h.Register(r)
	return r
}

// taskID is an id unique to the test and n, usable in resource names.
func taskID(t *testing.T, n int) string {
	return strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()) + "-" + strconv.Itoa(n)
}

// initialize runs the stage's initialize task; the stage is cleaned up
// when the test ends.
func initialize(t *testing.T, rt Runtime) *stage {
	t.Helper()
	s, out, logs := initializeWith(t, rt, rt.Stage())
	if s == nil {
		t.Fatalf("initialize: %+v %v\n%s", out, out.Error, logs)
	}
	return s
}

func (s *stage) cleanup(r *router.Router) (router.Outcome, string) {
	s.t.Helper()
	s.seq++
	return serveWith(context.Background(), s.t, r, taskID(s.t, s.seq), s.h.Driver.Name()+".cleanup",
		tasks.CleanupData{Stage: tasks.Stage{RunID: "r1", Stage: "build"}}, &Log{}, s.dep)
}

// execute runs one step of the stage, logging to logs.
func (s *stage) execute(ctx context.Context, data tasks.ExecuteData, logs interface {
	Write([]byte) (int, error)
	String() string
}) (router.Outcome, string) {
	s.t.Helper()
	s.seq++
	return serveWith(ctx, s.t, s.r, taskID(s.t, s.seq), s.h.Driver.Name()+".execute", data, logs, s.dep)
}

// mustRun runs a step that must succeed and returns its log.
func (s *stage) mustRun(commands ...string) string {
	s.t.Helper()
	out, logs := s.execute(context.Background(), step(commands...), &Log{})
	if out.State != errand.StateSucceeded {
		s.t.Fatalf("step %q: %+v %v\n%s", commands, out, out.Error, logs)
	}
	return logs
}

func step(commands ...string) tasks.ExecuteData {
	return tasks.ExecuteData{Stage: tasks.Stage{RunID: "r1", Stage: "build"}, Step: "s", Commands: commands}
}

func testSteps(t *testing.T, rt Runtime) {
	s := initialize(t, rt)
	cases := []struct {
		name     string
		data     tasks.ExecuteData
		masking  bool // the log masks itself
		wantExit int
		wantLog  string // exact log, or a substring when wantSub
		wantSub  bool
	}{
		{name: "echo", data: step("echo hello"), wantLog: "hello\n"},
		// stdout and stderr may be two streams: lines keep their order
		// within each, and across them once a line had time to arrive.
		{name: "stdout and stderr", data: step("echo one", "sleep 0.1", "echo two >&2", "sleep 0.1", "echo three", "printf four"),
			wantLog: "one\ntwo\nthree\nfour\n"},
		{name: "first failure ends the step", data: step("echo a", "exit 3", "echo never"),
			wantExit: 3, wantLog: "a\n"},
		{name: "command not found", data: step("no-such-command-xyz"),
			wantExit: 127, wantLog: "no-such-command-xyz", wantSub: true},
		{name: "shell not found", data: func() tasks.ExecuteData {
			d := step("true")
			d.Shell = "/no/such/shell-xyz -e"
			return d
		}(), wantExit: 127, wantLog: "/no/such/shell-xyz", wantSub: true},
		{name: "custom shell", data: func() tasks.ExecuteData {
			d := step("false", "echo still")
			d.Shell = "sh"
			return d
		}(), wantLog: "still\n"},
		{name: "environment", data: func() tasks.ExecuteData {
			d := step(`echo "$GREETING $ERRAND_STEP $ERRAND_STAGE $ERRAND_RUN_ID $CI"`, `test -z "$ERRAND_TOKEN"`)
			d.Environment = map[string]string{"GREETING": "hi"}
			return d
		}(), wantLog: "hi s build r1 true\n"},
		{name: "secrets masked", data: func() tasks.ExecuteData {
			d := step(`echo "key=$KEY"`, "sleep 0.1", `echo "$KEY" >&2`, "sleep 0.1", `printf '%s' "$KEY" | cut -c1-3`)
			d.Secrets = map[string]string{"KEY": "sup3rs3cret"}
			return d
		}(), wantLog: "key=******\n******\nsup\n"},
		{name: "secrets given to a log that masks", masking: true, data: func() tasks.ExecuteData {
			d := step(`echo "key=$KEY"`)
			d.Secrets = map[string]string{"KEY": "sup3rs3cret"}
			return d
		}(), wantLog: "key=[masked]\n"},
	}
	t.Setenv("ERRAND_TOKEN", "must-not-leak")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logs interface {
				Write([]byte) (int, error)
				String() string
			} = &Log{}
			if tc.masking {
				logs = &maskingLog{}
			}
			out, log := s.execute(context.Background(), tc.data, logs)
			want := errand.StateSucceeded
			if tc.wantExit != 0 {
				want = errand.StateFailed
			}
			CheckStep(t, out, log, want, tc.wantExit, tc.wantLog, tc.wantSub)
		})
	}
	t.Run("no commands", func(t *testing.T) {
		out, _ := s.execute(context.Background(), step(), &Log{})
		if out.State != errand.StateFailed || out.Error.Code != errand.CodeInvalid {
			t.Fatalf("step with no commands: %+v %v", out, out.Error)
		}
	})
}

// CheckStep fails t unless a step's outcome out has state and, in its
// result, exit code exit (with an exit_code error naming it when not 0),
// and its log is wantLog (holds it, with sub).
func CheckStep(t testing.TB, out router.Outcome, log string, state errand.State, exit int, wantLog string, sub bool) {
	t.Helper()
	if out.State != state {
		t.Fatalf("state %s (%v), want %s; log %q", out.State, out.Error, state, log)
	}
	if sub && !strings.Contains(log, wantLog) || !sub && log != wantLog {
		t.Fatalf("log %q, want %q", log, wantLog)
	}
	var res tasks.ExecuteResult
	if err := json.Unmarshal(out.Result, &res); err != nil {
		t.Fatalf("result %s: %v", out.Result, err)
	}
	if res.ExitCode != exit || res.DurationMS < 0 {
		t.Fatalf("result %+v, want exit code %d", res, exit)
	}
	if exit != 0 && (out.Error.Code != errand.CodeExitCode || !strings.Contains(out.Error.Reason, strconv.Itoa(exit))) {
		t.Fatalf("error %v, want exit_code naming %d", out.Error, exit)
	}
}

func testWorkspace(t *testing.T, rt Runtime) {
	s := initialize(t, rt)
	ws := rt.Workspace(s.res)
	if ws == "" {
		t.Fatalf("initialize result %+v names no workspace", s.res)
	}
	if logs := s.mustRun("echo kept > file", "pwd"); logs != ws+"\n" {
		t.Fatalf("a step starts in %q, want the workspace %s", logs, ws)
	}
	if logs := s.mustRun(`cat "$ERRAND_WORKSPACE/file"`, "cat file"); logs != "kept\nkept\n" {
		t.Fatalf("the next step reads %q", logs)
	}
	d := step("pwd", "cat ../../file")
	d.WorkingDir = "sub/dir"
	if out, logs := s.execute(context.Background(), d, &Log{}); out.State != errand.StateSucceeded || logs != ws+"/sub/dir\nkept\n" {
		t.Fatalf("working_dir sub/dir: %+v %v %q", out, out.Error, logs)
	}
	for _, wd := range []string{"../..", "/etc"} {
		d := step("pwd")
		d.WorkingDir = wd
		if out, _ := s.execute(context.Background(), d, &Log{}); out.State != errand.StateFailed || out.Error.Code != errand.CodeInvalid {
			t.Fatalf("working_dir %q: %+v %v; want failed invalid", wd, out, out.Error)
		}
	}
}

// testStop cancels or times out running steps: a step that ends on
// SIGTERM ends at once, one that ignores it is killed after the grace.
func testStop(t *testing.T, rt Runtime) {
	s := initialize(t, rt)
	grace := s.h.StopGrace
	cases := []struct {
		name      string
		script    string
		cause     error
		wantState errand.State
		ignores   bool
		wantLog   string
	}{
		{"cancel", `trap 'echo got TERM; exit 0' TERM; echo started; while :; do sleep 0.1; done`, router.ErrCancelled, errand.StateCancelled, false, "got TERM\n"},
		{"timeout", `trap 'echo got TERM; exit 0' TERM; echo started; while :; do sleep 0.1; done`, router.ErrTimedOut, errand.StateTimedOut, false, "got TERM\n"},
		{"TERM ignored, killed after the grace", `trap '' TERM; echo started; while :; do sleep 0.1; done`, router.ErrCancelled, errand.StateCancelled, true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logs := &Log{}
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			stopped := make(chan time.Time, 1)
			watched := make(chan struct{})
			go func() {
				defer close(watched)
				deadline := time.Now().Add(30 * time.Second)
				for !strings.Contains(logs.String(), "started\n") && time.Now().Before(deadline) && ctx.Err() == nil {
					time.Sleep(10 * time.Millisecond)
				}
				stopped <- time.Now()
				cancel(tc.cause)
			}()
			out, log := s.execute(ctx, step(tc.script), logs)
			<-watched
			took := time.Since(<-stopped)
			if out.State != tc.wantState {
				t.Fatalf("state %s (%v), want %s; log %q", out.State, out.Error, tc.wantState, log)
			}
			if !strings.HasPrefix(log, "started\n") || !strings.Contains(log, tc.wantLog) {
				t.Fatalf("log %q, want started then %q", log, tc.wantLog)
			}
			if tc.ignores && took < grace {
				t.Fatalf("a step that ignores SIGTERM ended %s after the stop, before the grace of %s", took, grace)
			}
			if !tc.ignores && took >= grace+5*time.Second || took > grace+20*time.Second {
				t.Fatalf("the step ended %s after the stop (grace %s)", took, grace)
			}
		})
	}
}

// testLeftovers checks that what a step started in the background does
// not outlive it, whether the step exited or was cancelled: a loop that
// appends to a file (and ignores SIGTERM) stops growing.
func testLeftovers(t *testing.T, rt Runtime) {
	s := initialize(t, rt)
	const loop = `(trap '' TERM HUP; while :; do echo x >> beat; sleep 0.05; done) >/dev/null 2>&1 &`
	still := func() {
		t.Helper()
		logs := s.mustRun(`a=$(wc -l < beat); sleep 0.5; b=$(wc -l < beat); echo "$a $b"`, "rm beat")
		f := strings.Fields(logs)
		if len(f) != 2 || f[0] != f[1] || f[0] == "0" {
			t.Fatalf("lines written by the previous step's background loop, 0.5s apart: %q; want the same, not 0", logs)
		}
	}
	s.mustRun(loop, "until [ -s beat ]; do sleep 0.05; done")
	still()

	logs := &Log{}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(logs.String(), "started\n") && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		cancel(router.ErrCancelled)
	}()
	out, log := s.execute(ctx, step(loop, "until [ -s beat ]; do sleep 0.05; done", "echo started", "sleep 300"), logs)
	<-watched
	if out.State != errand.StateCancelled {
		t.Fatalf("cancelled step: %+v %v; log %q", out, out.Error, log)
	}
	still()
}

// testCleanupAfterRestart cleans a stage up with handlers that never saw
// its initialize, twice.
func testCleanupAfterRestart(t *testing.T, rt Runtime) {
	s := initialize(t, rt)
	s.mustRun("echo data > file")
	if left := rt.Remains(t, s.dep); len(left) == 0 {
		t.Fatal("an initialized stage has nothing to clean up")
	}
	for i := range 2 {
		out, logs := s.cleanup(newRouter(rt.New(t)))
		if out.State != errand.StateSucceeded {
			t.Fatalf("cleanup %d after a restart: %+v %v\n%s", i+1, out, out.Error, logs)
		}
		if left := rt.Remains(t, s.dep); len(left) > 0 {
			t.Fatalf("after cleanup %d: %v left", i+1, left)
		}
	}
	// A stage whose initialize failed has nothing to clean up, and no
	// initialize at all is an invalid cleanup.
	h := rt.New(t)
	r := newRouter(h)
	failed := errand.DependencyResult{Task: taskID(t, 100), Type: h.Driver.Name() + ".initialize", State: errand.StateFailed}
	if out, logs := serveWith(context.Background(), t, r, taskID(t, 101), h.Driver.Name()+".cleanup", tasks.CleanupData{}, &Log{}, failed); out.State != errand.StateSucceeded {
		t.Fatalf("cleanup after a failed initialize: %+v %v\n%s", out, out.Error, logs)
	}
	if out, _ := serveWith(context.Background(), t, r, taskID(t, 102), h.Driver.Name()+".cleanup", tasks.CleanupData{}, &Log{}); out.State != errand.StateFailed || out.Error.Code != errand.CodeInvalid {
		t.Fatalf("cleanup with no initialize: %+v %v; want failed invalid", out, out.Error)
	}
}

// testHandle drives the Driver and its Handle directly: start, inspect,
// wait, stop with the grace, destroy twice.
func testHandle(t *testing.T, rt Runtime) {
	s := initialize(t, rt)
	ctx := context.Background()
	start := func(commands ...string) (runtime.Handle, *runtime.Output, *Log) {
		t.Helper()
		data := step(commands...)
		logs := &Log{}
		out := runtime.NewOutput(logs)
		task := &errand.Task{ID: taskID(t, 50+len(commands)), RunID: "r1", Type: s.h.Driver.Name() + ".execute",
			DelegateID: "d1", Lease: &errand.Lease{Token: "l", DelegateID: "d1"}, Dependencies: []errand.DependencyResult{s.dep}}
		h, err := s.h.Driver.Start(ctx, &runtime.Step{Task: task, Data: &data, Stage: &s.res, InitID: s.dep.Task,
			Shell: []string{"sh", "-e"}, Script: strings.Join(commands, "\n"), Output: out, Log: logs})
		if err != nil {
			t.Fatalf("start: %v", err)
		}
		return h, out, logs
	}

	h, out, logs := start("echo done", "exit 4")
	exit, err := h.Wait(ctx)
	if err != nil || exit.Code != 4 {
		t.Fatalf("wait: %+v %v; want exit code 4", exit, err)
	}
	if st, err := h.Inspect(ctx); err != nil || st.Running || st.Exit == nil || st.Exit.Code != 4 {
		t.Fatalf("inspect after the exit: %+v %v", st, err)
	}
	for range 2 {
		if err := h.Destroy(ctx); err != nil {
			t.Fatalf("destroy: %v", err)
		}
	}
	out.Flush()
	if logs.String() != "done\n" {
		t.Fatalf("output %q", logs.String())
	}

	h, out, logs = start("trap '' TERM", "echo started", "while :; do sleep 0.1; done")
	if st, err := h.Inspect(ctx); err != nil || !st.Running || st.Exit != nil || st.StartedAt.IsZero() {
		t.Fatalf("inspect of a running step: %+v %v", st, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	if _, err := h.Wait(wctx); err == nil {
		t.Fatal("wait returned before the step ended")
	}
	cancel()
	began := time.Now()
	if err := h.Stop(ctx, s.h.StopGrace); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if took := time.Since(began); took < s.h.StopGrace {
		t.Fatalf("stop of a step that ignores SIGTERM returned after %s, before the grace of %s", took, s.h.StopGrace)
	}
	if err := h.Destroy(ctx); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	out.Flush()
	if !strings.HasPrefix(logs.String(), "started\n") {
		t.Fatalf("output %q", logs.String())
	}
}
