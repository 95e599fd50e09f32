package docker_test

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	dockerclient "github.com/docker/docker/client"

	"github.com/errandci/errand"
	"github.com/errandci/errand/router"
	"github.com/errandci/errand/tasks"
	"github.com/errandci/errand/tasks/docker"
	"github.com/errandci/errand/tasks/runtime/runtimetest"
)

type env struct {
	t   *testing.T
	cfg docker.Config
	h   *docker.Handlers
	r   *router.Router
	dc  *dockerclient.Client
	seq int
}

func newEnv(t *testing.T, mod ...func(*docker.Config)) *env {
	t.Helper()
	cfg := docker.Config{Group: testGroup, StopGrace: time.Second, ReadinessTimeout: 30 * time.Second}
	for _, m := range mod {
		m(&cfg)
	}
	h, err := docker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	r := router.New(router.WithGrace(20 * time.Second))
	h.Register(r)
	return &env{t: t, cfg: cfg, h: h, r: r, dc: dockerClient(t)}
}

// serve runs one task on the delegate named delegateID.
func (e *env) serve(ctx context.Context, delegateID, typ string, data any, deps ...errand.DependencyResult) (router.Outcome, string, string) {
	e.t.Helper()
	b, err := json.Marshal(data)
	if err != nil {
		e.t.Fatal(err)
	}
	e.seq++
	id := strings.ReplaceAll(e.t.Name(), "/", "-") + "-" + strconv.Itoa(e.seq)
	task := &errand.Task{ID: id, Type: typ, Data: b, Dependencies: deps, DelegateID: delegateID,
		Lease: &errand.Lease{Token: "l", DelegateID: delegateID}}
	var logs runtimetest.Log
	out := e.r.Serve(ctx, task, &logs)
	return out, logs.String(), id
}

// initialize runs docker.initialize and returns the dependency that hands
// its result to execute and cleanup, and the result.
func (e *env) initialize(delegateID string, data tasks.InitializeData) (errand.DependencyResult, tasks.InitializeResult) {
	e.t.Helper()
	out, logs, id := e.serve(context.Background(), delegateID, errand.TypeDockerInitialize, data)
	if out.State != errand.StateSucceeded {
		e.t.Fatalf("initialize: %+v %v\n%s", out, out.Error, logs)
	}
	var res tasks.InitializeResult
	if err := json.Unmarshal(out.Result, &res); err != nil {
		e.t.Fatal(err)
	}
	dep := errand.DependencyResult{Task: id, Type: errand.TypeDockerInitialize, State: errand.StateSucceeded, Result: out.Result}
	e.t.Cleanup(func() { e.cleanup(dep) })
	return dep, res
}

func (e *env) cleanup(dep errand.DependencyResult) tasks.CleanupResult {
	e.t.Helper()
	out, logs, _ := e.serve(context.Background(), "d1", errand.TypeDockerCleanup, tasks.CleanupData{Stage: tasks.Stage{RunID: "r1", Stage: "test"}}, dep)
	if out.State != errand.StateSucceeded {
		e.t.Fatalf("cleanup: %+v %v\n%s", out, out.Error, logs)
	}
	var res tasks.CleanupResult
	_ = json.Unmarshal(out.Result, &res)
	return res
}

// count returns how many containers, networks and volumes carry label.
func (e *env) count(label string) (containers, networks, volumes int) {
	e.t.Helper()
	cs, ns, vs := labelled(e.t, e.dc, label)
	return len(cs), len(ns), len(vs)
}

// labelled lists the containers (short ids), networks and volumes that
// carry label.
func labelled(t testing.TB, dc *dockerclient.Client, label string) (containers, networks, volumes []string) {
	t.Helper()
	ctx := context.Background()
	f := filters.NewArgs(filters.Arg("label", label))
	cs, err := dc.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		containers = append(containers, c.ID[:12])
	}
	ns, err := dc.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		networks = append(networks, n.Name)
	}
	vs, err := dc.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs.Volumes {
		volumes = append(volumes, v.Name)
	}
	return containers, networks, volumes
}

