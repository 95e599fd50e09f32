package manager

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	agent "github.com/errandci/errand/delegate"
	"github.com/errandci/errand/poller"
	"github.com/errandci/errand/router"
	"github.com/errandci/errand/tasks/exec"
)

// startHostDelegate runs a real delegate with the exec handlers against
// the env's server until the test ends; opts are added to its client's.
func (e *env) startHostDelegate(opts ...client.Option) {
	e.t.Helper()
	r := router.New(router.WithLogger(quietLogger()))
	exec.New(e.t.TempDir()).Register(r)
	opts = append([]client.Option{client.WithLogger(quietLogger().WithField("test", true))}, opts...)
	d, err := agent.New(agent.Config{
		Name: "host", Capacity: 4, StateDir: e.t.TempDir(),
		Client: client.New(e.ts.URL, testReg, opts...),
		// At the end of the test its tasks are cancelled at once.
		DrainTimeout:      time.Nanosecond,
		HeartbeatInterval: 100 * time.Millisecond,
		Poller:            poller.Config{Wait: 2 * time.Second},
		Log:               debugLogger(),
	}, r)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		<-done
	})
}

func (e *env) submit(config string) *client.Run {
	e.t.Helper()
	var run client.Run
	e.must(http.StatusCreated, "POST", "/api/v1/runs", testAdmin,
		&client.RunRequest{Config: config, Filename: "config.yml"}, &run)
	return &run
}

func (e *env) getRun(id string) *client.Run {
	e.t.Helper()
	var run client.Run
	e.must(http.StatusOK, "GET", "/api/v1/runs/"+id, testAdmin, nil, &run)
	return &run
}

