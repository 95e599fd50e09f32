package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
)

// orderConfig has a stage printing many lines slowly, a chain of
// dependents printing fast, and an independent stage running beside
// them.
const orderConfig = `stages:
  - name: slow
    steps:
      - name: count
        commands: ['for i in $(seq 1 30); do echo line $i; sleep 0.01; done']
      - name: tail
        commands: [echo tail]
  - name: next
    depends: [slow]
    steps:
      - name: quick
        commands: ['for i in 1 2 3 4 5 6 7 8; do echo quick $i; done']
  - name: last
    depends: [next]
    steps:
      - name: a
        commands: [echo a1, echo a2]
      - name: b
        commands: [echo b1]
      - name: c
        commands: [echo c1]
  - name: side
    steps:
      - name: p
        commands: ['for i in 1 2 3; do echo side $i; done']
`

// orderAfter lists, for each step of orderConfig, the steps whose whole
// output (log and status) must be printed before any line of it.
var orderAfter = map[string][]string{
	"slow/tail":  {"slow/count"},
	"next/quick": {"slow/count", "slow/tail"},
	"last/a":     {"slow/count", "slow/tail", "next/quick"},
	"last/b":     {"last/a"},
	"last/c":     {"last/b"},
}

// stepLine matches the lines that belong to a step: its start, its log,
// its status.
var stepLine = regexp.MustCompile(`^(?:▶ (\S+)$|(\S+/\S+) \| |[✓✗–] (\S+/\S+)(?: |$))`)

// lineSpans returns the index of the first and last line of each step.
func lineSpans(out string) (first, last map[string]int) {
	first, last = map[string]int{}, map[string]int{}
	for i, l := range strings.Split(out, "\n") {
		m := stepLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		key := m[1] + m[2] + m[3]
		if _, ok := first[key]; !ok {
			first[key] = i
		}
		last[key] = i
	}
	return first, last
}