func stageData() tasks.InitializeData {
	return tasks.InitializeData{Stage: tasks.Stage{RunID: "r1", Stage: "test"}, Image: testImage, Pull: docker.PullNever}
}

func step(commands ...string) tasks.ExecuteData {
	return tasks.ExecuteData{Stage: tasks.Stage{RunID: "r1", Stage: "test"}, Step: "s", Commands: commands}
}

// TestStage runs a stage with a service reachable by name, steps sharing
// the workspace, and a cleanup by a handler that never saw the initialize
// (as after a delegate restart).
func TestStage(t *testing.T) {
	e := newEnv(t)
	data := stageData()
	data.Services = []tasks.Service{{
		Name:      "db",
		Image:     testImage,
		Commands:  []string{"mkdir -p /www", "echo hello-from-db > /www/index.html", "exec busybox httpd -f -p 8080 -h /www"},
		Readiness: []string{"wget -q -O /dev/null http://127.0.0.1:8080/"},
	}}
	dep, res := e.initialize("d1", data)
	if res.Network == "" || res.Volume == "" || len(res.Containers) != 1 || res.Image != testImage {
		t.Fatalf("initialize result %+v", res)
	}
	initLabel := docker.LabelInitialize + "=" + dep.Task
	if c, n, v := e.count(initLabel); c != 1 || n != 1 || v != 1 {
		t.Fatalf("after initialize: %d containers, %d networks, %d volumes labelled; want 1 each", c, n, v)
	}

	cases := []struct {
		name     string
		data     tasks.ExecuteData
		wantExit int
		wantLog  string // exact log, or a substring when wantSub
		wantSub  bool
	}{
		{name: "service reachable by name", data: step("wget -q -O- http://db:8080/index.html"),
			wantLog: "hello-from-db\n"},
		// stdout and stderr are two pipes: lines keep their order within
		// each, and across them once a line had time to arrive.
		{name: "lines in order, stdout and stderr kept", data: step("echo one", "sleep 0.1", "echo two >&2", "sleep 0.1", "echo three", "printf four"),
			wantLog: "one\ntwo\nthree\nfour\n"},
		{name: "first failure ends the step", data: step("echo a", "exit 3", "echo never"),
			wantExit: 3, wantLog: "a\n"},
		{name: "command not found", data: step("no-such-command-xyz"),
			wantExit: 127, wantLog: "no-such-command-xyz", wantSub: true},
		{name: "workspace shared between steps", data: step("echo kept > file"), wantLog: ""},
		{name: "workspace read back", data: step(`cat "$ERRAND_WORKSPACE/file"`, "pwd"),
			wantLog: "kept\n" + docker.Workspace + "\n"},
		{name: "environment, working dir and masked secrets", data: func() tasks.ExecuteData {
			d := step(`echo "$GREETING $ERRAND_STEP $CI $(pwd)"`, `echo "key=$KEY"`, `printf '%s' "$KEY" | cut -c1-3`)
			d.Environment = map[string]string{"GREETING": "hi"}
			d.Secrets = map[string]string{"KEY": "sup3rs3cret"}
			d.WorkingDir = "sub/dir"
			return d
		}(), wantLog: "hi s true " + docker.Workspace + "/sub/dir\nkey=******\nsup\n"},
		{name: "custom shell", data: func() tasks.ExecuteData {
			d := step("false", "echo still")
			d.Shell = "sh"
			return d
		}(), wantLog: "still\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, logs, _ := e.serve(context.Background(), "d1", errand.TypeDockerExecute, tc.data, dep)
			want := errand.StateSucceeded
			if tc.wantExit != 0 {
				want = errand.StateFailed
			}
			runtimetest.CheckStep(t, out, logs, want, tc.wantExit, tc.wantLog, tc.wantSub)
		})
	}
	// Exited step containers are removed right after their outcome.
	deadline := time.Now().Add(10 * time.Second)
	for c, _, _ := e.count(initLabel); c != 1; c, _, _ = e.count(initLabel) {
		if time.Now().After(deadline) {
			t.Fatalf("%d containers of the stage after its steps; want only the service", c)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A new handler, as after a restart: cleanup needs only the labels.
	fresh := newEnv(t)
	removed := fresh.cleanup(dep)
	if len(removed.Removed) != 3 {
		t.Fatalf("cleanup removed %v; want the service, the network and the volume", removed.Removed)
	}
	if c, n, v := e.count(initLabel); c+n+v != 0 {
		t.Fatalf("after cleanup: %d containers, %d networks, %d volumes left", c, n, v)
	}
}

// stepContainer waits for the running container of the stage's step and
// returns its id.
func (e *env) stepContainer(initID string) string {
	e.t.Helper()
	f := filters.NewArgs(filters.Arg("label", docker.LabelInitialize+"="+initID), filters.Arg("label", docker.LabelStep),
		filters.Arg("status", "running"))
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		cs, err := e.dc.ContainerList(context.Background(), container.ListOptions{Filters: f})
		if err != nil {
			e.t.Error(err)
			return ""
		}
		if len(cs) == 1 {
			return cs[0].ID
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Error("the step container did not start")
	return ""
}

func TestStopStep(t *testing.T) {
	cases := []struct {
		name      string
		cause     error
		wantState errand.State
	}{
		{"cancel", router.ErrCancelled, errand.StateCancelled},
		{"timeout", router.ErrTimedOut, errand.StateTimedOut},
	}
	e := newEnv(t)
	dep, _ := e.initialize("d1", stageData())
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			go func() {
				if id := e.stepContainer(dep.Task); id != "" {
					cancel(tc.cause)
				}
			}()
			out, logs, _ := e.serve(ctx, "d1", errand.TypeDockerExecute, step("echo started", "sleep 300"), dep)
			if out.State != tc.wantState {
				t.Fatalf("state %s (%v), want %s", out.State, out.Error, tc.wantState)
			}
			if !strings.Contains(logs, "started\n") {
				t.Fatalf("log %q", logs)
			}
			f := docker.LabelInitialize + "=" + dep.Task
			if c, _, _ := e.count(f); c != 0 {
				t.Fatalf("%d containers left after the step was stopped", c)
			}
		})
	}
}

