package poller_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/livelog"
	"github.com/errandci/errand/poller"
	"github.com/errandci/errand/router"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *logrus.Logger {
	if testing.Verbose() {
		return logrus.StandardLogger()
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func config(capacity int) poller.Config {
	return poller.Config{
		Delegate:   client.RegisterRequest{Name: "test", Capacity: capacity},
		Wait:       200 * time.Millisecond,
		NewBackOff: func() backoff.BackOff { return backoff.NewConstantBackOff(5 * time.Millisecond) },
		Logger:     quiet(),
		Log:        livelog.Config{Interval: time.Millisecond},
	}
}

// start runs p until the test ends.
func start(t *testing.T, p *poller.Poller) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once bool
	var res error
	stop = func() error {
		if !once {
			once = true
			cancel()
			res = <-done
		}
		return res
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func task(id, typ string) *errand.Task {
	return &errand.Task{ID: id, Type: typ, Lease: &errand.Lease{Token: "lease-" + id, DelegateID: "d1"}}
}

func TestAcquiresOnlyFreeSlots(t *testing.T) {
	f := newFake()
	release := make(chan struct{})
	r := router.New()
	r.HandleFunc("block", func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintln(router.LogFrom(req.Context()), "working")
		<-release
		httphelper.WriteJSON(w, map[string]bool{"ok": true}, http.StatusOK)
	})
	p := poller.New(config(2), f, r)
	stop := start(t, p)
	f.push(task("a", "block"), task("b", "block"))
	eventually(t, "both tasks running", func() bool { return len(p.Running()) == 2 })
	eventually(t, "an acquire for 0", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.acquireMax[len(f.acquireMax)-1] == 0
	})
	f.mu.Lock()
	if f.acquireMax[0] != 2 {
		t.Errorf("first acquire asked for %d, want 2", f.acquireMax[0])
	}
	for _, m := range f.acquireMax[1:] {
		if m != 0 {
			t.Errorf("acquire asked for %d while full; want 0", m)
		}
	}
	f.mu.Unlock()

	close(release)
	eventually(t, "both reported", func() bool {
		return f.last("a").State == errand.StateSucceeded && f.last("b").State == errand.StateSucceeded
	})
	eventually(t, "an acquire for 2 again", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.acquireMax[len(f.acquireMax)-1] == 2
	})
	if got := f.states("a"); !slices.Equal(got, []errand.State{errand.StateRunning, errand.StateSucceeded}) {
		t.Fatalf("reports of a = %v", got)
	}
	if got := string(f.last("a").Result); got != `{"ok":true}` {
		t.Fatalf("result = %s", got)
	}
	f.mu.Lock()
	logs := f.logs["a"]
	f.mu.Unlock()
	if !slices.Equal(logs, []string{"working"}) {
		t.Fatalf("log of a = %q", logs)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestBackoffStopsOnCancel(t *testing.T) {
	f := newFake()
	f.acquireErr = errand.Errorf(errand.CodeUnavailable, "down")
	cfg := config(1)
	cfg.NewBackOff = func() backoff.BackOff { return backoff.NewConstantBackOff(time.Hour) }
	p := poller.New(cfg, f, router.New())
	stop := start(t, p)
	eventually(t, "a failed acquire", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.acquires > 0
	})
	done := make(chan error)
	go func() { done <- stop() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run kept sleeping its backoff after its context ended")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.acquires != 1 {
		t.Fatalf("%d acquires; want 1 then a long backoff", f.acquires)
	}
}

func TestLeaseLostCancelsHandler(t *testing.T) {
	f := newFake()
	f.lostLogs["x"] = true
	stopped := make(chan error, 1)
	r := router.New()
	r.HandleFunc("talk", func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintln(router.LogFrom(req.Context()), "hello")
		<-req.Context().Done()
		stopped <- context.Cause(req.Context())
		httphelper.WriteError(w, errand.Errorf(errand.CodeTaskFailed, "stopped"))
	})
	p := poller.New(config(1), f, r)
	start(t, p)
	f.push(task("x", "talk"))
	select {
	case cause := <-stopped:
		if !errors.Is(cause, errand.ErrLeaseLost) {
			t.Fatalf("handler stopped by %v, want lease lost", cause)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler context not cancelled after lease lost")
	}
	eventually(t, "task gone", func() bool { return len(p.Running()) == 0 })
	if got := f.states("x"); !slices.Equal(got, []errand.State{errand.StateRunning}) {
		t.Fatalf("reports = %v; want only running, nothing after the lease was lost", got)
	}
}

func blockUntilDone(w http.ResponseWriter, req *http.Request) {
	<-req.Context().Done()
	httphelper.WriteError(w, errand.Errorf(errand.CodeTaskFailed, "interrupted"))
}

func TestCancelAndTimeout(t *testing.T) {
	cases := []struct {
		name     string
		task     *errand.Task
		viaBeat  bool
		cancel   bool
		want     errand.State
		wantCode string
	}{
		{name: "cancel from acquire", task: task("c1", "block"), cancel: true, want: errand.StateCancelled, wantCode: errand.CodeCancelled},
		{name: "cancel from heartbeat", task: task("c2", "block"), cancel: true, viaBeat: true, want: errand.StateCancelled, wantCode: errand.CodeCancelled},
		{name: "timeout", task: func() *errand.Task {
			tk := task("t1", "block")
			tk.Timeout = errand.Duration(30 * time.Millisecond)
			return tk
		}(), want: errand.StateTimedOut, wantCode: errand.CodeTimedOut},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			r := router.New()
			r.HandleFunc("block", blockUntilDone)
			p := poller.New(config(1), f, r)
			start(t, p)
			f.push(tc.task)
			eventually(t, "running", func() bool { return len(f.states(tc.task.ID)) == 1 })
			if tc.cancel {
				if tc.viaBeat {
					f.mu.Lock()
					f.beatCancel = []string{tc.task.ID}
					f.mu.Unlock()
				} else {
					f.cancelTask(tc.task.ID)
				}
			}
			eventually(t, "final report", func() bool { return f.last(tc.task.ID).State.Terminal() })
			last := f.last(tc.task.ID)
			if last.State != tc.want || last.Error == nil || last.Error.Code != tc.wantCode {
				t.Fatalf("final report %+v, want %s/%s", last, tc.want, tc.wantCode)
			}
			if last.Lease != "lease-"+tc.task.ID {
				t.Fatalf("report carried lease %q", last.Lease)
			}
		})
	}
}