func TestE2ERunOutputInRunOrder(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(cfg, []byte(orderConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	for run := 0; run < 5; run++ {
		code, out := errandCmd(t, "run", "--no-color", cfg)
		if code != 0 {
			t.Fatalf("run %d: exit code %d:\n%s", run, code, out)
		}
		first, last := lineSpans(out)
		for step, before := range orderAfter {
			if _, ok := first[step]; !ok {
				t.Fatalf("run %d: no line of %s:\n%s", run, step, out)
			}
			for _, b := range before {
				if last[b] > first[step] {
					t.Fatalf("run %d: %s printed before the end of %s:\n%s", run, step, b, out)
				}
			}
		}
		// Each step's log is whole and in order.
		for i := 1; i <= 30; i++ {
			if !strings.Contains(out, "slow/count | line "+itoa(i)+"\n") {
				t.Fatalf("run %d: line %d of slow/count missing:\n%s", run, i, out)
			}
		}
		for _, w := range []string{"STAGE", "RESULT", "DURATION", "▶ side/p", "side/p | side 3"} {
			if !strings.Contains(out, w) {
				t.Fatalf("run %d: output lacks %q:\n%s", run, w, out)
			}
		}
		if !regexp.MustCompile(`(?m)^total +success +\d`).MatchString(out) {
			t.Fatalf("run %d: no total line in the summary:\n%s", run, out)
		}
		if strings.Contains(out, "\x1b[") {
			t.Fatalf("run %d: colours with --no-color:\n%q", run, out)
		}
	}
}

func TestE2ERunTimestampsAndJSON(t *testing.T) {
	code, out := errandCmd(t, "run", "--timestamps", "examples/hello")
	if code != 0 {
		t.Fatalf("exit code %d:\n%s", code, out)
	}
	stamped := regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ `)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, "errand: ") {
			continue
		}
		if !stamped.MatchString(l) {
			t.Fatalf("line without a timestamp: %q\n%s", l, out)
		}
	}

	code, out = errandCmd(t, "run", "--json", "examples/failure")
	if code != 1 {
		t.Fatalf("exit code %d:\n%s", code, out)
	}
	seen := map[string]int{}
	var end followEvent
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "errand: ") {
			continue
		}
		var ev followEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("not a JSON event: %q: %v", l, err)
		}
		if ev.RunID == "" || ev.Time.IsZero() || ev.Time.Location() != time.UTC {
			t.Fatalf("event without run id or UTC time: %q", l)
		}
		seen[ev.Event]++
		if ev.Event == "log" && ev.Stage == "flaky" && ev.Step == "break" && *ev.Line == "about to fail" {
			seen["break line"]++
		}
		if ev.Event == "step_ended" && ev.Step == "break" && (ev.ExitCode == nil || *ev.ExitCode != 3 || ev.State != "failed") {
			t.Fatalf("step_ended of break: %q", l)
		}
		if ev.Event == "run_ended" {
			end = ev
		}
	}
	for _, e := range []string{"step_started", "log", "step_ended", "run_ended", "break line"} {
		if seen[e] == 0 {
			t.Fatalf("no %s event:\n%s", e, out)
		}
	}
	if end.Result != "failed" || len(end.Stages) != 4 || end.Stages[0].Name != "flaky" || end.Stages[0].State != "failed" {
		t.Fatalf("run_ended = %+v", end)
	}
}

// setupFailConfig has a host stage asking to be privileged (the delegate
// is not allowed to) and a Docker stage whose image is absent with pull
// never.
const setupFailConfig = `stages:
  - name: priv
    privileged: true
    steps:
      - name: s
        commands: [echo never]
  - name: absent
    runtime:
      type: docker
      image: errand-test/absent:nope
      pull: never
    steps:
      - name: s
        commands: [echo never]
`

// wantSetupFailures are what the output must say of setupFailConfig.
var wantSetupFailures = []string{
	"priv: setup failed", "forbidden", "--allow-privileged",
	"absent: setup failed", "image_not_found", "errand-test/absent:nope", "pull policy is never",
}

func TestE2ESetupFailuresShown(t *testing.T) {
	dockerImage(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, []byte(setupFailConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := errandCmd(t, "run", cfg)
	if code != 1 {
		t.Fatalf("errand run: exit code %d:\n%s", code, out)
	}
	for _, w := range wantSetupFailures {
		if !strings.Contains(out, w) {
			t.Errorf("errand run output lacks %q:\n%s", w, out)
		}
	}

	m := fastManager(t)
	d := startDelegate(t, m, "setup", t.TempDir())
	defer d.signal(syscall.SIGTERM)
	args := []string{"--manager", m.URL, "--token=" + m.AdminToken}
	code, out = errandCmd(t, append([]string{"submit", "--follow", cfg}, args...)...)
	if code != 1 {
		t.Fatalf("submit --follow: exit code %d:\n%s", code, out)
	}
	for _, w := range wantSetupFailures {
		if !strings.Contains(out, w) {
			t.Errorf("submit --follow output lacks %q:\n%s", w, out)
		}
	}
	id := regexp.MustCompile(`run (\S+) `).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("no run id in:\n%s", out)
	}
	code, out = errandCmd(t, append([]string{"runs", "get", id[1]}, args...)...)
	if code != 0 {
		t.Fatalf("runs get: exit code %d:\n%s", code, out)
	}
	for _, w := range []string{"(setup)", "forbidden", "image_not_found", "pull policy is never", "started:", "finished:", "duration:"} {
		if !strings.Contains(out, w) {
			t.Errorf("runs get output lacks %q:\n%s", w, out)
		}
	}

	// The API says it too.
	run, err := testenv.Client(t, m.URL, m.AdminToken).GetRun(context.Background(), id[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range run.Stages {
		if s.Setup == nil || s.Setup.State != errand.StateFailed || s.Setup.Error == nil || s.Setup.TaskID != s.InitializeTask || s.Setup.FinishedAt == nil {
			t.Fatalf("stage %s: setup = %+v", s.Name, s.Setup)
		}
		if s.Cleanup == nil || !s.Cleanup.State.Terminal() {
			t.Fatalf("stage %s: cleanup = %+v", s.Name, s.Cleanup)
		}
	}
	if run.Stages[1].Setup.Error.Code != "image_not_found" {
		t.Fatalf("setup error of absent = %+v", run.Stages[1].Setup.Error)
	}
}

const twoApprovals = `stages:
  - name: build
    steps:
      - name: compile
        commands: [echo compiled]
  - name: deploy
    depends: [build]
    approval: {approvers: 2}
    steps:
      - name: ship
        commands: [echo shipped]
`

func TestE2ERunApproveTwoApprovers(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(cfg, []byte(twoApprovals), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := errandCmd(t, "run", "--approve", cfg)
	if code != 0 {
		t.Fatalf("exit code %d:\n%s", code, out)
	}
	for _, w := range []string{"deploy: approved by errand-run-1, errand-run-2", "deploy/ship | shipped", "✓ deploy/ship ("} {
		if !strings.Contains(out, w) {
			t.Fatalf("output lacks %q:\n%s", w, out)
		}
	}
}

// startSubmitFollow starts errand submit --follow of config and waits
// until it printed waitFor.
func startSubmitFollow(t *testing.T, m *testenv.Manager, config, waitFor string, extra ...string) (*exec.Cmd, *lineRecorder, string) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"submit", "--follow", "--manager", m.URL, "--token=" + m.AdminToken, cfg}, extra...)
	cmd := exec.Command(testenv.Binary(t), args...)
	cmd.Env = cleanEnv()
	out := newLineRecorder()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	out.waitFor(t, waitFor, 30*time.Second)
	id := regexp.MustCompile(`run (\S+) `).FindStringSubmatch(out.String())
	if id == nil {
		t.Fatalf("no run id in:\n%s", out.String())
	}
	return cmd, out, id[1]
}

// waitExit waits for a command to exit and returns its exit code.
func waitExit(t *testing.T, cmd *exec.Cmd, out *lineRecorder, within time.Duration) int {
	t.Helper()
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(within):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("errand did not exit within %s:\n%s", within, out.String())
	}
	return cmd.ProcessState.ExitCode()
}

func TestE2ESubmitFollowInterrupt(t *testing.T) {
	m := fastManager(t)
	d := startDelegate(t, m, "follow", t.TempDir())
	defer d.signal(syscall.SIGTERM)
	c := testenv.Client(t, m.URL, m.AdminToken)

	// Ctrl-C stops following; the run goes on.
	cmd, out, id := startSubmitFollow(t, m, slowConfig, "slow/wait | started")
	_ = cmd.Process.Signal(syscall.SIGINT)
	if code := waitExit(t, cmd, out, 20*time.Second); code != exitRunInterrupted {
		t.Fatalf("exit code %d, want %d:\n%s", code, exitRunInterrupted, out.String())
	}
	if !strings.Contains(out.String(), "goes on") {
		t.Fatalf("output does not say the run goes on:\n%s", out.String())
	}
	run, err := c.GetRun(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if run.Phase != "running" || run.CancelledAt != nil || run.Stages[0].Steps[0].State != errand.StateRunning {
		t.Fatalf("after the follower's Ctrl-C the run is %s/%s (cancelled at %v), step %s", run.Phase, run.Result, run.CancelledAt, run.Stages[0].Steps[0].State)
	}
	if err := c.CancelRun(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	waitRun(t, c, id, func(r *client.Run) bool { return r.Phase == "finished" })

	// --cancel-on-interrupt cancels it.
	cmd, out, id = startSubmitFollow(t, m, slowConfig, "slow/wait | started", "--cancel-on-interrupt")
	_ = cmd.Process.Signal(syscall.SIGINT)
	if code := waitExit(t, cmd, out, 40*time.Second); code != exitRunInterrupted {
		t.Fatalf("--cancel-on-interrupt: exit code %d, want %d:\n%s", code, exitRunInterrupted, out.String())
	}
	run = waitRun(t, c, id, func(r *client.Run) bool { return r.Phase == "finished" })
	if run.Result != "cancelled" {
		t.Fatalf("--cancel-on-interrupt: the run is %s", run.Result)
	}
}

// restartConfig has a step that outlives a manager restart.
const restartConfig = `stages:
  - name: long
    steps:
      - name: wait
        commands: ['echo started', 'sleep 4', 'echo finished']
  - name: after
    depends: [long]
    steps:
      - name: done
        commands: [echo after the restart]
`

func TestE2ESubmitFollowSurvivesManagerRestart(t *testing.T) {
	// Leases outlive the manager's absence: the step's result is kept.
	m := testenv.StartManager(t, testenv.Binary(t),
		"--heartbeat-interval", "200ms", "--lease-ttl", "1m", "--sweep-interval", "100ms")
	d := startDelegate(t, m, "restart", t.TempDir())
	defer d.signal(syscall.SIGTERM)
	cmd, out, id := startSubmitFollow(t, m, restartConfig, "long/wait | started")
	// Down for longer than the client's own retries.
	m.Kill()
	out.waitFor(t, "the manager does not answer", 30*time.Second)
	m.Restart(t)
	if code := waitExit(t, cmd, out, 90*time.Second); code != 0 {
		t.Fatalf("exit code %d after a manager restart, want 0:\n%s", code, out.String())
	}
	for _, w := range []string{"long/wait | finished", "after/done | after the restart", "run " + id + " success"} {
		if !strings.Contains(out.String(), w) {
			t.Fatalf("output lacks %q:\n%s", w, out.String())
		}
	}

	// A manager that stays away: the follower says it could not follow.
	cmd, out, _ = startSubmitFollow(t, m, slowConfig, "slow/wait | started", "--reconnect-for", "8s")
	m.Kill()
	start := time.Now()
	if code := waitExit(t, cmd, out, time.Minute); code != exitCouldNotFollow {
		t.Fatalf("exit code %d with the manager gone, want %d:\n%s", code, exitCouldNotFollow, out.String())
	}
	if !strings.Contains(out.String(), "the manager does not answer") {
		t.Fatalf("output does not say the manager does not answer:\n%s", out.String())
	}
	// The follower's window opens at its first failed call, which may
	// come a moment before Kill returns; without retries it would give
	// up at once.
	if time.Since(start) < 6*time.Second {
		t.Fatalf("gave up after %s with --reconnect-for 8s: no retry", time.Since(start))
	}
}

func TestE2ERunsCancelEndedApproveTwice(t *testing.T) {
	m := fastManager(t)
	d := startDelegate(t, m, "twice", t.TempDir())
	defer d.signal(syscall.SIGTERM)
	c := testenv.Client(t, m.URL, m.AdminToken)
	args := []string{"--manager", m.URL, "--token=" + m.AdminToken}

	done, err := c.CreateRun(context.Background(), &client.RunRequest{Config: "stages: [{name: a, steps: [{name: s, commands: [echo hi]}]}]", Filename: "config.yml"})
	if err != nil {
		t.Fatal(err)
	}
	waitRun(t, c, done.ID, func(r *client.Run) bool { return r.Phase == "finished" })
	code, out := errandCmd(t, append([]string{"runs", "cancel", done.ID}, args...)...)
	if code == 0 || !strings.Contains(out, "has ended") {
		t.Fatalf("runs cancel of an ended run = %d:\n%s", code, out)
	}

	run, err := c.CreateRun(context.Background(), &client.RunRequest{Config: twoApprovals, Filename: "config.yml"})
	if err != nil {
		t.Fatal(err)
	}
	waitRun(t, c, run.ID, func(r *client.Run) bool { return r.Stages[1].State == "waiting" })
	if code, out := errandCmd(t, append([]string{"runs", "approve", run.ID, "deploy", "--as", "alice"}, args...)...); code != 0 {
		t.Fatalf("first approval = %d:\n%s", code, out)
	}
	code, out = errandCmd(t, append([]string{"runs", "approve", run.ID, "deploy", "--as", "alice"}, args...)...)
	if code == 0 || !strings.Contains(out, "alice has approved stage deploy") {
		t.Fatalf("second approval by the same approver = %d:\n%s", code, out)
	}
	if code, out := errandCmd(t, append([]string{"runs", "approve", run.ID, "deploy", "--as", "bob"}, args...)...); code != 0 {
		t.Fatalf("approval by another = %d:\n%s", code, out)
	}
	waitRun(t, c, run.ID, func(r *client.Run) bool { return r.Phase == "finished" })
	code, out = errandCmd(t, append([]string{"runs", "approve", run.ID, "deploy", "--as", "carol"}, args...)...)
	if code == 0 || !strings.Contains(out, "not waiting for approval") {
		t.Fatalf("approval of a released stage = %d:\n%s", code, out)
	}

	// -o json: RFC 3339 in UTC; tables: local time with its zone.
	code, out = errandCmd(t, append([]string{"runs", "get", "-o", "json", run.ID}, args...)...)
	var got client.Run
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.StartedAt == nil || got.FinishedAt == nil || got.Duration <= 0 {
		t.Fatalf("runs get -o json = %d:\n%s", code, out)
	}
	if !regexp.MustCompile(`"finished_at": "[0-9T:.-]+Z"`).MatchString(out) {
		t.Fatalf("runs get -o json times are not in UTC:\n%s", out)
	}
	code, out = errandCmd(t, append([]string{"runs", "list"}, args...)...)
	if code != 0 || !strings.Contains(out, "STARTED") || !strings.Contains(out, "DURATION") ||
		!strings.Contains(out, got.FinishedAt.Local().Format(tableTimeLayout)) {
		t.Fatalf("runs list = %d:\n%s", code, out)
	}
	code, out = errandCmd(t, append([]string{"submit", "-o", "json", "examples/hello"}, args...)...)
	var sub client.Run
	if code != 0 || json.Unmarshal([]byte(out), &sub) != nil || sub.ID == "" || sub.Kind != client.KindRun {
		t.Fatalf("submit -o json = %d:\n%s", code, out)
	}
}

// runOnTerminal runs errand with its stdout and stderr on a pseudo
// terminal and returns what it wrote there.
func runOnTerminal(t *testing.T, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Binary(t), args...)
	cmd.Dir = "../.."
	cmd.Env = cleanEnv(env...)
	tty, err := pty.Start(cmd)
	if err != nil {
		t.Fatalf("start errand on a pseudo terminal: %v", err)
	}
	defer tty.Close()
	var out strings.Builder
	_, _ = io.Copy(&out, tty) // ends with EIO once errand exited
	if err := cmd.Wait(); err != nil {
		t.Fatalf("errand %v: %v\n%s", args, err, out.String())
	}
	return out.String()
}

func TestE2ERunColours(t *testing.T) {
	if out := runOnTerminal(t, nil, "run", "examples/hello"); !strings.Contains(out, "\x1b[32m✓ build/greet") {
		t.Fatalf("no colour on a terminal:\n%q", out)
	}
	for name, c := range map[string]struct {
		env  []string
		args []string
	}{
		"NO_COLOR":   {[]string{"NO_COLOR=1"}, []string{"run", "examples/hello"}},
		"--no-color": {nil, []string{"run", "--no-color", "examples/hello"}},
	} {
		if out := runOnTerminal(t, c.env, c.args...); strings.Contains(out, "\x1b[") || !strings.Contains(out, "✓ build/greet") {
			t.Fatalf("%s: colours or no status line:\n%q", name, out)
		}
	}
}

// A stage whose selector no delegate matches says why it waits instead
// of waiting in silence; errand run, whose one delegate is all there is,
// gives up and says so.
func TestE2ERunSaysWhyAStageWaits(t *testing.T) {
	project := t.TempDir()
	writeFiles(t, project, map[string]string{"config.yml": `stages:
  - name: deploy
    selector: {labels: {env: prod}}
    steps:
      - name: ship
        commands: [echo shipped]
`})
	cmd, out, _ := startRun(t, project, "run", "--no-color")
	if code := waitExit(t, cmd, out, 60*time.Second); code != exitRunFailed {
		t.Fatalf("exit code %d, want %d; output:\n%s", code, exitRunFailed, out.String())
	}
	for _, want := range []string{
		"deploy/setup: waiting: no registered delegate serving exec.initialize matches the selector",
		"deploy/setup: no delegate here can run it: cancelling the run",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "shipped") {
		t.Errorf("the step ran:\n%s", out.String())
	}
}
