package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
	"github.com/errandci/errand/tasks"
)

// orphanStep prints its shell's pid and its child's, then waits.
var orphanStep = tasks.ExecuteData{Step: "s", Commands: []string{`echo "shell=$$"`, `sleep 300 & echo "child=$!"`, "wait"}}

var shellPID = regexp.MustCompile(`shell=(\d+)`)

// stepPIDs waits for the shell and child pids in the step's log. The test
// kills them at its end if they still run.
func stepPIDs(t *testing.T, admin client.Client, id string) (shell, child int) {
	t.Helper()
	poll(t, "the step's pids in its log", 30*time.Second, func() bool {
		var b bytes.Buffer
		_ = admin.TaskLogs(context.Background(), id, &client.LogOptions{}, &b)
		s, c := shellPID.FindStringSubmatch(b.String()), childPID.FindStringSubmatch(b.String())
		if s == nil || c == nil {
			return false
		}
		shell, _ = strconv.Atoi(s[1])
		child, _ = strconv.Atoi(c[1])
		return true
	})
	t.Cleanup(func() {
		for _, pid := range []int{shell, child} {
			if !processGone(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	for _, pid := range []int{shell, child} {
		if processGone(pid) {
			t.Fatalf("step process %d not running", pid)
		}
	}
	return shell, child
}

// A delegate killed with SIGKILL takes its host steps with it: the
// step's shell and the shell's child are gone at once, not left running
// under PID 1.
func TestE2EKilledDelegateTakesItsStepsWithIt(t *testing.T) {
	m := fastManager(t)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	d := startDelegate(t, m, "doomed", t.TempDir())
	waitActive(t, admin, "doomed")
	execStage(t, admin, "orphan", true, orphanStep)
	waitState(t, admin, "orphan-step0", 30*time.Second, errand.StateRunning)
	shell, child := stepPIDs(t, admin, "orphan-step0")

	d.signal(syscall.SIGKILL)
	d.wait(t, 10*time.Second)
	poll(t, fmt.Sprintf("shell %d and child %d gone after the delegate was killed", shell, child), 5*time.Second, func() bool {
		return processGone(shell) && processGone(child)
	})
}

// A step whose processes outlived their delegate (its watchdog was
// killed with it) is killed by the delegate restarted on the same state
// dir before it takes work; the running step of a sibling sharing the
// state dir is left alone.
func TestE2ERestartedDelegateKillsLeftoverSteps(t *testing.T) {
	m := fastManager(t)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	state := t.TempDir()

	startDelegate(t, m, "sibling", state, "--capacity", "1")
	waitActive(t, admin, "sibling")
	execStage(t, admin, "keep", true, orphanStep)
	waitState(t, admin, "keep-step0", 30*time.Second, errand.StateRunning)
	siblingShell, siblingChild := stepPIDs(t, admin, "keep-step0")

	d := startDelegate(t, m, "phoenix", state)
	waitActive(t, admin, "phoenix")
	execStage(t, admin, "orphan", true, orphanStep)
	if tk := waitState(t, admin, "orphan-step0", 30*time.Second, errand.StateRunning); tk.DelegateID != d.delegateID(t, admin) {
		t.Fatalf("orphan step runs on %s, want phoenix", tk.DelegateID)
	}
	shell, child := stepPIDs(t, admin, "orphan-step0")

	// Lose the watchdog with its delegate: killed first so that it
	// cannot act on the delegate's end. (Stopping it would not do: a
	// stopped process whose group is orphaned by the delegate's death is
	// sent SIGHUP and SIGCONT by the kernel, and goes on where SIGHUP is
	// ignored, as under nohup.) The delegate does not watch its
	// watchdogs, so it does nothing in between.
	wd := childNamed(t, d.cmd.Process.Pid, "errand-step-watchdog")
	if err := syscall.Kill(wd, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.signal(syscall.SIGKILL)
	d.wait(t, 10*time.Second)
	poll(t, fmt.Sprintf("shell %d gone with its delegate", shell), 5*time.Second, func() bool { return processGone(shell) })
	if processGone(child) {
		t.Fatalf("child %d gone already; the test wants it left over", child)
	}

	restarted := startDelegate(t, m, "phoenix", state)
	poll(t, fmt.Sprintf("leftover child %d killed by the restarted delegate", child), 15*time.Second, func() bool { return processGone(child) })
	poll(t, "the restarted delegate to say what it killed", 10*time.Second, func() bool {
		return strings.Contains(restarted.out.String(), "left running by a previous delegate process")
	})
	poll(t, "the restarted delegate to register", 10*time.Second, func() bool {
		return strings.Contains(restarted.out.String(), "registered")
	})
	for _, pid := range []int{siblingShell, siblingChild} {
		if processGone(pid) {
			t.Fatalf("the sibling's step process %d was killed", pid)
		}
	}
	if tk, _ := admin.GetTask(context.Background(), "keep-step0"); tk == nil || tk.State != errand.StateRunning {
		t.Fatalf("the sibling's step: %+v; want still running", tk)
	}
}

// childNamed finds the child process of parent whose command line holds
// name.
func childNamed(t *testing.T, parent int, name string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+1:])
		if len(f) < 2 || f[1] != strconv.Itoa(parent) {
			continue
		}
		if cl, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); bytes.Contains(cl, []byte(name)) {
			return pid
		}
	}
	t.Fatalf("no child process of %d named %s", parent, name)
	return 0
}
