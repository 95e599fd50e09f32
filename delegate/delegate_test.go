package delegate

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/manager"
	"github.com/errandci/errand/router"
)

func quiet() *logrus.Logger {
	l := logrus.New()
	if !testing.Verbose() {
		l.SetOutput(io.Discard)
	}
	return l
}

func TestValidate(t *testing.T) {
	ok := func() Config {
		return Config{Manager: "http://127.0.0.1:7700", Token: "R", StateDir: "/tmp/x", Log: quiet()}
	}
	cases := []struct {
		name   string
		change func(*Config)
		want   string // substring of the error; empty for valid
	}{
		{"valid", func(*Config) {}, ""},
		{"no manager", func(c *Config) { c.Manager = "" }, "manager: the manager's URL is required"},
		{"bad manager", func(c *Config) { c.Manager = "ftp://x" }, "not an http"},
		{"no token", func(c *Config) { c.Token = "" }, "token: the registration token is required"},
		{"capacity", func(c *Config) { c.Capacity = -1 }, "capacity"},
		{"load", func(c *Config) { c.MaxLoad = -0.5 }, "max load"},
		{"memory", func(c *Config) { c.MinFreeMemory = -1 }, "min free memory"},
		{"label", func(c *Config) { c.Labels = map[string]string{"": "v"} }, "label needs a key"},
		{"in-process client needs no URL", func(c *Config) { c.Manager, c.Token = "", ""; c.Client = &client.HTTP{} }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			tc.change(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.Capacity != DefaultCapacity || len(c.Archs) != 1 || c.Archs[0] != runtime.GOARCH || c.Name == "" {
					t.Fatalf("defaults not set: %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
	// Every problem is reported at once.
	c := Config{Capacity: -1, Log: quiet(), StateDir: "x"}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "manager") || !strings.Contains(err.Error(), "token") || !strings.Contains(err.Error(), "capacity") {
		t.Fatalf("Validate = %v; want manager, token and capacity", err)
	}
}

func TestIdentityFile(t *testing.T) {
	dir := t.TempDir()
	f := &identityFile{path: filepath.Join(dir, "identity.json"), manager: "http://a"}
	if id, err := f.Load(); id != nil || err != nil {
		t.Fatalf("empty dir: %v %v", id, err)
	}
	if err := f.Save(&Identity{ID: "d1", Token: "secret"}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(f.path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity file mode %v, %v; want 0600", fi.Mode(), err)
	}
	if id, err := f.Load(); err != nil || id == nil || id.ID != "d1" || id.Token != "secret" {
		t.Fatalf("Load = %+v %v", id, err)
	}
	other := &identityFile{path: f.path, manager: "http://b"}
	if id, err := other.Load(); id != nil || err != nil {
		t.Fatalf("identity of another manager offered: %+v %v", id, err)
	}
	if err := f.Clear(); err != nil {
		t.Fatal(err)
	}
	if id, _ := f.Load(); id != nil {
		t.Fatal("identity survives Clear")
	}
}

func TestIdentityPathStaysInStateDir(t *testing.T) {
	for _, name := range []string{"build-1", "../../etc/passwd", "a/b", "..", ""} {
		p := identityPath("/state", name)
		if filepath.Dir(p) != "/state" || !strings.HasPrefix(filepath.Base(p), "identity-") {
			t.Errorf("name %q: identity at %s", name, p)
		}
	}
}

func TestResources(t *testing.T) {
	proc := t.TempDir()
	write := func(load string, availKB string) {
		_ = os.WriteFile(filepath.Join(proc, "loadavg"), []byte(load+" 0.5 0.5 1/100 4242\n"), 0o600)
		_ = os.WriteFile(filepath.Join(proc, "meminfo"), []byte("MemTotal: 1000000 kB\nMemFree: 10 kB\nMemAvailable: "+availKB+" kB\n"), 0o600)
	}
	cpus := float64(runtime.NumCPU())
	cases := []struct {
		name     string
		load     float64 // per CPU
		availKB  string
		maxLoad  float64
		minFree  int64
		wantOver bool
	}{
		{"no limits", 100, "1", 0, 0, false},
		{"under both", 0.5, "500000", 1, 100 << 20, false},
		{"load over", 1.5, "500000", 1, 100 << 20, true},
		{"memory under", 0.5, "1000", 1, 100 << 20, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			write(strconv.FormatFloat(tc.load*cpus, 'f', 2, 64), tc.availKB)
			r := &resources{procDir: proc, maxLoad: tc.maxLoad, minFree: tc.minFree, onErr: func(err error) { t.Error(err) }}
			if got := r.Overloaded(); got != tc.wantOver {
				t.Fatalf("Overloaded = %v (%s), want %v", got, r.reason, tc.wantOver)
			}
		})
	}
}

// inProcessManager starts a real manager with no network port.
func inProcessManager(t *testing.T) (*manager.Server, func(token string) *client.HTTP) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := manager.Open(ctx, manager.Config{DataDir: t.TempDir(), HeartbeatInterval: 100 * time.Millisecond, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = srv.Stop(context.Background())
	})
	return srv, func(token string) *client.HTTP {
		return client.New("http://manager.invalid", token, client.WithHandler(srv.Handler()))
	}
}

func TestRunDrainHooksDeregister(t *testing.T) {
	srv, connect := inProcessManager(t)
	admin := connect(srv.AdminToken())
	release := make(chan struct{})
	r := router.New()
	r.HandleFunc("wait", func(w http.ResponseWriter, _ *http.Request) {
		<-release
		httphelper.WriteJSON(w, map[string]string{"done": "yes"}, http.StatusOK)
	})
	state := t.TempDir()
	reg := connect(srv.RegistrationToken())
	d, err := New(Config{
		Client:   reg,
		StateDir: state, Capacity: 1, DrainTimeout: 10 * time.Second, Log: quiet(),
	}, r)
	if err != nil {
		t.Fatal(err)
	}
	var hookRan bool
	d.OnShutdown(func(context.Context) error { hookRan = true; return nil })
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	<-d.Ready()
	id := d.ID()
	if fi, err := os.Stat(identityPath(state, d.cfg.Name)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity file: %v %v", fi, err)
	}

	tasks, err := admin.CreateTasks(context.Background(), []*client.TaskSpec{{Type: "wait"}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "task running", func() bool {
		tk, err := admin.GetTask(context.Background(), tasks[0].ID)
		return err == nil && tk.State == errand.StateRunning
	})
	stop() // as SIGTERM does: drain, the running task finishes
	waitFor(t, "delegate draining", func() bool {
		dl, err := admin.GetDelegate(context.Background(), id)
		return err == nil && dl.State == errand.DelegateDraining
	})
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	tk, err := admin.GetTask(context.Background(), tasks[0].ID)
	if err != nil || tk.State != errand.StateSucceeded || string(tk.Result) != `{"done":"yes"}` {
		t.Fatalf("task after drain: %+v %v", tk, err)
	}
	if !hookRan {
		t.Fatal("shutdown hook not run")
	}
	if _, err := admin.GetDelegate(context.Background(), id); !errors.Is(err, errand.ErrNotFound) {
		t.Fatalf("delegate after stop: %v; want not found", err)
	}
	if _, err := os.Stat(identityPath(state, d.cfg.Name)); !os.IsNotExist(err) {
		t.Fatalf("identity kept after deregistration: %v", err)
	}
}

func TestDrainTimeoutCancels(t *testing.T) {
	srv, connect := inProcessManager(t)
	admin := connect(srv.AdminToken())
	r := router.New()
	r.HandleFunc("stuck", func(w http.ResponseWriter, req *http.Request) {
		<-req.Context().Done()
		httphelper.WriteError(w, errand.Errorf(errand.CodeTaskFailed, "interrupted"))
	})
	reg := connect(srv.RegistrationToken())
	d, err := New(Config{
		Client:   reg,
		StateDir: t.TempDir(), DrainTimeout: 200 * time.Millisecond, Log: quiet(),
	}, r)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	tasks, err := admin.CreateTasks(context.Background(), []*client.TaskSpec{{Type: "stuck"}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "task running", func() bool {
		tk, err := admin.GetTask(context.Background(), tasks[0].ID)
		return err == nil && tk.State == errand.StateRunning
	})
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	tk, _ := admin.GetTask(context.Background(), tasks[0].ID)
	if tk.State != errand.StateCancelled {
		t.Fatalf("task after drain timeout: %s, want cancelled", tk.State)
	}
}

func TestWrongToken(t *testing.T) {
	_, connect := inProcessManager(t)
	r := router.New()
	r.HandleFunc("x", func(http.ResponseWriter, *http.Request) {})
	d, err := New(Config{Client: connect("wrong"), StateDir: t.TempDir(), Log: quiet()}, r)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = d.Run(ctx)
	if !errors.Is(err, errand.ErrUnauthorized) || !strings.Contains(err.Error(), "registration token") {
		t.Fatalf("Run = %v; want a clear unauthorized error", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Run waited for its context instead of failing")
	}
}

func TestUnservedTaskTypeRefused(t *testing.T) {
	r := router.New()
	r.HandleFunc("a", func(http.ResponseWriter, *http.Request) {})
	_, err := New(Config{Manager: "http://x", Token: "t", StateDir: t.TempDir(), TaskTypes: []string{"a", "b"}, Log: quiet()}, r)
	if err == nil || !strings.Contains(err.Error(), `"b" has no handler`) {
		t.Fatalf("New = %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Start hooks run in order before the delegate registers; one that fails
// is logged and the delegate starts all the same.
func TestStartHooksRunBeforeWork(t *testing.T) {
	srv, connect := inProcessManager(t)
	reg := connect(srv.RegistrationToken())
	r := router.New()
	r.HandleFunc("noop", func(w http.ResponseWriter, _ *http.Request) {
		httphelper.WriteJSON(w, map[string]string{}, http.StatusOK)
	})
	d, err := New(Config{
		Client:   reg,
		StateDir: t.TempDir(), Log: quiet(),
	}, r)
	if err != nil {
		t.Fatal(err)
	}
	var ran []string
	d.OnStart(func(context.Context) error {
		ran = append(ran, "first")
		if d.ID() != "" {
			t.Error("start hook run after registration")
		}
		return errors.New("boom")
	})
	d.OnStart(func(context.Context) error { ran = append(ran, "second"); return nil })
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	<-d.Ready()
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if strings.Join(ran, ",") != "first,second" {
		t.Fatalf("start hooks ran %v", ran)
	}
}
