package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
	"github.com/errandci/errand/pipeline"
	"github.com/errandci/errand/tasks/docker"
)

// dockerImage is the local image docker stages run in tests; it needs a
// daemon that answers. The test fails, with how to get both, otherwise.
func dockerImage(t testing.TB) string {
	t.Helper()
	img := os.Getenv("ERRAND_TEST_DOCKER_IMAGE")
	if img == "" {
		img = "errand-test/busybox:latest"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := docker.Available(ctx); err != nil {
		t.Fatalf("this test needs a Docker daemon: run scripts/test (it installs docker.io and starts dockerd), or `dockerd >/tmp/dockerd.log 2>&1 &`: %v", err)
	}
	c, err := docker.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ImageInspect(ctx, img); err != nil {
		t.Fatalf("this test needs the image %s: run scripts/test, or `. scripts/setup.d/docker.sh` to build it: %v", img, err)
	}
	return img
}

// dockerGroup returns a delegate group of the test's own. When the test
// ends, whatever Docker resources still carry it are a leak: the test
// fails and they are removed.
func dockerGroup(t testing.TB) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	group := "e2e-" + hex.EncodeToString(b)
	t.Cleanup(func() {
		if left := sweepDocker(docker.LabelGroup + "=" + group); len(left) > 0 {
			t.Errorf("Docker resources left behind: %s", strings.Join(left, ", "))
		}
	})
	return group
}

