package runtime_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/workspace"
	"github.com/errandci/errand/router"
	"github.com/errandci/errand/tasks"
	"github.com/errandci/errand/tasks/runtime"
	"github.com/errandci/errand/tasks/runtime/runtimetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fake is a Driver whose steps print their script and exit with a
// given code, or run until stopped.
type fake struct {
	mu       sync.Mutex
	startErr error
	exit     int
	block    bool // the step runs until stopped
	stops    []time.Duration
	destroys int
	cleaned  []errand.DependencyResult
	// dir, when set, is the workspace of every stage.
	dir string
}

func (f *fake) Name() string { return "fake" }

func (f *fake) WorkspaceExport(ctx context.Context, _ *runtime.Workspace, paths []string) (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(workspace.TarPaths(ctx, f.dir, paths, pw, workspace.Options{})) }()
	return pr, nil
}

func (f *fake) WorkspaceImport(ctx context.Context, _ *runtime.Workspace, r io.Reader) error {
	return workspace.Untar(ctx, f.dir, r, workspace.Options{})
}

func (f *fake) Initialize(_ context.Context, s *runtime.Init) (*tasks.InitializeResult, error) {
	if s.Data.Privileged {
		return nil, errand.Errorf(errand.CodeForbidden, "no")
	}
	return &tasks.InitializeResult{Workspace: "/ws/" + s.Data.Stage.Stage}, nil
}

func (f *fake) Cleanup(_ context.Context, s *runtime.Cleanup) (*tasks.CleanupResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleaned = append(f.cleaned, s.Init)
	return &tasks.CleanupResult{Removed: []string{s.Init.Task}}, nil
}

func (f *fake) Start(_ context.Context, s *runtime.Step) (runtime.Handle, error) {
	if f.startErr != nil {
		return nil, f.startErr
	}
	w := s.Output.Stream()
	fmt.Fprintf(w, "%s %v\n%s", s.Shell, s.Env("/ws"), s.Script)
	h := &fakeStep{f: f, done: make(chan struct{})}
	if !f.block {
		close(h.done)
	}
	return h, nil
}

type fakeStep struct {
	f    *fake
	done chan struct{}
	once sync.Once
}

func (s *fakeStep) Wait(ctx context.Context) (runtime.Exit, error) {
	select {
	case <-s.done:
		return runtime.Exit{Code: s.f.exit}, nil
	case <-ctx.Done():
		return runtime.Exit{}, ctx.Err()
	}
}

func (s *fakeStep) Stop(_ context.Context, grace time.Duration) error {
	s.f.mu.Lock()
	s.f.stops = append(s.f.stops, grace)
	s.f.mu.Unlock()
	s.once.Do(func() { close(s.done) })
	return nil
}

func (s *fakeStep) Destroy(context.Context) error {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	s.f.destroys++
	return nil
}

func (s *fakeStep) Inspect(context.Context) (runtime.Status, error) { return runtime.Status{}, nil }

var initDep = errand.DependencyResult{Task: "i", Type: "fake.initialize", State: errand.StateSucceeded,
	Result: json.RawMessage(`{"workspace":"/ws/build"}`)}

func serve(t *testing.T, ctx context.Context, h *runtime.Handlers, typ string, data any, deps ...errand.DependencyResult) (router.Outcome, string) {
	t.Helper()
	r := router.New()
	h.Register(r)
	b, _ := json.Marshal(data)
	var logs runtimetest.Log
	out := r.Serve(ctx, &errand.Task{ID: "t", Type: typ, Data: b, Dependencies: deps, Lease: &errand.Lease{Token: "l", DelegateID: "d"}}, &logs)
	return out, logs.String()
}

func step(commands ...string) tasks.ExecuteData {
	return tasks.ExecuteData{Stage: tasks.Stage{RunID: "r", Stage: "build"}, Step: "s", Commands: commands}
}

