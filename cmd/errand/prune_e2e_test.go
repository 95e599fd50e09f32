package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/volume"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
	"github.com/errandci/errand/tasks/docker"
)

// startSleepyRun starts `errand run` of a docker stage whose step sleeps,
// with its temporary directory under tmp, and waits until its step runs.
// It returns the process and its temporary directory.
func startSleepyRun(t *testing.T, img, tmp, name string) (*delegateProc, string) {
	t.Helper()
	before, _ := filepath.Glob(filepath.Join(tmp, "errand-run-*"))
	cmd := exec.Command(testenv.Binary(t), "run", sleepyDockerConfig(t, img))
	cmd.Env = cleanEnv("TMPDIR=" + tmp)
	p := startProc(t, name, cmd)
	pid := cmd.Process.Pid
	t.Cleanup(func() { localResources(t, pid, true) })
	poll(t, "the step container of "+name, 60*time.Second, func() bool {
		c, v := localResources(t, pid, false)
		return len(c) == 1 && len(v) == 1
	})
	after, _ := filepath.Glob(filepath.Join(tmp, "errand-run-*"))
	var dir string
	for _, d := range after {
		if !slices.Contains(before, d) {
			dir = d
		}
	}
	if dir == "" {
		t.Fatalf("%s made no directory in %s", name, tmp)
	}
	return p, dir
}

// labelledVolume creates a volume with Errand's labels and removes it
// when the test ends.
func labelledVolume(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	c, err := docker.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	labels[docker.LabelManaged] = "true"
	if _, err := c.VolumeCreate(context.Background(), volume.CreateOptions{Name: name, Labels: labels}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := docker.NewClient(); err == nil {
			_ = c.VolumeRemove(context.Background(), name, true)
			c.Close()
		}
	})
}