// sweepDocker removes the resources carrying label and returns them.
func sweepDocker(label string) []string {
	c, err := docker.NewClient()
	if err != nil {
		return []string{err.Error()}
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := filters.NewArgs(filters.Arg("label", label))
	var left []string
	cs, _ := c.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	for _, x := range cs {
		left = append(left, "container "+x.ID[:12])
		_ = c.ContainerRemove(ctx, x.ID, container.RemoveOptions{Force: true})
	}
	ns, _ := c.NetworkList(ctx, network.ListOptions{Filters: f})
	for _, x := range ns {
		left = append(left, "network "+x.Name)
		_ = c.NetworkRemove(ctx, x.ID)
	}
	vs, _ := c.VolumeList(ctx, volume.ListOptions{Filters: f})
	for _, x := range vs.Volumes {
		left = append(left, "volume "+x.Name)
		_ = c.VolumeRemove(ctx, x.Name, true)
	}
	return left
}

// countDocker counts the containers, networks and volumes carrying label.
func countDocker(t testing.TB, label string) (containers, networks, volumes int) {
	t.Helper()
	c, err := docker.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	f := filters.NewArgs(filters.Arg("label", label))
	cs, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := c.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	vs, err := c.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	return len(cs), len(ns), len(vs.Volumes)
}

// submitPipeline loads a pipeline, runs its docker stages in img, expands
// it and creates its tasks; it returns the plan.
func submitPipeline(t testing.TB, admin client.Client, path, img, runID string, edit func(*pipeline.Config)) *pipeline.Plan {
	t.Helper()
	cfg, err := pipeline.Load(path, pipeline.LoadOptions{})
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	for _, s := range cfg.Stages {
		if s.Runtime.Type == pipeline.RuntimeDocker {
			s.Runtime.Image = img
			for i := range s.Runtime.Services {
				s.Runtime.Services[i].Image = img
			}
		}
	}
	if edit != nil {
		edit(cfg)
	}
	return createPlan(t, admin, cfg, runID)
}

// createPlan expands cfg and creates its tasks.
func createPlan(t testing.TB, admin client.Client, cfg *pipeline.Config, runID string) *pipeline.Plan {
	t.Helper()
	plan, err := pipeline.Expand(cfg, pipeline.ExpandOptions{RunID: runID})
	if err != nil {
		t.Fatalf("expand: %v", err)
	}
	specs := make([]*client.TaskSpec, 0, len(plan.Tasks))
	for _, x := range plan.Tasks {
		specs = append(specs, &client.TaskSpec{ID: x.ID, Type: x.Type, Data: x.Data, Selector: x.Selector,
			DependsOn: x.DependsOn, Affinity: x.Affinity, Priority: x.Priority, Timeout: x.Timeout, MaxAttempts: x.MaxAttempts})
	}
	if _, err := admin.CreateTasks(context.Background(), specs); err != nil {
		t.Fatalf("create the tasks of run %s: %v", runID, err)
	}
	return plan
}

// TestE2EDockerExample runs examples/docker through a manager and a
// delegate: a service reachable by name, a workspace shared by the steps,
// and a cleanup that leaves nothing labelled with the run.
func TestE2EDockerExample(t *testing.T) {
	img := dockerImage(t)
	group := dockerGroup(t)
	m := fastManager(t)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	startDelegate(t, m, "docker", t.TempDir(), "--group", group, "--docker-stop-grace", "1s")
	waitActive(t, admin, "docker")

	plan := submitPipeline(t, admin, "../../examples/docker", img, "run-example-"+group, nil)
	st := plan.Stages[0]
	cleanup := waitState(t, admin, st.CleanupID, 90*time.Second)
	if init, _ := admin.GetTask(context.Background(), st.InitializeID); init.State != errand.StateSucceeded {
		t.Fatalf("initialize ended %s: %v\n%s", init.State, init.Error, taskLog(t, admin, st.InitializeID))
	}
	for _, s := range st.Steps {
		task, err := admin.GetTask(context.Background(), s.TaskID)
		if err != nil {
			t.Fatal(err)
		}
		if task.State != errand.StateSucceeded {
			t.Fatalf("step %s ended %s: %v\n%s", s.Name, task.State, task.Error, taskLog(t, admin, s.TaskID))
		}
	}
	if got := taskLog(t, admin, st.Steps[0].TaskID); !strings.Contains(got, "hello from web") {
		t.Fatalf("fetch log %q: the service was not reached by name", got)
	}
	if got := taskLog(t, admin, st.Steps[1].TaskID); !strings.Contains(got, "workspace kept between steps") {
		t.Fatalf("check log %q", got)
	}
	if cleanup.State != errand.StateSucceeded {
		t.Fatalf("cleanup ended %s: %v", cleanup.State, cleanup.Error)
	}
	if c, n, v := countDocker(t, docker.LabelRun+"="+plan.RunID); c+n+v != 0 {
		t.Fatalf("after cleanup: %d containers, %d networks, %d volumes of the run left", c, n, v)
	}
}

// TestE2EDockerSiblingCleansLostDelegate kills a dynamic delegate after
// its stage was initialized, while a step runs, and sees a dynamic sibling
// of the same group remove its containers, network and volume once the
// manager finds it lost.
func TestE2EDockerSiblingCleansLostDelegate(t *testing.T) {
	img := dockerImage(t)
	group := dockerGroup(t)
	m := fastManager(t)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	a := startDelegate(t, m, "doomed", t.TempDir(), "--group", group, "--dynamic", "--sibling-cleanup-interval", "0")
	waitActive(t, admin, "doomed")
	aID := a.delegateID(t, admin)

	plan := submitPipeline(t, admin, "../../examples/docker", img, "run-sibling-"+group, func(c *pipeline.Config) {
		c.Stages[0].Steps[0].Commands = []string{"echo started", "sleep 300"}
	})
	st := plan.Stages[0]
	waitState(t, admin, st.Steps[0].TaskID, 60*time.Second, errand.StateRunning)
	owned := docker.LabelDelegate + "=" + aID
	poll(t, "the step container of "+aID, 30*time.Second, func() bool {
		// The service container, the step container, the stage's network
		// and its volume.
		c, n, v := countDocker(t, owned)
		return c == 2 && n == 1 && v == 1
	})
	a.signal(9)
	a.wait(t, 10*time.Second)
	poll(t, "the manager to find "+aID+" lost", 30*time.Second, func() bool {
		d, err := admin.GetDelegate(context.Background(), aID)
		return err == nil && d.State == errand.DelegateLost
	})
	if c, n, v := countDocker(t, owned); c != 2 || n != 1 || v != 1 {
		t.Fatalf("before the sibling started: %d containers, %d networks, %d volumes of %s; want 2, 1, 1", c, n, v, aID)
	}

	// The sibling must not take the stage's tasks over: they follow the
	// dead delegate. It only offers a type no task here has.
	startDelegate(t, m, "sibling", t.TempDir(), "--group", group, "--dynamic",
		"--sibling-cleanup-interval", "200ms", "--task-type", errand.TypeExecExecute)
	waitActive(t, admin, "sibling")
	poll(t, "the sibling to remove what "+aID+" left", 30*time.Second, func() bool {
		c, n, v := countDocker(t, owned)
		return c+n+v == 0
	})
}
