package exec_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/router"
	"github.com/errandci/errand/tasks"
	"github.com/errandci/errand/tasks/exec"
	"github.com/errandci/errand/tasks/runtime/runtimetest"
)

type env struct {
	t     *testing.T
	state string
	h     *exec.Handlers
	r     *router.Router
}

func newEnv(t *testing.T) *env {
	state := t.TempDir()
	h := exec.New(state)
	h.KillGrace = 300 * time.Millisecond
	r := router.New(router.WithGrace(5 * time.Second))
	h.Register(r)
	return &env{t: t, state: state, h: h, r: r}
}

func (e *env) serve(ctx context.Context, typ string, data any, deps ...errand.DependencyResult) (router.Outcome, string) {
	e.t.Helper()
	b, err := json.Marshal(data)
	if err != nil {
		e.t.Fatal(err)
	}
	var logs runtimetest.Log
	out := e.r.Serve(ctx, &errand.Task{ID: "t", Type: typ, Data: b, Dependencies: deps}, &logs)
	return out, logs.String()
}

// initialize runs exec.initialize and returns the dependency that hands
// its result to execute and cleanup.
func (e *env) initialize(run, stage string) (errand.DependencyResult, string) {
	e.t.Helper()
	out, _ := e.serve(context.Background(), errand.TypeExecInitialize, tasks.InitializeData{Stage: tasks.Stage{RunID: run, Stage: stage}})
	if out.State != errand.StateSucceeded {
		e.t.Fatalf("initialize: %+v", out)
	}
	var res tasks.InitializeResult
	if err := json.Unmarshal(out.Result, &res); err != nil {
		e.t.Fatal(err)
	}
	return errand.DependencyResult{Task: "i", Type: errand.TypeExecInitialize, State: errand.StateSucceeded, Result: out.Result}, res.Workspace
}

func step(commands ...string) tasks.ExecuteData {
	return tasks.ExecuteData{Stage: tasks.Stage{RunID: "r1", Stage: "build"}, Step: "s", Commands: commands}
}

func TestInitializeSanitizesNames(t *testing.T) {
	e := newEnv(t)
	for _, c := range [][2]string{{"r1", "build"}, {"../../etc", "../x"}, {"", "a/b/.."}, {"..", ".."}} {
		_, ws := e.initialize(c[0], c[1])
		rel, err := filepath.Rel(filepath.Join(e.state, "workspaces"), ws)
		if err != nil || strings.HasPrefix(rel, "..") || strings.Count(rel, string(filepath.Separator)) != 1 {
			t.Fatalf("run %q stage %q: workspace %s escapes or nests (%s)", c[0], c[1], ws, rel)
		}
		if fi, err := os.Stat(ws); err != nil || !fi.IsDir() {
			t.Fatalf("workspace %s not created: %v", ws, err)
		}
	}
}

func TestInitializeRefusesPrivileged(t *testing.T) {
	e := newEnv(t)
	data := tasks.InitializeData{Stage: tasks.Stage{Stage: "s"}, Privileged: true}
	out, _ := e.serve(context.Background(), errand.TypeExecInitialize, data)
	if out.State != errand.StateFailed || out.Error.Code != errand.CodeForbidden {
		t.Fatalf("privileged stage on a delegate without --allow-privileged: %+v", out)
	}
	e.h.AllowPrivileged = true
	if out, _ := e.serve(context.Background(), errand.TypeExecInitialize, data); out.State != errand.StateSucceeded {
		t.Fatalf("privileged stage allowed: %+v", out)
	}
}