func TestContainerKilledFromOutside(t *testing.T) {
	e := newEnv(t)
	dep, _ := e.initialize("d1", stageData())
	go func() {
		if id := e.stepContainer(dep.Task); id != "" {
			_ = e.dc.ContainerKill(context.Background(), id, "KILL")
		}
	}()
	out, _, _ := e.serve(context.Background(), "d1", errand.TypeDockerExecute, step("sleep 300"), dep)
	var res tasks.ExecuteResult
	_ = json.Unmarshal(out.Result, &res)
	if out.State != errand.StateFailed || out.Error.Code != errand.CodeExitCode || res.ExitCode != 137 {
		t.Fatalf("killed step: %+v %v, exit code %d; want failed with exit code 137", out, out.Error, res.ExitCode)
	}
	// A stage without services has a volume and no network of its own.
	if got := e.cleanup(dep); len(got.Removed) != 1 {
		t.Fatalf("cleanup after a killed step removed %v", got.Removed)
	}
}

func TestInitializeRefused(t *testing.T) {
	missing := "errand-test/no-such-image:" + testGroup
	cases := []struct {
		name     string
		data     func(d *tasks.InitializeData)
		cfg      func(c *docker.Config)
		wantCode string
		wantIn   string
	}{
		{name: "privileged", data: func(d *tasks.InitializeData) { d.Privileged = true },
			wantCode: docker.CodePrivilegedNotAllowed, wantIn: "--allow-privileged"},
		{name: "image missing, pull never", data: func(d *tasks.InitializeData) { d.Image = missing },
			wantCode: docker.CodeImageNotFound, wantIn: missing},
		{name: "service image missing, after the network was made", data: func(d *tasks.InitializeData) {
			d.Services = []tasks.Service{{Name: "db", Image: missing}}
		}, wantCode: docker.CodeImageNotFound, wantIn: missing},
		{name: "pull policy", data: func(d *tasks.InitializeData) { d.Pull = "sometimes" },
			wantCode: errand.CodeInvalid, wantIn: "sometimes"},
		{name: "daemon unreachable", cfg: func(c *docker.Config) {
			cl, err := dockerclient.NewClientWithOpts(dockerclient.WithHost("unix:///nonexistent/docker.sock"), dockerclient.WithAPIVersionNegotiation())
			if err != nil {
				panic(err)
			}
			c.Client = cl
		}, wantCode: docker.CodeDockerUnavailable, wantIn: "dockerd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var mods []func(*docker.Config)
			if tc.cfg != nil {
				mods = append(mods, tc.cfg)
			}
			e := newEnv(t, mods...)
			data := stageData()
			if tc.data != nil {
				tc.data(&data)
			}
			out, _, id := e.serve(context.Background(), "d1", errand.TypeDockerInitialize, data)
			if out.State != errand.StateFailed || out.Error.Code != tc.wantCode || !strings.Contains(out.Error.Reason, tc.wantIn) {
				t.Fatalf("outcome %+v %v; want %s naming %q", out, out.Error, tc.wantCode, tc.wantIn)
			}
			if c, n, v := e.count(docker.LabelInitialize + "=" + id); c+n+v != 0 {
				t.Fatalf("a failed initialize left %d containers, %d networks, %d volumes", c, n, v)
			}
		})
	}
}