func TestWrongRegistrationToken(t *testing.T) {
	f := newFake()
	f.token = "wrong"
	p := poller.New(config(1), f, router.New())
	err := p.Run(context.Background())
	if !errors.Is(err, errand.ErrUnauthorized) {
		t.Fatalf("Run = %v, want unauthorized", err)
	}
}

func TestResumesStoredIdentity(t *testing.T) {
	f := newFake()
	ids := &poller.MemoryIdentity{}
	_ = ids.Save(&poller.Identity{ID: "d1", Token: "D"})
	cfg := config(1)
	cfg.Identity = ids
	p := poller.New(cfg, f, router.New())
	start(t, p)
	<-p.Ready()
	if p.ID() != "d1" {
		t.Fatalf("id = %q", p.ID())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.registered != 0 {
		t.Fatal("registered again instead of resuming")
	}
	// Its first word says it resumes and holds nothing, so that the
	// leases of the process before it end at once.
	if len(f.beats) == 0 || !f.beats[0].Resumed || len(f.beats[0].Running) != 0 {
		t.Fatalf("first heartbeat = %+v, want resumed with nothing running", f.beats)
	}
	for _, b := range f.beats[1:] {
		if b.Resumed {
			t.Fatalf("a later heartbeat says resumed: %+v", f.beats)
		}
	}

	// An identity the manager does not know is replaced.
	f2 := newFake()
	ids2 := &poller.MemoryIdentity{}
	_ = ids2.Save(&poller.Identity{ID: "gone", Token: "T"})
	cfg.Identity = ids2
	p2 := poller.New(cfg, f2, router.New())
	start(t, p2)
	<-p2.Ready()
	if got, _ := ids2.Load(); got == nil || got.ID != "d1" || got.Token != "D" {
		t.Fatalf("stored identity = %+v, want the new registration", got)
	}
}

func TestHeartbeatReportsRunningAndDraining(t *testing.T) {
	f := newFake()
	release := make(chan struct{})
	r := router.New()
	r.HandleFunc("block", func(w http.ResponseWriter, _ *http.Request) {
		<-release
		httphelper.WriteJSON(w, 1, http.StatusOK)
	})
	over := make(chan bool, 1)
	over <- false
	cfg := config(3)
	cfg.Overloaded = func() bool {
		v := <-over
		over <- v
		return v
	}
	p := poller.New(cfg, f, r)
	stop := start(t, p)
	f.push(task("h1", "block"))
	eventually(t, "heartbeat listing h1", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		n := len(f.beats)
		return n > 0 && slices.Equal(f.beats[n-1].Running, []string{"h1"})
	})
	<-over
	over <- true
	eventually(t, "overloaded heartbeat and max 0", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		n := len(f.beats)
		return n > 0 && f.beats[n-1].Overloaded && f.acquireMax[len(f.acquireMax)-1] == 0
	})
	p.Drain()
	eventually(t, "draining heartbeat", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		n := len(f.beats)
		return n > 0 && f.beats[n-1].Draining
	})
	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if f.last("h1").State != errand.StateSucceeded {
		t.Fatalf("h1 = %+v", f.last("h1"))
	}
	_ = stop()
}