func TestExecute(t *testing.T) {
	cases := []struct {
		name      string
		data      tasks.ExecuteData
		wantState errand.State
		wantExit  int
		wantLog   string // exact log, or a substring when wantSub
		wantSub   bool
	}{
		{name: "lines in order", data: step("echo one", "echo two >&2", "echo three"),
			wantState: errand.StateSucceeded, wantLog: "one\ntwo\nthree\n"},
		{name: "first failure ends the step", data: step("echo a", "exit 3", "echo never"),
			wantState: errand.StateFailed, wantExit: 3, wantLog: "a\n"},
		{name: "command not found", data: step("no-such-command-xyz"),
			wantState: errand.StateFailed, wantExit: 127, wantLog: "no-such-command-xyz", wantSub: true},
		{name: "environment and workspace", data: func() tasks.ExecuteData {
			d := step(`echo "$GREETING $ERRAND_STEP $(basename "$PWD")"`, `test -z "$ERRAND_TOKEN"`)
			d.Environment = map[string]string{"GREETING": "hi"}
			d.WorkingDir = "sub/dir"
			return d
		}(), wantState: errand.StateSucceeded, wantLog: "hi s dir\n"},
		{name: "secrets masked", data: func() tasks.ExecuteData {
			d := step(`echo "key=$KEY"`, `printf '%s' "$KEY" | cut -c1-3`)
			d.Secrets = map[string]string{"KEY": "sup3rs3cret"}
			return d
		}(), wantState: errand.StateSucceeded, wantLog: "key=******\nsup\n"},
		{name: "custom shell", data: func() tasks.ExecuteData {
			d := step(`false`, `echo still`)
			d.Shell = "sh"
			return d
		}(), wantState: errand.StateSucceeded, wantLog: "still\n"},
	}
	t.Setenv("ERRAND_TOKEN", "must-not-leak")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			dep, _ := e.initialize("r1", "build")
			out, logs := e.serve(context.Background(), errand.TypeExecExecute, tc.data, dep)
			runtimetest.CheckStep(t, out, logs, tc.wantState, tc.wantExit, tc.wantLog, tc.wantSub)
		})
	}
}