// The handlers shape what the driver does into outcomes: results, exit
// codes, a shell not found, errors, masked secrets.
func TestExecute(t *testing.T) {
	cases := []struct {
		name      string
		f         *fake
		data      tasks.ExecuteData
		deps      []errand.DependencyResult
		wantState errand.State
		wantCode  string
		wantExit  int
		wantLog   string
	}{
		{name: "success", f: &fake{}, data: step("a", "b"), deps: []errand.DependencyResult{initDep},
			wantState: errand.StateSucceeded, wantLog: "[sh -e] [CI=true ERRAND_WORKSPACE=/ws ERRAND_RUN_ID=r ERRAND_STAGE=build ERRAND_STEP=s]\na\nb\n"},
		{name: "exit code", f: &fake{exit: 3}, data: step("x"), deps: []errand.DependencyResult{initDep},
			wantState: errand.StateFailed, wantCode: errand.CodeExitCode, wantExit: 3},
		{name: "shell not found", f: &fake{startErr: fmt.Errorf("start: %w", runtime.ErrShellNotFound)},
			data: func() tasks.ExecuteData { d := step("x"); d.Shell = "zsh -e"; return d }(), deps: []errand.DependencyResult{initDep},
			wantState: errand.StateFailed, wantCode: errand.CodeExitCode, wantExit: 127, wantLog: "zsh: command not found\n"},
		{name: "start error", f: &fake{startErr: errand.Errorf(errand.CodeTaskFailed, "no room")}, data: step("x"),
			deps: []errand.DependencyResult{initDep}, wantState: errand.StateFailed, wantCode: errand.CodeTaskFailed},
		{name: "no commands", f: &fake{}, data: step(), deps: []errand.DependencyResult{initDep},
			wantState: errand.StateFailed, wantCode: errand.CodeInvalid},
		{name: "no initialize", f: &fake{}, data: step("x"), wantState: errand.StateFailed, wantCode: errand.CodeInvalid},
		{name: "secrets masked", f: &fake{}, data: func() tasks.ExecuteData {
			d := step("echo sup3rs3cret")
			d.Secrets = map[string]string{"K": "sup3rs3cret"}
			return d
		}(), deps: []errand.DependencyResult{initDep}, wantState: errand.StateSucceeded,
			wantLog: "[sh -e] [CI=true ERRAND_WORKSPACE=/ws ERRAND_RUN_ID=r ERRAND_STAGE=build ERRAND_STEP=s K=******]\necho ******\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := &runtime.Handlers{Driver: tc.f, StopGrace: time.Second}
			out, logs := serve(t, context.Background(), h, "fake.execute", tc.data, tc.deps...)
			if out.State != tc.wantState || tc.wantCode != "" && (out.Error == nil || out.Error.Code != tc.wantCode) {
				t.Fatalf("outcome %+v %v; want %s %s", out, out.Error, tc.wantState, tc.wantCode)
			}
			if tc.wantLog != "" && logs != tc.wantLog {
				t.Fatalf("log %q, want %q", logs, tc.wantLog)
			}
			if tc.wantCode == errand.CodeExitCode || tc.wantState == errand.StateSucceeded {
				var res tasks.ExecuteResult
				if err := json.Unmarshal(out.Result, &res); err != nil || res.ExitCode != tc.wantExit {
					t.Fatalf("result %s (%v), want exit code %d", out.Result, err, tc.wantExit)
				}
			}
		})
	}
}

// A cancelled or timed-out step is stopped with the grace and destroyed;
// one that runs past MaxStep times out.
func TestExecuteStopped(t *testing.T) {
	cases := []struct {
		name      string
		cause     error
		maxStep   time.Duration
		wantState errand.State
	}{
		{"cancelled", router.ErrCancelled, 0, errand.StateCancelled},
		{"timed out", router.ErrTimedOut, 0, errand.StateTimedOut},
		{"past MaxStep", nil, 50 * time.Millisecond, errand.StateFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fake{block: true}
			h := &runtime.Handlers{Driver: f, StopGrace: 3 * time.Second, MaxStep: tc.maxStep}
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			if tc.cause != nil {
				time.AfterFunc(50*time.Millisecond, func() { cancel(tc.cause) })
			}
			out, _ := serve(t, ctx, h, "fake.execute", step("x"), initDep)
			if out.State != tc.wantState {
				t.Fatalf("outcome %+v %v; want %s", out, out.Error, tc.wantState)
			}
			if tc.cause == nil && out.Error.Code != errand.CodeTimedOut {
				t.Fatalf("past MaxStep: %v; want timed_out", out.Error)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.stops) != 1 || f.stops[0] != 3*time.Second || f.destroys != 1 {
				t.Fatalf("stops %v, destroys %d; want one stop with the grace, one destroy", f.stops, f.destroys)
			}
		})
	}
}

func TestInitializeAndCleanup(t *testing.T) {
	f := &fake{}
	h := &runtime.Handlers{Driver: f}
	out, _ := serve(t, context.Background(), h, "fake.initialize", tasks.InitializeData{Stage: tasks.Stage{Stage: "build"}})
	if out.State != errand.StateSucceeded || string(out.Result) != `{"workspace":"/ws/build"}` {
		t.Fatalf("initialize: %+v %s", out, out.Result)
	}
	if out, _ := serve(t, context.Background(), h, "fake.initialize", tasks.InitializeData{Privileged: true}); out.State != errand.StateFailed || out.Error.Code != errand.CodeForbidden {
		t.Fatalf("refused initialize: %+v %v", out, out.Error)
	}
	other := errand.DependencyResult{Task: "o", Type: "fake.execute", State: errand.StateSucceeded}
	if out, _ := serve(t, context.Background(), h, "fake.cleanup", tasks.CleanupData{}, other, initDep); out.State != errand.StateSucceeded || len(f.cleaned) != 1 || f.cleaned[0].Task != "i" {
		t.Fatalf("cleanup: %+v, cleaned %v", out, f.cleaned)
	}
	if out, _ := serve(t, context.Background(), h, "fake.cleanup", tasks.CleanupData{}, other); out.State != errand.StateFailed || out.Error.Code != errand.CodeInvalid {
		t.Fatalf("cleanup without initialize: %+v %v", out, out.Error)
	}
	if out, _ := serve(t, context.Background(), h, "fake.execute", json.RawMessage(`{"step":"s","commands":["x"],"nope":1}`), initDep); out.State != errand.StateFailed || out.Error.Code != errand.CodeInvalid {
		t.Fatalf("unknown field: %+v %v", out, out.Error)
	}
}