func TestPrivilegedAllowed(t *testing.T) {
	e := newEnv(t, func(c *docker.Config) { c.AllowPrivileged = true })
	data := stageData()
	data.Privileged = true
	dep, _ := e.initialize("d1", data)
	// A delegate without --allow-privileged refuses the stage's steps too.
	d := step("true")
	d.Privileged = true
	refusing := newEnv(t)
	out, _, _ := refusing.serve(context.Background(), "d1", errand.TypeDockerExecute, d, dep)
	if out.State != errand.StateFailed || out.Error.Code != docker.CodePrivilegedNotAllowed {
		t.Fatalf("privileged step on a refusing delegate: %+v %v", out, out.Error)
	}
}

// Sibling cleanup removes only what a lost dynamic delegate of the same
// group and manager left: not an unknown owner's, not a static or live
// delegate's, not another manager's, not errand run's.
func TestSiblings(t *testing.T) {
	manager := func(id string) func(*docker.Config) {
		return func(c *docker.Config) {
			c.ManagerID = func(context.Context) (string, error) { return id, nil }
		}
	}
	e := newEnv(t, manager("m-"+testGroup))
	other := newEnv(t, manager("m-other-"+testGroup))
	local := newEnv(t, func(c *docker.Config) { c.Local = true })
	delegates := []*errand.Delegate{
		{ID: "d-me", Dynamic: true, State: errand.DelegateActive, Group: testGroup},
		{ID: "d-lost-dynamic", Dynamic: true, State: errand.DelegateLost, Group: testGroup},
		{ID: "d-lost-static", State: errand.DelegateLost, Group: testGroup},
		{ID: "d-active-dynamic", Dynamic: true, State: errand.DelegateActive, Group: testGroup},
		{ID: "d-lost-elsewhere", Dynamic: true, State: errand.DelegateLost, Group: testGroup + "-x"},
	}
	init := map[string]errand.DependencyResult{}
	for _, id := range []string{"d-me", "d-lost-dynamic", "d-lost-static", "d-active-dynamic", "d-unknown", "d-lost-elsewhere"} {
		init[id], _ = e.initialize(id, stageData())
	}
	// Another manager's delegate and errand run, with the id of the lost
	// dynamic delegate.
	init["other manager"], _ = other.initialize("d-lost-dynamic", stageData())
	init["errand run"], _ = local.initialize("d-lost-dynamic", stageData())
	s := &docker.Siblings{
		Handlers:  e.h,
		Self:      func() string { return "d-me" },
		Delegates: func(context.Context) ([]*errand.Delegate, error) { return delegates, nil },
	}
	removed, err := s.Sweep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 {
		t.Fatalf("sweep removed %v; want the volume of d-lost-dynamic", removed)
	}
	for owner, dep := range init {
		_, n, v := e.count(docker.LabelInitialize + "=" + dep.Task)
		gone := owner == "d-lost-dynamic"
		if n != 0 || gone && v != 0 || !gone && v != 1 {
			t.Errorf("%s: %d networks, %d volumes after the sweep", owner, n, v)
		}
	}
	// Another group's sweep leaves this group's resources alone, and so
	// does one that knows no manager.
	for name, h := range map[string]*docker.Handlers{
		"other group": newEnv(t, manager("m-"+testGroup), func(c *docker.Config) { c.Group = testGroup + "-other" }).h,
		"no manager":  newEnv(t).h,
		"errand run":  local.h,
	} {
		s.Handlers = h
		if removed, err := s.Sweep(context.Background()); err != nil || len(removed) != 0 {
			t.Fatalf("sweep of %s removed %v (%v)", name, removed, err)
		}
	}
}