// waitRun polls a run until cond holds.
func (e *env) waitRun(id, what string, cond func(*client.Run) bool) *client.Run {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		run := e.getRun(id)
		if cond(run) {
			return run
		}
		if time.Now().After(deadline) {
			for _, s := range run.Stages {
				for _, st := range s.Steps {
					e.t.Logf("%s/%s: %+v", s.Name, st.Name, e.getTask(st.TaskID))
				}
			}
			e.t.Fatalf("run %s never became %s: %+v", id, what, summary(run))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func finished(r *client.Run) bool { return r.Phase == "finished" }

func stage(r *client.Run, name string) *client.RunStage {
	for _, s := range r.Stages {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func summary(r *client.Run) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%s", r.Phase, r.Result)
	for _, s := range r.Stages {
		fmt.Fprintf(&b, " %s=%s[", s.Name, s.State)
		for _, st := range s.Steps {
			fmt.Fprintf(&b, " %s=%s", st.Name, st.State)
		}
		b.WriteString(" ]")
	}
	return b.String()
}

func wantStages(t *testing.T, r *client.Run, want map[string]string) {
	t.Helper()
	for name, state := range want {
		s := stage(r, name)
		if s == nil || s.State != state {
			t.Fatalf("stage %s: want %s; run is %s", name, state, summary(r))
		}
	}
}

func TestRunSetupError(t *testing.T) {
	e := newEnv(t)
	config := "stages:\n  - name: build\n    runtime: {type: docker}\n    steps:\n      - name: a\n        commands: [echo a]\n  - name: build\n    steps: []\n"
	run := e.submit(config)
	if run.Phase != "setuperror" || run.Result != "failed" || len(run.Stages) != 0 {
		t.Fatalf("run = %+v, want setuperror/failed with no stages", run)
	}
	var paths []string
	for _, se := range run.SetupErrors {
		if se.Line == 0 {
			t.Errorf("setup error %+v has no line", se)
		}
		paths = append(paths, se.Path)
	}
	joined := strings.Join(paths, " ")
	if !strings.Contains(joined, "stages[0].steps[0].image") || !strings.Contains(joined, "stages[1].name") {
		t.Fatalf("setup errors = %+v, want the missing image and the duplicate name", run.SetupErrors)
	}
	// The run is recorded: it can be read and listed.
	if got := e.getRun(run.ID); got.Phase != "setuperror" || len(got.SetupErrors) != len(run.SetupErrors) {
		t.Fatalf("GET run = %+v", got)
	}
	var list client.RunList
	e.must(http.StatusOK, "GET", "/api/v1/runs", testAdmin, nil, &list)
	if len(list.Items) != 1 || list.Items[0].ID != run.ID || list.Kind != client.KindRunList {
		t.Fatalf("run list = %+v", list)
	}

	bad := []struct {
		name string
		body any
		code string
	}{
		{"not JSON", "{", errand.CodeInvalid},
		{"unknown field", `{"config":"stages: []","secrets":{"A":"b"}}`, errand.CodeInvalid},
		{"unknown format", &client.RunRequest{Config: "x", Filename: "config.toml"}, errand.CodeInvalid},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			e.fails(http.StatusBadRequest, b.code, "POST", "/api/v1/runs", testAdmin, b.body)
		})
	}
	e.fails(http.StatusNotFound, errand.CodeNotFound, "GET", "/api/v1/runs/nope", testAdmin, nil)
	e.fails(http.StatusUnauthorized, errand.CodeUnauthorized, "GET", "/api/v1/runs", "", nil)
}

const helloConfig = `
stages:
  - name: build
    steps:
      - name: greet
        commands: ['echo "hello from $ERRAND_STAGE"']
      - name: compile
        commands: [echo compiling]
  - name: test
    depends: [build]
    steps:
      - name: unit
        commands: [echo testing]
`

func TestRunHostStagesSucceed(t *testing.T) {
	e := newEnv(t)
	e.startHostDelegate()
	run := e.submit(helloConfig)
	if (run.Phase != "queued" && run.Phase != "running") || run.Result != "unknown" || run.Href != "/api/v1/runs/"+run.ID || run.Kind != client.KindRun {
		t.Fatalf("new run = %+v", run)
	}
	run = e.waitRun(run.ID, "finished", finished)
	if run.Result != "success" {
		t.Fatalf("run = %s, want success", summary(run))
	}
	wantStages(t, run, map[string]string{"build": "success", "test": "success"})
	greet := stage(run, "build").Steps[0]
	if greet.State != errand.StateSucceeded || greet.ExitCode == nil || *greet.ExitCode != 0 ||
		greet.TaskHref != "/api/v1/tasks/"+greet.TaskID || greet.StartedAt == nil || greet.FinishedAt == nil {
		t.Fatalf("step greet = %+v", greet)
	}
	var page client.LogPage
	e.must(http.StatusOK, "GET", greet.TaskHref+"/logs", testAdmin, nil, &page)
	if !strings.Contains(strings.Join(page.Lines, "\n"), "hello from build") {
		t.Fatalf("log of greet = %q", page.Lines)
	}
}

func TestRunFailureStages(t *testing.T) {
	e := newEnv(t)
	e.startHostDelegate()
	run := e.submit(`
stages:
  - name: flaky
    steps:
      - name: break
        commands: ['exit 3']
      - name: never
        commands: [echo no]
      - name: notify
        when: {status: [failure]}
        commands: [echo notified]
  - name: recover
    depends: [{stage: flaky, conditions: [on_failure]}]
    steps:
      - name: rollback
        commands: [echo rollback]
  - name: report
    depends: [{stage: flaky, conditions: [always]}]
    steps:
      - name: summary
        commands: [echo done]
  - name: publish
    depends: [flaky]
    steps:
      - name: upload
        commands: [echo no]
`)
	run = e.waitRun(run.ID, "finished", finished)
	if run.Result != "failed" {
		t.Fatalf("run = %s, want failed", summary(run))
	}
	wantStages(t, run, map[string]string{"flaky": "failed", "recover": "success", "report": "success", "publish": "skipped"})
	steps := stage(run, "flaky").Steps
	if steps[0].ExitCode == nil || *steps[0].ExitCode != 3 || steps[0].State != errand.StateFailed {
		t.Fatalf("step break = %+v, want failed with exit code 3", steps[0])
	}
	if steps[1].State != errand.StateSkipped || steps[2].State != errand.StateSucceeded || !steps[2].Reporter {
		t.Fatalf("steps never, notify = %+v, %+v", steps[1], steps[2])
	}
}

func TestRunApproval(t *testing.T) {
	e := newEnv(t)
	e.startHostDelegate()
	run := e.submit(`
stages:
  - name: build
    steps:
      - name: compile
        commands: [echo build]
  - name: deploy
    depends: [build]
    approval: {approvers: 2}
    steps:
      - name: ship
        commands: [echo ship]
`)
	approve := func(stageName string, body any) (int, []byte) {
		return e.do("POST", "/api/v1/runs/"+run.ID+"/stages/"+stageName+"/approve", testAdmin, body)
	}
	run = e.waitRun(run.ID, "waiting", func(r *client.Run) bool {
		return stage(r, "deploy").State == "waiting" && stage(r, "build").State == "success"
	})
	wantStages(t, run, map[string]string{"build": "success"})
	if run.Phase == "finished" || stage(run, "deploy").Approval != 2 {
		t.Fatalf("run waiting for approval = %s (approval %d)", summary(run), stage(run, "deploy").Approval)
	}
	e.fails(http.StatusConflict, errand.CodeConflict, "POST", "/api/v1/runs/"+run.ID+"/stages/build/approve", testAdmin, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "POST", "/api/v1/runs/"+run.ID+"/stages/nope/approve", testAdmin, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "POST", "/api/v1/runs/nope/stages/deploy/approve", testAdmin, nil)

	// The same approver twice counts once: the stage still waits.
	for range 2 {
		if code, b := approve("deploy", &client.ApproveRequest{Approver: "alice"}); code != http.StatusNoContent {
			t.Fatalf("approve as alice = %d %s", code, b)
		}
	}
	run = e.getRun(run.ID)
	if s := stage(run, "deploy"); s.State != "waiting" || len(s.Approvals) != 1 {
		t.Fatalf("after alice twice: deploy = %+v", s)
	}
	// No delegate can take the gate, whatever it claims.
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/delegates", testReg,
		&client.RegisterRequest{Name: "sneaky", Labels: map[string]string{InternalLabelPrefix + "internal": "approval"}})

	if code, b := approve("deploy", nil); code != http.StatusNoContent {
		t.Fatalf("approve as admin = %d %s", code, b)
	}
	run = e.waitRun(run.ID, "finished", finished)
	if run.Result != "success" {
		t.Fatalf("approved run = %s, want success", summary(run))
	}
	if got := stage(run, "deploy").Approvals; strings.Join(got, ",") != "alice,admin" {
		t.Fatalf("approvals = %v, want alice, admin", got)
	}
	e.fails(http.StatusConflict, errand.CodeConflict, "POST", "/api/v1/runs/"+run.ID+"/stages/deploy/approve", testAdmin, nil)
	// The manager's own approval delegate is not listed.
	var list client.DelegateList
	e.must(http.StatusOK, "GET", "/api/v1/delegates", testAdmin, nil, &list)
	for _, d := range list.Items {
		if d.ID == "manager-approvals" {
			t.Fatalf("delegate list shows the approval delegate: %+v", d)
		}
	}
	if len(list.Items) == 0 {
		t.Fatal("delegate list is empty; the run's delegate should be there")
	}
}

