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
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
)

// cliFixture starts a manager and fills it with what the CLI scripts
// look at: a delegate, a task that ran and logged, a queued task.
func cliFixture(t *testing.T) (*testenv.Manager, *delegateClient) {
	t.Helper()
	m := testenv.StartManager(t, testenv.Binary(t), "--max-wait", "10s", "--log-format", "json")
	admin := testenv.Client(t, m.URL, m.AdminToken)
	ctx := context.Background()
	c := testenv.Client(t, m.URL, m.RegistrationToken)
	reg, err := c.Register(ctx, &client.RegisterRequest{Name: "cli-delegate", Hostname: "e2e-host", Group: "builders", Capacity: 2})
	if err != nil {
		t.Fatal(err)
	}
	d := &delegateClient{id: reg.ID, HTTP: c.WithToken(reg.Token)}
	if _, err := admin.CreateTasks(ctx, []*client.TaskSpec{{ID: "cli-done", Type: "e2e.cli"}}); err != nil {
		t.Fatal(err)
	}
	task := d.acquire(t, 1, 10*time.Second)[0]
	d.report(t, task, errand.StateRunning, "", nil)
	if _, err := d.AppendLogs(ctx, task.ID, &client.LogAppend{Lease: task.Lease.Token, Lines: []string{"first", "second", "third"}}); err != nil {
		t.Fatal(err)
	}
	d.report(t, task, errand.StateSucceeded, `{"ok":true}`, nil)
	if _, err := admin.CreateTasks(ctx, []*client.TaskSpec{{ID: "cli-queued", Type: "e2e.cli", Priority: 5}}); err != nil {
		t.Fatal(err)
	}
	return m, d
}

// TestCLIScripts runs the scripts in testdata against the errand binary
// and a running manager.
func TestCLIScripts(t *testing.T) {
	bin := testenv.Binary(t)
	m, d := cliFixture(t)
	testscript.Run(t, testscript.Params{
		Dir: "testdata",
		Setup: func(env *testscript.Env) error {
			env.Setenv("PATH", filepath.Dir(bin)+string(os.PathListSeparator)+env.Getenv("PATH"))
			env.Setenv("ERRAND_MANAGER", m.URL)
			env.Setenv("ERRAND_TOKEN", m.AdminToken)
			env.Setenv("MANAGER_DATA_DIR", m.DataDir)
			env.Setenv("ADMIN_TOKEN", m.AdminToken)
			env.Setenv("DELEGATE", d.id)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"waitdelegate": waitDelegateCmd(m),
			"waittask":     waitTaskCmd(m),
			"usage":        usageCmd,
		},
		RequireExplicitExec: true,
	})
}

// usageCmd is the script command `usage PROG ARGS...`: it runs the
// program, keeps its output for stdout and stderr, and fails unless it
// exits with code 2 (a usage error).
func usageCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 {
		ts.Fatalf("usage: usage PROG [ARGS...]")
	}
	err := ts.Exec(args[0], args[1:]...)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitUsage {
		ts.Fatalf("%s: want exit code %d, got %v", strings.Join(args, " "), exitUsage, err)
	}
}

// scriptWait polls cond every 50ms for up to 30 seconds: the manager is
// asked, there is no event to wait for.
func scriptWait(ts *testscript.TestScript, what string, cond func(ctx context.Context) (bool, error)) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ok, err := cond(ctx)
		cancel()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s: not within 30s (last error: %v)", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitDelegateCmd is the script command `waitdelegate NAME [overloaded]`:
// it waits for an active delegate of that name (that says it is
// overloaded).
func waitDelegateCmd(m *testenv.Manager) func(ts *testscript.TestScript, neg bool, args []string) {
	return func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) < 1 || len(args) > 2 || len(args) == 2 && args[1] != "overloaded" {
			ts.Fatalf("usage: waitdelegate NAME [overloaded]")
		}
		c := client.New(m.URL, m.AdminToken)
		scriptWait(ts, "delegate "+strings.Join(args, " "), func(ctx context.Context) (bool, error) {
			l, err := c.ListDelegates(ctx)
			if err != nil {
				return false, err
			}
			for _, d := range l.Items {
				if d.Name == args[0] && d.State == errand.DelegateActive && (len(args) == 1 || d.Overloaded) {
					return true, nil
				}
			}
			return false, nil
		})
	}
}