// gone reports whether pid no longer runs (a zombie waiting for init
// counts as gone).
func gone(pid int) bool {
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

func TestStopKillsProcessGroup(t *testing.T) {
	cases := []struct {
		name      string
		script    string
		cause     error
		wantState errand.State
	}{
		{"cancel", `sleep 300 & echo $! > "$ERRAND_WORKSPACE/child"; wait`, router.ErrCancelled, errand.StateCancelled},
		{"timeout", `sleep 300 & echo $! > "$ERRAND_WORKSPACE/child"; wait`, router.ErrTimedOut, errand.StateTimedOut},
		{"TERM ignored", `trap '' TERM; sh -c 'trap "" TERM; sleep 300' & echo $! > "$ERRAND_WORKSPACE/child"; wait`, router.ErrCancelled, errand.StateCancelled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			dep, ws := e.initialize("r", "s")
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			go func() {
				for {
					if b, err := os.ReadFile(filepath.Join(ws, "child")); err == nil && len(bytes.TrimSpace(b)) > 0 {
						cancel(tc.cause)
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
			}()
			out, _ := e.serve(ctx, errand.TypeExecExecute, step(tc.script), dep)
			if out.State != tc.wantState {
				t.Fatalf("state %s, want %s", out.State, tc.wantState)
			}
			b, _ := os.ReadFile(filepath.Join(ws, "child"))
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(3 * time.Second)
			for !gone(pid) {
				if time.Now().After(deadline) {
					t.Fatalf("child %d still runs after the step was stopped", pid)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func TestWorkspaceEscapeRefused(t *testing.T) {
	e := newEnv(t)
	dep, ws := e.initialize("r", "s")
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(ws, "link")); err != nil {
		t.Fatal(err)
	}
	foreign := func(path string) errand.DependencyResult {
		b, _ := json.Marshal(tasks.InitializeResult{Workspace: path})
		return errand.DependencyResult{Task: "i", Type: errand.TypeExecInitialize, State: errand.StateSucceeded, Result: b}
	}
	cases := []struct {
		name string
		typ  string
		data any
		dep  errand.DependencyResult
	}{
		{"working_dir up", errand.TypeExecExecute, func() tasks.ExecuteData { d := step("true"); d.WorkingDir = "../.."; return d }(), dep},
		{"working_dir absolute", errand.TypeExecExecute, func() tasks.ExecuteData { d := step("true"); d.WorkingDir = "/etc"; return d }(), dep},
		{"working_dir through a link", errand.TypeExecExecute, func() tasks.ExecuteData { d := step("true"); d.WorkingDir = "link"; return d }(), dep},
		{"execute in a foreign workspace", errand.TypeExecExecute, step("true"), foreign(outside)},
		{"cleanup of a foreign path", errand.TypeExecCleanup, tasks.CleanupData{}, foreign(outside)},
		{"cleanup of the root", errand.TypeExecCleanup, tasks.CleanupData{}, foreign(filepath.Join(e.state, "workspaces"))},
		{"cleanup with dots", errand.TypeExecCleanup, tasks.CleanupData{}, foreign(filepath.Join(e.state, "workspaces", "..", ".."))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, _ := e.serve(context.Background(), tc.typ, tc.data, tc.dep)
			if out.State != errand.StateFailed || out.Error.Code != errand.CodeInvalid {
				t.Fatalf("outcome %+v, want failed invalid", out)
			}
		})
	}
	if _, err := os.Stat(outside); err != nil {
		t.Fatalf("outside dir touched: %v", err)
	}
	if _, err := os.Stat(e.state); err != nil {
		t.Fatalf("state dir removed: %v", err)
	}
}

func TestCleanup(t *testing.T) {
	e := newEnv(t)
	dep, ws := e.initialize("r", "s")
	if err := os.WriteFile(filepath.Join(ws, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ := e.serve(context.Background(), errand.TypeExecCleanup, tasks.CleanupData{}, dep)
	if out.State != errand.StateSucceeded {
		t.Fatalf("cleanup: %+v", out)
	}
	if _, err := os.Stat(ws); !os.IsNotExist(err) {
		t.Fatalf("workspace still there: %v", err)
	}
	// A stage whose initialize failed has nothing to clean.
	failedInit := errand.DependencyResult{Task: "i", Type: errand.TypeExecInitialize, State: errand.StateFailed}
	if out, _ := e.serve(context.Background(), errand.TypeExecCleanup, tasks.CleanupData{}, failedInit); out.State != errand.StateSucceeded {
		t.Fatalf("cleanup after failed initialize: %+v", out)
	}
}

// Stages of one run share the run's directory, which a stage's cleanup
// removes once it is empty: a sibling initializing at that moment still
// gets its workspace.
func TestInitializeBesideSiblingCleanup(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 200; i++ {
		dep, _ := e.initialize("shared", "first")
		done := make(chan router.Outcome, 1)
		go func() {
			out, _ := e.serve(context.Background(), errand.TypeExecCleanup, tasks.CleanupData{}, dep)
			done <- out
		}()
		e.initialize("shared", "second") // fails the test if the workspace cannot be made
		if out := <-done; out.State != errand.StateSucceeded {
			t.Fatalf("cleanup: %+v", out)
		}
		// Leave the run directory empty for the next round.
		matches, _ := filepath.Glob(filepath.Join(e.state, "workspaces", "shared", "*"))
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// A working_dir through a link to a directory outside the workspace is
// refused before anything is created: the outside directory stays empty.
func TestWorkingDirThroughLinkCreatesNothingOutside(t *testing.T) {
	e := newEnv(t)
	dep, ws := e.initialize("r", "s")
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(ws, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(ws, "real", "dir"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(ws, "real", "dir", "deeper")); err != nil {
		t.Fatal(err)
	}
	for _, wd := range []string{"link/new", "link/a/b/c", "real/dir/deeper/x", "link"} {
		t.Run(wd, func(t *testing.T) {
			d := step("pwd")
			d.WorkingDir = wd
			out, _ := e.serve(context.Background(), errand.TypeExecExecute, d, dep)
			if out.State != errand.StateFailed || out.Error.Code != errand.CodeInvalid {
				t.Fatalf("outcome %+v, want failed invalid", out)
			}
			entries, err := os.ReadDir(outside)
			if err != nil || len(entries) != 0 {
				t.Fatalf("outside the workspace after the step: %v %v; want nothing", entries, err)
			}
		})
	}
	// A working_dir inside is still made, parents included.
	d := step("pwd")
	d.WorkingDir = "real/dir/new/sub"
	out, logs := e.serve(context.Background(), errand.TypeExecExecute, d, dep)
	if out.State != errand.StateSucceeded || strings.TrimSpace(logs) != filepath.Join(ws, "real/dir/new/sub") {
		t.Fatalf("working_dir inside: %+v, log %q", out, logs)
	}
}
