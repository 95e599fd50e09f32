package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/volume"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/testenv"
	"github.com/errandci/errand/pipeline"
	"github.com/errandci/errand/tasks/docker"
)

// sleepyDockerConfig is a pipeline of one docker stage whose step sleeps.
func sleepyDockerConfig(t testing.TB, img string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`stages:
  - name: sleepy
    runtime: {type: docker, image: %q, pull: never}
    steps:
      - name: sleep
        commands: [echo started, sleep 300]
`, img)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// localResources lists the containers and volumes of the errand run
// process pid (errand.local=HOST:PID:START) and, with remove, removes them.
func localResources(t testing.TB, pid int, remove bool) (containers, volumes []string) {
	t.Helper()
	c, err := docker.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	host, _ := os.Hostname()
	prefix := fmt.Sprintf("%s:%d:", host, pid)
	f := filters.NewArgs(filters.Arg("label", docker.LabelLocal))
	cs, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range cs {
		if strings.HasPrefix(x.Labels[docker.LabelLocal], prefix) {
			containers = append(containers, x.ID[:12])
			if remove {
				_ = c.ContainerRemove(ctx, x.ID, container.RemoveOptions{Force: true})
			}
		}
	}
	vs, err := c.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range vs.Volumes {
		if strings.HasPrefix(x.Labels[docker.LabelLocal], prefix) {
			volumes = append(volumes, x.Name)
			if remove {
				_ = c.VolumeRemove(ctx, x.Name, true)
			}
		}
	}
	return containers, volumes
}

// lostDockerDelegate starts a dynamic delegate of the default group
// against m, gives it a docker stage whose step sleeps, kills it with
// SIGKILL once its containers run and waits until m finds it lost. It
// returns the delegate's id; what it left is removed when the test ends.
func lostDockerDelegate(t *testing.T, m *testenv.Manager, name, img string) string {
	t.Helper()
	admin := testenv.Client(t, m.URL, m.AdminToken)
	d := startDelegate(t, m, name, t.TempDir(), "--dynamic", "--sibling-cleanup-interval", "0")
	waitActive(t, admin, name)
	id := d.delegateID(t, admin)
	owned := docker.LabelDelegate + "=" + id
	t.Cleanup(func() { sweepDocker(owned) })
	plan := submitPipeline(t, admin, "../../examples/docker", img, "run-"+name+"-"+id, func(c *pipeline.Config) {
		c.Stages[0].Steps[0].Commands = []string{"echo started", "sleep 300"}
	})
	waitState(t, admin, plan.Stages[0].Steps[0].TaskID, 60*time.Second, errand.StateRunning)
	poll(t, "the containers of "+name, 30*time.Second, func() bool {
		c, n, v := countDocker(t, owned)
		return c == 2 && n == 1 && v == 1
	})
	d.signal(syscall.SIGKILL)
	d.wait(t, 10*time.Second)
	poll(t, "the manager to find "+name+" lost", 30*time.Second, func() bool {
		x, err := admin.GetDelegate(context.Background(), id)
		return err == nil && x.State == errand.DelegateLost
	})
	return id
}

// TestE2EDockerSiblingsTouchOnlyTheirs runs, on one Docker daemon, an
// `errand run` whose docker step sleeps, a lost dynamic delegate of
// another manager and a lost dynamic delegate of the same manager and
// group, all in the default group, and then a dynamic delegate with
// sibling cleanup on: it removes only what its own lost sibling left.
func TestE2EDockerSiblingsTouchOnlyTheirs(t *testing.T) {
	img := dockerImage(t)
	bin := testenv.Binary(t)

	cmd := exec.Command(bin, "run", sleepyDockerConfig(t, img))
	cmd.Env = cleanEnv()
	run := startProc(t, "errand run", cmd)
	pid := cmd.Process.Pid
	t.Cleanup(func() { localResources(t, pid, true) })
	poll(t, "the step container of errand run", 60*time.Second, func() bool {
		c, v := localResources(t, pid, false)
		return len(c) == 1 && len(v) == 1
	})

	other := lostDockerDelegate(t, fastManager(t), "foreign", img)
	m := fastManager(t)
	doomed := lostDockerDelegate(t, m, "doomed", img)

	// The sibling takes none of the stages' tasks: it offers a type no
	// task here has.
	sibling := startDelegate(t, m, "sibling", t.TempDir(), "--dynamic",
		"--sibling-cleanup-interval", "200ms", "--task-type", errand.TypeExecExecute)
	poll(t, "the sibling to remove what doomed left", 30*time.Second, func() bool {
		c, n, v := countDocker(t, docker.LabelDelegate+"="+doomed)
		return c+n+v == 0
	})
	// Two more whole sweeps, each of which saw everything on the daemon,
	// unless foreign resources went already.
	sweeps := func() int { return strings.Count(sibling.out.String(), "sibling cleanup sweep done") }
	touched := func() bool {
		c, n, v := countDocker(t, docker.LabelDelegate+"="+other)
		rc, rv := localResources(t, pid, false)
		return c != 2 || n != 1 || v != 1 || len(rc) != 1 || len(rv) != 1
	}
	seen := sweeps()
	poll(t, "two more sibling sweeps", 30*time.Second, func() bool { return sweeps() >= seen+2 || touched() })

	if c, n, v := countDocker(t, docker.LabelDelegate+"="+other); c != 2 || n != 1 || v != 1 {
		t.Errorf("another manager's lost delegate: %d containers, %d networks, %d volumes left; want 2, 1, 1 (untouched)", c, n, v)
	}
	if c, v := localResources(t, pid, false); len(c) != 1 || len(v) != 1 {
		t.Errorf("errand run: containers %v, volumes %v left; want its step container and volume (untouched)", c, v)
	}
	select {
	case <-run.done:
		t.Fatalf("errand run ended while its step sleeps:\n%s", run.out.String())
	default:
	}

	// Interrupted, errand run cleans up its own.
	run.signal(syscall.SIGINT)
	run.wait(t, 60*time.Second)
	if c, v := localResources(t, pid, false); len(c)+len(v) != 0 {
		t.Errorf("interrupted errand run left containers %v, volumes %v", c, v)
	}
}