// waitTaskCmd is the script command `waittask ID STATE`: it waits for the
// task to be in that state.
func waitTaskCmd(m *testenv.Manager) func(ts *testscript.TestScript, neg bool, args []string) {
	return func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) != 2 {
			ts.Fatalf("usage: waittask ID STATE")
		}
		c := client.New(m.URL, m.AdminToken)
		scriptWait(ts, "task "+args[0]+" "+args[1], func(ctx context.Context) (bool, error) {
			task, err := c.GetTask(ctx, args[0])
			if err != nil {
				return false, err
			}
			return string(task.State) == args[1], fmt.Errorf("state %s", task.State)
		})
	}
}

// TestCLIExitCodes runs the command line in-process and checks exit codes
// and messages.
func TestCLIExitCodes(t *testing.T) {
	m, _ := cliFixture(t)
	closed := "http://127.0.0.1:" + itoa(testenv.FreePort(t))
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"version", []string{"version"}, 0, "errand dev", ""},
		{"--version", []string{"--version"}, 0, "errand dev", ""},
		{"bad manager URL", []string{"tasks", "list", "--manager", "localhost:7700"}, 2, "", "--manager (or ERRAND_MANAGER)"},
		{"bad label", []string{"delegate", "--label", "nokey", "--state-dir", t.TempDir()}, 2, "", "--label (or ERRAND_LABEL)"},
		{"bad duration", []string{"delegate", "--drain-timeout", "1 hour", "--state-dir", t.TempDir()}, 2, "", "--drain-timeout (or ERRAND_DRAIN_TIMEOUT)"},
		{"no command", []string{}, 2, "", "expected command"},
		{"unknown command", []string{"frobnicate"}, 2, "", "expected command"},
		{"unknown subcommand", []string{"tasks", "frobnicate"}, 2, "", "expected command"},
		{"unknown flag", []string{"tasks", "list", "--frob"}, 2, "", "unknown long flag"},
		{"missing argument", []string{"tasks", "get", "--manager", m.URL}, 2, "", "required argument"},
		{"bad output", []string{"tasks", "list", "-o", "xml"}, 2, "", "enum value"},
		{"negative offset", []string{"tasks", "logs", "cli-done", "--offset", "-1", "--manager", m.URL, "--token=" + m.AdminToken}, 2, "", "--offset"},
		{"wrong token", []string{"tasks", "list", "--manager", m.URL, "--token", "wrong-token-0123456789"}, 1, "", "unauthorized"},
		{"registration token is not admin", []string{"delegates", "list", "--manager", m.URL, "--token=" + m.RegistrationToken}, 1, "", "errand: list delegates: "},
		{"not found", []string{"tasks", "get", "nope", "--manager", m.URL, "--token=" + m.AdminToken}, 1, "", "not_found"},
		{"no manager", []string{"tasks", "list", "--manager", closed, "--token", "x"}, 1, "", "connection refused"},
		{"missing file", []string{"tasks", "create", "/nonexistent/spec.json", "--manager", m.URL, "--token=" + m.AdminToken}, 1, "", "no such file"},
		{"token from data dir", []string{"tasks", "list", "--manager", m.URL, "--data-dir", m.DataDir}, 0, "cli-done", ""},
		{"no token", []string{"tasks", "list", "--manager", m.URL, "--data-dir", t.TempDir()}, 1, "", "pass --token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("ERRAND_TOKEN", "")
			t.Setenv("ERRAND_MANAGER", "")
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("stdout %q does not contain %q", stdout.String(), tt.stdout)
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.stderr)
			}
		})
	}
}

func TestReadSpecs(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string
		ids     []string
		wantErr string
	}{
		{"single", `{"id":"a","type":"x","data":{"k":1}}`, []string{"a"}, ""},
		{"batch", `{"tasks":[{"id":"a","type":"x"},{"id":"b","type":"x","depends_on":[{"task":"a","condition":"always"}]}]}`, []string{"a", "b"}, ""},
		{"unknown field", `{"id":"a","type":"x","colour":"red"}`, nil, `unknown field "colour"`},
		{"unknown batch field", `{"tasks":[{"type":"x","bogus":1}]}`, nil, `unknown field "bogus"`},
		{"empty batch", `{"tasks":[]}`, nil, "holds no task"},
		{"malformed", `{"type":`, nil, "malformed JSON"},
		{"not an object", `[1,2]`, nil, "cannot use JSON array"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".json")
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			specs, err := readSpecs(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range specs {
				got = append(got, s.ID)
			}
			if strings.Join(got, ",") != strings.Join(tt.ids, ",") {
				t.Errorf("ids %v, want %v", got, tt.ids)
			}
			if tt.name == "single" && !json.Valid(specs[0].Data) {
				t.Errorf("data %s", specs[0].Data)
			}
		})
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}