func TestRunCancelMidStep(t *testing.T) {
	e := newEnv(t)
	e.startHostDelegate()
	run := e.submit(`
stages:
  - name: slow
    steps:
      - name: wait
        commands: ['touch started; sleep 30']
      - name: after
        commands: [echo no]
  - name: report
    depends: [{stage: slow, conditions: [always]}]
    steps:
      - name: summary
        commands: [echo no]
`)
	run = e.waitRun(run.ID, "running its step", func(r *client.Run) bool {
		return stage(r, "slow").Steps[0].State == errand.StateRunning
	})
	start := time.Now()
	if code, b := e.do("POST", "/api/v1/runs/"+run.ID+"/cancel", testAdmin, nil); code != http.StatusNoContent {
		t.Fatalf("cancel = %d %s", code, b)
	}
	run = e.waitRun(run.ID, "finished", finished)
	if time.Since(start) > 10*time.Second {
		t.Errorf("cancel took %s", time.Since(start))
	}
	if run.Result != "cancelled" || run.CancelledAt == nil {
		t.Fatalf("cancelled run = %s (cancelled_at %v), want cancelled", summary(run), run.CancelledAt)
	}
	wantStages(t, run, map[string]string{"slow": "cancelled", "report": "cancelled"})
	steps := stage(run, "slow").Steps
	if steps[0].State != errand.StateCancelled || steps[1].State != errand.StateCancelled {
		t.Fatalf("steps = %s, %s; want cancelled", steps[0].State, steps[1].State)
	}
	// The stage's cleanup still ran.
	cleanup := e.getTask(stage(run, "slow").CleanupTask)
	if cleanup.State != errand.StateSucceeded {
		t.Fatalf("cleanup of the cancelled stage = %s, want succeeded", cleanup.State)
	}
	e.fails(http.StatusNotFound, errand.CodeNotFound, "POST", "/api/v1/runs/nope/cancel", testAdmin, nil)
}

var debugLog *logrus.Logger

func debugLogger() *logrus.Logger {
	if debugLog != nil {
		return debugLog
	}
	return quietLogger()
}