// A pull that fails says so, with the daemon's reason, whether or not the
// image is present; an absent image that may not be pulled is named. The
// pull's progress is in the initialize task's log.
func TestPullErrors(t *testing.T) {
	missing := "errand-test/no-such-image:" + testGroup
	cases := []struct {
		name, image, pull string
		wantCode          string
		wantIn            []string
		notIn             string
	}{
		{"always, present", testImage, docker.PullAlways, docker.CodePullFailed,
			[]string{"pull of image " + testImage + " failed", "always", "from daemon"}, "not present"},
		{"never, absent", missing, docker.PullNever, docker.CodeImageNotFound,
			[]string{missing, "not present", "never"}, "pull of"},
		{"if-not-present, absent", missing, docker.PullIfNotPresent, docker.CodeImageNotFound,
			[]string{missing, "not present", "pull failed"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			data := stageData()
			data.Image, data.Pull = tc.image, tc.pull
			out, logs, id := e.serve(context.Background(), "d1", errand.TypeDockerInitialize, data)
			if out.State != errand.StateFailed || out.Error == nil || out.Error.Code != tc.wantCode {
				t.Fatalf("outcome %+v %v; want %s", out, out.Error, tc.wantCode)
			}
			for _, w := range tc.wantIn {
				if !strings.Contains(out.Error.Reason, w) {
					t.Errorf("reason %q does not say %q", out.Error.Reason, w)
				}
			}
			t.Logf("reason: %s", out.Error.Reason)
			if tc.notIn != "" && strings.Contains(out.Error.Reason, tc.notIn) {
				t.Errorf("reason %q says %q", out.Error.Reason, tc.notIn)
			}
			if tc.pull != docker.PullNever && !strings.Contains(logs, "pulling image "+tc.image) {
				t.Errorf("initialize log %q does not show the pull", logs)
			}
			if c, n, v := e.count(docker.LabelInitialize + "=" + id); c+n+v != 0 {
				t.Fatalf("a failed initialize left %d containers, %d networks, %d volumes", c, n, v)
			}
		})
	}
}

// The initialize task's log says what the stage's setup did: its volume,
// each service starting and becoming ready.
func TestInitializeLog(t *testing.T) {
	e := newEnv(t)
	data := stageData()
	data.Services = []tasks.Service{{Name: "db", Image: testImage, Commands: []string{"exec sleep 300"},
		Readiness: []string{"true"}}}
	out, logs, id := e.serve(context.Background(), "d1", errand.TypeDockerInitialize, data)
	if out.State == errand.StateSucceeded {
		e.cleanup(errand.DependencyResult{Task: id, Type: errand.TypeDockerInitialize, State: out.State, Result: out.Result})
	}
	if out.State != errand.StateSucceeded {
		t.Fatalf("initialize: %+v %v\n%s", out, out.Error, logs)
	}
	for _, want := range []string{"volume errand-", "starting service db (" + testImage + ")", "service db started", "waiting for service db to be ready", "service db ready"} {
		if !strings.Contains(logs, want) {
			t.Errorf("initialize log does not say %q:\n%s", want, logs)
		}
	}
}