func TestStopCancelsRunningTasks(t *testing.T) {
	f := newFake()
	r := router.New()
	r.HandleFunc("block", blockUntilDone)
	p := poller.New(config(1), f, r)
	stop := start(t, p)
	f.push(task("s1", "block"))
	eventually(t, "running", func() bool { return len(f.states("s1")) == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if last := f.last("s1"); last.State != errand.StateCancelled {
		t.Fatalf("after stop: %+v, want cancelled reported", last)
	}
}

func TestOutcomeRetriedWhileManagerUnreachable(t *testing.T) {
	f := newFake()
	f.failStatus = 5
	r := router.New()
	r.HandleFunc("ok", func(w http.ResponseWriter, _ *http.Request) { httphelper.WriteJSON(w, 7, http.StatusOK) })
	p := poller.New(config(1), f, r)
	start(t, p)
	f.push(task("o1", "ok"))
	eventually(t, "outcome delivered", func() bool { return f.last("o1").State == errand.StateSucceeded })
	if got := string(f.last("o1").Result); got != "7" {
		t.Fatalf("result %s", got)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failStatus != 0 {
		t.Fatalf("%d failures left; the outcome was not retried through them", f.failStatus)
	}
}

func TestOutcomeAbandonedAfterReportTimeout(t *testing.T) {
	f := newFake()
	f.failStatus = 1 << 30
	r := router.New()
	r.HandleFunc("ok", func(w http.ResponseWriter, _ *http.Request) { httphelper.WriteJSON(w, 1, http.StatusOK) })
	cfg := config(1)
	cfg.ReportTimeout = 50 * time.Millisecond
	p := poller.New(cfg, f, r)
	start(t, p)
	f.push(task("a1", "ok"))
	eventually(t, "task started", func() bool { return len(f.states("a1")) == 1 })
	// Abandoned, the task leaves the running list: its lease may expire
	// and the manager decides.
	eventually(t, "outcome abandoned", func() bool { return len(p.Running()) == 0 })
	if got := f.states("a1"); !slices.Equal(got, []errand.State{errand.StateRunning}) {
		t.Fatalf("reports %v", got)
	}
}

// An idle delegate's long-poll stands for its heartbeat: while it waits
// in acquire with nothing to run, no periodic heartbeat is sent; once it
// runs a task, heartbeats report it again.
func TestIdlePollReplacesHeartbeats(t *testing.T) {
	f := newFake()
	release := make(chan struct{})
	r := router.New()
	r.HandleFunc("block", func(w http.ResponseWriter, _ *http.Request) {
		<-release
		httphelper.WriteJSON(w, 1, http.StatusOK)
	})
	p := poller.New(config(2), f, r)
	start(t, p)
	eventually(t, "a poll in flight", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.acquires > 0
	})
	time.Sleep(300 * time.Millisecond) // 15 heartbeat intervals of the fake
	f.mu.Lock()
	idle := len(f.beats)
	f.mu.Unlock()
	if idle > 1 {
		t.Fatalf("%d heartbeats sent while idle in a poll, want at most 1", idle)
	}
	f.push(task("busy", "block"))
	eventually(t, "heartbeats while a task runs", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		n := len(f.beats)
		return n > idle+2 && slices.Equal(f.beats[n-1].Running, []string{"busy"})
	})
	close(release)
}