// TestE2EPrune leaves on one host a live errand run, an errand run killed
// with SIGKILL, a delegate's stage still running, a stage its manager no
// longer knows, another manager's volume and a volume of an older Errand,
// and checks that `errand prune --dry-run` lists and `errand prune`
// removes exactly what is no longer used: the killed run's containers,
// volume and temporary directory, the unknown stage's volume and an exec
// workspace of a run that ended.
func TestE2EPrune(t *testing.T) {
	img := dockerImage(t)
	bin := testenv.Binary(t)
	tmp := t.TempDir()

	live, liveDir := startSleepyRun(t, img, tmp, "live errand run")
	livePID := live.cmd.Process.Pid
	dead, deadDir := startSleepyRun(t, img, tmp, "killed errand run")
	deadPID := dead.cmd.Process.Pid
	dead.signal(syscall.SIGKILL)
	dead.wait(t, 10*time.Second)
	old := time.Now().Add(-time.Minute)
	if err := os.Chtimes(deadDir, old, old); err != nil {
		t.Fatal(err)
	}

	m := fastManager(t)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	l, err := admin.ListDelegates(context.Background())
	if err != nil || l.ManagerID == "" {
		t.Fatalf("manager identity: %+v %v", l, err)
	}
	busy := startDelegate(t, m, "busy", t.TempDir())
	waitActive(t, admin, "busy")
	busyID := busy.delegateID(t, admin)
	owned := docker.LabelDelegate + "=" + busyID
	t.Cleanup(func() { sweepDocker(owned) })
	src, err := os.ReadFile(filepath.Join(sleepyDockerConfig(t, img), "config.yml"))
	if err != nil {
		t.Fatal(err)
	}
	busyRun, err := admin.CreateRun(context.Background(), &client.RunRequest{Config: string(src), Filename: "config.yml"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.CancelRun(context.Background(), busyRun.ID) })
	poll(t, "the step container of delegate busy", 60*time.Second, func() bool {
		c, _, v := countDocker(t, owned)
		return c == 1 && v == 1
	})
	// A run whose tasks all ended, on the host.
	endedRun, err := admin.CreateRun(context.Background(), &client.RunRequest{Filename: "config.yml",
		Config: "stages:\n  - name: build\n    steps:\n      - name: ok\n        commands: [\"true\"]\n"})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, "run "+endedRun.ID+" to finish", 60*time.Second, func() bool {
		r, err := admin.GetRun(context.Background(), endedRun.ID)
		return err == nil && r.Phase == "finished"
	})

	suffix := strings.ToLower(busyID)
	gone, foreign, legacy := "errand-prune-gone-"+suffix, "errand-prune-foreign-"+suffix, "errand-prune-legacy-"+suffix
	labelledVolume(t, gone, map[string]string{docker.LabelManager: l.ManagerID, docker.LabelRun: "run-gone-" + suffix,
		docker.LabelInitialize: "init-gone-" + suffix})
	labelledVolume(t, foreign, map[string]string{docker.LabelManager: "m-other-" + suffix, docker.LabelRun: "r",
		docker.LabelInitialize: "i"})
	labelledVolume(t, legacy, map[string]string{docker.LabelRun: "r"})

	// An exec workspace of a run whose tasks all ended, and one of a run
	// the manager does not know.
	stateDir := t.TempDir()
	endedWS := filepath.Join(stateDir, "workspaces", endedRun.ID)
	unknownWS := filepath.Join(stateDir, "workspaces", "run-unknown-"+suffix)
	for _, d := range []string{endedWS, unknownWS} {
		if err := os.MkdirAll(filepath.Join(d, "build-1"), 0o750); err != nil {
			t.Fatal(err)
		}
	}

	prune := func(env ...string) map[string]pruneItem {
		t.Helper()
		cmd := exec.Command(bin, "prune", "-o", "json", "--state-dir", stateDir)
		cmd.Env = cleanEnv(append([]string{"ERRAND_MANAGER=" + m.URL, "ERRAND_TOKEN=" + m.AdminToken, "ERRAND_TEMP_DIR=" + tmp}, env...)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("errand prune: %v\n%s", err, out)
		}
		var l pruneList
		if err := json.Unmarshal(out, &l); err != nil {
			t.Fatalf("errand prune output %q: %v", out, err)
		}
		items := map[string]pruneItem{}
		for _, it := range l.Items {
			items[it.Name] = it
		}
		return items
	}
	liveC, liveV := localResources(t, livePID, false)
	deadC, deadV := localResources(t, deadPID, false)
	check := func(items map[string]pruneItem, removed string) {
		t.Helper()
		want := map[string]string{
			liveC[0]: pruneKept, liveV[0]: pruneKept, liveDir: pruneKept,
			deadC[0]: removed, deadV[0]: removed, deadDir: removed,
			gone: removed, foreign: pruneKept, legacy: pruneKept,
			endedWS: removed, unknownWS: pruneKept,
		}
		for name, action := range want {
			if got := items[name]; got.Action != action {
				t.Errorf("%s: %q (%s); want %q", name, got.Action, got.Reason, action)
			}
		}
		for name, it := range items {
			if it.Action == pruneFailed {
				t.Errorf("%s: %s", name, it.Reason)
			}
		}
	}

	check(prune("ERRAND_DRY_RUN=true"), pruneWouldRemove)
	if c, v := localResources(t, deadPID, false); len(c) != 1 || len(v) != 1 {
		t.Fatalf("--dry-run removed the killed run's containers or volume: %v %v", c, v)
	}
	if _, err := os.Stat(deadDir); err != nil {
		t.Fatalf("--dry-run removed %s: %v", deadDir, err)
	}

	check(prune(), pruneRemoved)
	if c, v := localResources(t, deadPID, false); len(c)+len(v) != 0 {
		t.Errorf("the killed run's containers %v and volumes %v are still there", c, v)
	}
	for _, d := range []string{deadDir, endedWS} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s still there (%v)", d, err)
		}
	}
	for _, d := range []string{liveDir, unknownWS} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s removed: %v", d, err)
		}
	}
	if c, _, v := countDocker(t, owned); c != 1 || v != 1 {
		t.Errorf("the running stage of delegate busy: %d containers, %d volumes; want 1, 1", c, v)
	}
	if c, v := localResources(t, livePID, false); len(c) != 1 || len(v) != 1 {
		t.Errorf("the live errand run: containers %v, volumes %v", c, v)
	}
	live.signal(syscall.SIGINT)
	live.wait(t, 60*time.Second)
}

// A directory that is not there, or is a file, is named, with exit code 2,
// before anything is looked at.
func TestE2EPruneBadInput(t *testing.T) {
	bin := testenv.Binary(t)
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--state-dir", file + "-missing"},
		{"--temp-dir", file},
	} {
		cmd := exec.Command(bin, append([]string{"prune", "--dry-run"}, args...)...)
		cmd.Env = cleanEnv()
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), args[0]+" "+args[1]) {
			t.Errorf("errand prune %v: %v\n%s", args, err, out)
		}
	}
}

// A delegate's volume with no manager to ask is kept, and prune says why
// instead of crashing.
func TestE2EPruneManagerUnreachable(t *testing.T) {
	name := fmt.Sprintf("errand-test-unreachable-%d", time.Now().UnixNano())
	labelledVolume(t, name, map[string]string{docker.LabelManager: "m-elsewhere", docker.LabelRun: "r1", docker.LabelInitialize: "i1"})
	for _, args := range [][]string{{"prune", "--dry-run"}, {"prune"}} {
		cmd := exec.Command(testenv.Binary(t), append(args, "--manager", "http://127.0.0.1:1", "--retry", "0s", "--temp-dir", t.TempDir())...)
		cmd.Env = cleanEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("errand %v: %v\n%s", args, err, out)
		}
		if !strings.Contains(string(out), name) || !strings.Contains(string(out), "cannot ask the manager") {
			t.Errorf("errand %v does not say it keeps %s because the manager does not answer:\n%s", args, name, out)
		}
	}
	c, err := docker.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.VolumeInspect(context.Background(), name); err != nil {
		t.Errorf("volume %s was removed: %v", name, err)
	}
}