// With no daemon answering, initialize fails in seconds with
// docker_unavailable and a hint, both when nothing listens on the socket
// and when something accepts connections and never answers.
func TestDockerUnavailableFailsFast(t *testing.T) {
	dir := t.TempDir()
	silent := filepath.Join(dir, "silent.sock")
	l, err := net.Listen("unix", silent)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	held := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(held)
				return
			}
			held <- c // never answered
		}
	}()
	t.Cleanup(func() {
		l.Close()
		for c := range held {
			c.Close()
		}
	})
	for name, host := range map[string]string{
		"no socket":     "unix:///nonexistent/docker.sock",
		"silent daemon": "unix://" + silent,
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("DOCKER_HOST", host)
			h, err := docker.New(docker.Config{Group: testGroup})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			r := router.New()
			h.Register(r)
			// Generous, and well under the 30s of an API call's timeout.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			b, _ := json.Marshal(stageData())
			task := &errand.Task{ID: "unavailable-" + strings.ReplaceAll(name, " ", "-"), Type: errand.TypeDockerInitialize,
				Data: b, Lease: &errand.Lease{Token: "l", DelegateID: "d1"}}
			var logs runtimetest.Log
			out := r.Serve(ctx, task, &logs)
			if ctx.Err() != nil {
				t.Fatalf("initialize returned only when the deadline passed: %+v %v", out, out.Error)
			}
			if out.State != errand.StateFailed || out.Error == nil || out.Error.Code != errand.CodeDockerUnavailable ||
				!strings.Contains(out.Error.Reason, "dockerd") || !strings.Contains(out.Error.Reason, "DOCKER_HOST") {
				t.Fatalf("outcome %+v %v; want docker_unavailable with a hint", out, out.Error)
			}
		})
	}
}

// A stage without services needs no network of its own: its steps run on
// the default bridge, which starts containers faster. One with services
// gets a network that its steps join.
func TestStageNetworkOnlyForServices(t *testing.T) {
	e := newEnv(t)
	dep, res := e.initialize("d1", stageData())
	if res.Network != "" {
		t.Fatalf("a stage without services got network %q", res.Network)
	}
	if _, n, v := e.count(docker.LabelInitialize + "=" + dep.Task); n != 0 || v != 1 {
		t.Fatalf("stage without services: %d networks, %d volumes; want 0 and 1", n, v)
	}
	out, logs, _ := e.serve(context.Background(), "d1", errand.TypeDockerExecute, step("echo ran > f", "cat f"), dep)
	if out.State != errand.StateSucceeded || !strings.Contains(logs, "ran") {
		t.Fatalf("step on the default bridge: %+v\n%s", out, logs)
	}
	e.cleanup(dep)
}

// Sibling cleanup started in the background sweeps until it is stopped,
// and Stop waits for it.
func TestSiblingsStartStop(t *testing.T) {
	e := newEnv(t)
	swept := make(chan struct{}, 16)
	s := &docker.Siblings{
		Handlers: e.h,
		Self: func() string {
			select {
			case swept <- struct{}{}:
			default:
			}
			return "" // not registered: nothing is swept
		},
		Delegates: func(context.Context) ([]*errand.Delegate, error) { return nil, nil },
		Interval:  10 * time.Millisecond,
	}
	if s.Done() != nil {
		t.Fatal("Done before Start is not nil")
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err == nil {
		t.Fatal("a second Start was accepted")
	}
	for range 2 {
		select {
		case <-swept:
		case <-time.After(10 * time.Second):
			t.Fatal("no sweep after Start")
		}
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
}
