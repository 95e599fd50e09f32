package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
)

// errandCmd runs the built binary to its end and returns its exit code and
// combined output.
func errandCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	return errandCmdEnv(t, nil, args...)
}

// errandCmdEnv is errandCmd with env added to the environment.
func errandCmdEnv(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Binary(t), args...)
	cmd.Dir = "../.."
	cmd.Env = cleanEnv(env...)
	out, err := cmd.CombinedOutput()
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("errand %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

func TestE2ERunExamples(t *testing.T) {
	broken := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(broken, []byte("stages:\n  - name: a\n    runtime: {type: docker}\n    steps:\n      - name: s\n        commands: [echo hi]\n    depends: [nope]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	imports := jsonnetWithImport(t)
	cases := []struct {
		name     string
		args     []string
		wantCode int
		want     []string
		notWant  []string
	}{
		{"hello", []string{"run", "examples/hello"}, 0,
			[]string{"build/greet | hello from build", "✓ build/greet (", "test/unit | testing hello world", "✓ package/archive (", "success"},
			nil},
		{"failure", []string{"run", "examples/failure"}, 1,
			[]string{"flaky/break | about to fail", "✗ flaky/break (", "exited with code 3", "flaky/notify | a step of flaky failed",
				"recover/rollback | rolling back", "report/summary | all done", "– flaky/never skipped", "– publish/upload skipped"},
			[]string{"not reached", "not run, flaky failed"}},
		{"approval without --approve", []string{"run", "examples/approval"}, 1,
			[]string{"deploy: waits for 1 approval(s)", "--approve", "✓ build/compile"},
			[]string{"shipping release"}},
		{"approval with --approve", []string{"run", "examples/approval", "--approve"}, 0,
			[]string{"deploy: approved", "deploy/ship | shipping release", "✓ deploy/ship ("}, nil},
		{"matrix", []string{"run", "examples/matrix", "--ext-str", "go_versions=1.24,1.25,1.26"}, 0,
			[]string{"go-1_24/build | building with Go 1.24", "go-1_26/test | testing with Go 1.26", "summary/report | tested 3 Go versions"}, nil},
		{"broken config", []string{"run", broken}, 2,
			[]string{"config.yml:5:9: stages[0].steps[0].image:", "config.yml:7:15: stages[0].depends[0].stage:", "nothing was run"},
			[]string{"✓", "✗"}},
		{"jsonnet with an import", []string{"run", imports, "--ext-str", "who=import"}, 0,
			[]string{"lib/hi | hello from import"}, nil},
		{"env and secret", []string{"run", "--env", "WHO=env", "--secret", "TOKEN=s3cret", "cmd/errand/testdata/pipelines/secret.yml"}, 0,
			[]string{"use/show | who=env", "use/show | token length 6"}, []string{"s3cret"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out := errandCmd(t, c.args...)
			if code != c.wantCode {
				t.Fatalf("exit code %d, want %d; output:\n%s", code, c.wantCode, out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range c.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}

// jsonnetWithImport writes a Jsonnet pipeline that imports a library
// beside it and reads an external variable, and returns its directory.
func jsonnetWithImport(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"lib.libsonnet":  `{ step(who): { name: 'hi', commands: ['echo hello from ' + who] } }`,
		"config.jsonnet": `local lib = import 'lib.libsonnet'; { stages: [{ name: 'lib', steps: [lib.step(std.extVar('who'))] }] }`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// slowConfig is a stage whose step runs until it is cancelled.
const slowConfig = `stages:
  - name: slow
    steps:
      - name: wait
        commands: ['echo started', 'sleep 30']
      - name: after
        commands: [echo not reached]
`

func TestE2ERunInterruptedCleansUp(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, []byte(slowConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	cmd := exec.Command(testenv.Binary(t), "run", "--data-dir", data, cfg)
	cmd.Env = cleanEnv()
	out := newLineRecorder()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, "slow/wait | started", 20*time.Second)
	workspaces := filepath.Join(data, "delegate", "workspaces")
	if entries, _ := os.ReadDir(workspaces); len(entries) == 0 {
		t.Fatalf("no workspace in %s while the step runs", workspaces)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != exitRunInterrupted {
		t.Fatalf("exit code %d (%v), want %d; output:\n%s", code, err, exitRunInterrupted, out.String())
	}
	for _, w := range []string{"interrupted", "cancelled"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out.String())
		}
	}
	if strings.Contains(out.String(), "not reached") {
		t.Errorf("the step after the cancelled one ran:\n%s", out.String())
	}
	// The stage's cleanup ran: it removed the workspace.
	if entries, _ := os.ReadDir(workspaces); len(entries) != 0 {
		t.Fatalf("workspaces left after the cancel: %v", entries)
	}
}

func TestE2ESubmitApproveCancel(t *testing.T) {
	m := fastManager(t)
	d := startDelegate(t, m, "runner", t.TempDir())
	defer d.signal(syscall.SIGTERM)
	c := testenv.Client(t, m.URL, m.AdminToken)
	clientArgs := []string{"--manager", m.URL, "--token", m.AdminToken}

	// submit --follow streams the run and exits with its result.
	code, out := errandCmd(t, append([]string{"submit", "--follow", "examples/hello"}, clientArgs...)...)
	if code != 0 || !strings.Contains(out, "build/greet | hello from build") || !strings.Contains(out, "✓ test/unit (") {
		t.Fatalf("submit --follow = %d:\n%s", code, out)
	}
	code, out = errandCmd(t, append([]string{"submit", "--follow", "examples/failure"}, clientArgs...)...)
	if code != 1 || !strings.Contains(out, "recover/rollback | rolling back") {
		t.Fatalf("submit --follow of a failing run = %d:\n%s", code, out)
	}

	// Jsonnet is rendered by the client, imports included.
	code, out = errandCmd(t, append([]string{"submit", "--follow", jsonnetWithImport(t), "--ext-str", "who=submit"}, clientArgs...)...)
	if code != 0 || !strings.Contains(out, "lib/hi | hello from submit") {
		t.Fatalf("submit --follow of a Jsonnet pipeline with an import = %d:\n%s", code, out)
	}

	// An approval granted through the API releases the stage.
	code, out = errandCmd(t, append([]string{"submit", "examples/approval"}, clientArgs...)...)
	id := regexp.MustCompile(`run (\S+) `).FindStringSubmatch(out)
	if code != 0 || id == nil {
		t.Fatalf("submit = %d:\n%s", code, out)
	}
	run := waitRun(t, c, id[1], func(r *client.Run) bool { return r.Stages[1].State == "waiting" })
	if run.Stages[1].Steps[0].State != errand.StatePending {
		t.Fatalf("waiting stage's step is %s", run.Stages[1].Steps[0].State)
	}
	if err := c.ApproveRun(context.Background(), id[1], "deploy", "alice"); err != nil {
		t.Fatal(err)
	}
	run = waitRun(t, c, id[1], func(r *client.Run) bool { return r.Phase == "finished" })
	if run.Result != "success" || strings.Join(run.Stages[1].Approvals, ",") != "alice" {
		t.Fatalf("approved run = %s/%s, approvals %v", run.Phase, run.Result, run.Stages[1].Approvals)
	}
	code, out = errandCmd(t, append([]string{"runs", "logs", id[1]}, clientArgs...)...)
	if code != 0 || !strings.Contains(out, "deploy/ship | shipping release") || !strings.Contains(out, "build/compile | building release") {
		t.Fatalf("runs logs = %d:\n%s", code, out)
	}
	code, out = errandCmd(t, append([]string{"runs", "list"}, clientArgs...)...)
	if code != 0 || !strings.Contains(out, id[1]) {
		t.Fatalf("runs list = %d:\n%s", code, out)
	}

	// A run cancelled mid-step still cleans up.
	created, err := c.CreateRun(context.Background(), &client.RunRequest{Config: slowConfig, Filename: "config.yml"})
	if err != nil {
		t.Fatal(err)
	}
	waitRun(t, c, created.ID, func(r *client.Run) bool { return r.Stages[0].Steps[0].State == errand.StateRunning })
	if code, out := errandCmd(t, append([]string{"runs", "cancel", created.ID}, clientArgs...)...); code != 0 {
		t.Fatalf("runs cancel = %d:\n%s", code, out)
	}
	run = waitRun(t, c, created.ID, func(r *client.Run) bool { return r.Phase == "finished" })
	cleanup, err := c.GetTask(context.Background(), run.Stages[0].CleanupTask)
	if err != nil {
		t.Fatal(err)
	}
	if run.Result != "cancelled" || cleanup.State != errand.StateSucceeded {
		t.Fatalf("cancelled run = %s, cleanup %s", run.Result, cleanup.State)
	}
	var logs bytes.Buffer
	if err := c.TaskLogs(context.Background(), cleanup.ID, nil, &logs); err != nil || !strings.Contains(logs.String(), "removed workspace") {
		t.Fatalf("cleanup log = %q (%v)", logs.String(), err)
	}
}

func waitRun(t *testing.T, c *client.HTTP, id string, cond func(*client.Run) bool) *client.Run {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := c.GetRun(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if cond(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s: condition never held; %s/%s", id, r.Phase, r.Result)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The README's pipeline (examples/project) runs as printed: a host stage
// builds the project with go build, a Docker stage sees the same files,
// and the deploy stage runs for a push to main once approved, its secret
// masked.
func TestE2EReadmePipeline(t *testing.T) {
	if img := dockerImage(t); img != "errand-test/busybox:latest" {
		t.Fatalf("examples/project runs errand-test/busybox:latest; ERRAND_TEST_DOCKER_IMAGE is %s", img)
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatal("go is needed on PATH")
	}
	run := func(args ...string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, testenv.Binary(t), args...)
		cmd.Dir = "../.."
		cmd.Env = cleanEnv("DEPLOY_KEY=s3cr3t", "GOTOOLCHAIN=local")
		out, err := cmd.CombinedOutput()
		if err != nil && cmd.ProcessState == nil {
			t.Fatalf("errand %v: %v", args, err)
		}
		return cmd.ProcessState.ExitCode(), string(out)
	}
	code, out := run("run", "examples/project", "--no-color")
	if code != 0 {
		t.Fatalf("exit code %d; output:\n%s", code, out)
	}
	for _, want := range []string{"✓ build/compile (", "test/unit | main.go is here", "deploy  skipped"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	code, out = run("run", "examples/project", "--no-color", "--branch", "main", "--event", "push", "--approve")
	if code != 0 {
		t.Fatalf("exit code %d; output:\n%s", code, out)
	}
	if !strings.Contains(out, "deploy/ship | shipping with key ******") || strings.Contains(out, "s3cr3t") {
		t.Errorf("deploy did not ship with its key masked:\n%s", out)
	}
	if _, err := os.Stat("../../examples/project/project"); err == nil {
		t.Error("the build wrote into examples/project: it must build in a copy")
	}
}
