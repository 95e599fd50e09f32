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
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/internal/fakemanager"
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

// session is a delegate registered as d1 with the fake manager.
type session struct{ f *fakemanager.Manager }

func (s session) Delegate() (string, poller.Client) { return "d1", s.f }

func (s session) Refused(_ context.Context, err error) error { return err }

func config(f *fakemanager.Manager, r *router.Router, capacity int) poller.Config {
	return poller.Config{
		Session:    session{f},
		Router:     r,
		Capacity:   capacity,
		Wait:       200 * time.Millisecond,
		NewBackOff: func() backoff.BackOff { return backoff.NewConstantBackOff(5 * time.Millisecond) },
		Logger:     quiet(),
		Log:        livelog.Config{Interval: time.Millisecond},
	}
}

func newPoller(t *testing.T, cfg poller.Config) *poller.Poller {
	t.Helper()
	p, err := poller.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// start runs p until the test ends.
func start(t *testing.T, p *poller.Poller) (stop func() error) {
	t.Helper()
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var once bool
	var res error
	stop = func() error {
		if !once {
			once = true
			res = p.Stop(context.Background())
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
	f := fakemanager.New()
	release := make(chan struct{})
	r := router.New()
	r.HandleFunc("block", func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintln(router.LogFrom(req.Context()), "working")
		<-release
		httphelper.WriteJSON(w, map[string]bool{"ok": true}, http.StatusOK)
	})
	p := newPoller(t, config(f, r, 2))
	stop := start(t, p)
	f.Push(task("a", "block"), task("b", "block"))
	eventually(t, "both tasks running", func() bool { return len(p.Running()) == 2 })
	eventually(t, "an acquire for 0", func() bool {
		f.Lock()
		defer f.Unlock()
		return f.AcquireMax[len(f.AcquireMax)-1] == 0
	})
	f.Lock()
	if f.AcquireMax[0] != 2 {
		t.Errorf("first acquire asked for %d, want 2", f.AcquireMax[0])
	}
	for _, m := range f.AcquireMax[1:] {
		if m != 0 {
			t.Errorf("acquire asked for %d while full; want 0", m)
		}
	}
	f.Unlock()

	close(release)
	eventually(t, "both reported", func() bool {
		return f.Last("a").State == errand.StateSucceeded && f.Last("b").State == errand.StateSucceeded
	})
	eventually(t, "an acquire for 2 again", func() bool {
		f.Lock()
		defer f.Unlock()
		return f.AcquireMax[len(f.AcquireMax)-1] == 2
	})
	if got := f.States("a"); !slices.Equal(got, []errand.State{errand.StateRunning, errand.StateSucceeded}) {
		t.Fatalf("reports of a = %v", got)
	}
	if got := string(f.Last("a").Result); got != `{"ok":true}` {
		t.Fatalf("result = %s", got)
	}
	f.Lock()
	logs := f.Logs["a"]
	f.Unlock()
	if !slices.Equal(logs, []string{"working"}) {
		t.Fatalf("log of a = %q", logs)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestBackoffStopsOnCancel(t *testing.T) {
	f := fakemanager.New()
	f.AcquireErr = errand.Errorf(errand.CodeUnavailable, "down")
	cfg := config(f, router.New(), 1)
	cfg.NewBackOff = func() backoff.BackOff { return backoff.NewConstantBackOff(time.Hour) }
	p := newPoller(t, cfg)
	stop := start(t, p)
	eventually(t, "a failed acquire", func() bool {
		f.Lock()
		defer f.Unlock()
		return f.Acquires > 0
	})
	done := make(chan error)
	go func() { done <- stop() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Stop waited for the acquire backoff to end")
	}
	f.Lock()
	defer f.Unlock()
	if f.Acquires != 1 {
		t.Fatalf("%d acquires; want 1 then a long backoff", f.Acquires)
	}
}

func TestLeaseLostCancelsHandler(t *testing.T) {
	f := fakemanager.New()
	f.LostLogs["x"] = true
	stopped := make(chan error, 1)
	r := router.New()
	r.HandleFunc("talk", func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintln(router.LogFrom(req.Context()), "hello")
		<-req.Context().Done()
		stopped <- context.Cause(req.Context())
		httphelper.WriteError(w, errand.Errorf(errand.CodeTaskFailed, "stopped"))
	})
	p := newPoller(t, config(f, r, 1))
	start(t, p)
	f.Push(task("x", "talk"))
	select {
	case cause := <-stopped:
		if !errors.Is(cause, errand.ErrLeaseLost) {
			t.Fatalf("handler stopped by %v, want lease lost", cause)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler context not cancelled after lease lost")
	}
	eventually(t, "task gone", func() bool { return len(p.Running()) == 0 })
	if got := f.States("x"); !slices.Equal(got, []errand.State{errand.StateRunning}) {
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
		cancel   bool
		want     errand.State
		wantCode string
	}{
		{name: "cancel from acquire", task: task("c1", "block"), cancel: true, want: errand.StateCancelled, wantCode: errand.CodeCancelled},
		{name: "timeout", task: func() *errand.Task {
			tk := task("t1", "block")
			tk.Timeout = errand.Duration(30 * time.Millisecond)
			return tk
		}(), want: errand.StateTimedOut, wantCode: errand.CodeTimedOut},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := fakemanager.New()
			r := router.New()
			r.HandleFunc("block", blockUntilDone)
			p := newPoller(t, config(f, r, 1))
			start(t, p)
			f.Push(tc.task)
			// A task that times out at once may report running and its end
			// in one call.
			eventually(t, "running", func() bool { return len(f.States(tc.task.ID)) >= 1 })
			if tc.cancel {
				f.CancelTask(tc.task.ID)
			}
			eventually(t, "final report", func() bool { return f.Last(tc.task.ID).State.Terminal() })
			last := f.Last(tc.task.ID)
			if last.State != tc.want || last.Error == nil || last.Error.Code != tc.wantCode {
				t.Fatalf("final report %+v, want %s/%s", last, tc.want, tc.wantCode)
			}
			if last.Lease != "lease-"+tc.task.ID {
				t.Fatalf("report carried lease %q", last.Lease)
			}
		})
	}
}

func TestStopCancelsRunningTasks(t *testing.T) {
	f := fakemanager.New()
	r := router.New()
	r.HandleFunc("block", blockUntilDone)
	p := newPoller(t, config(f, r, 1))
	stop := start(t, p)
	f.Push(task("s1", "block"))
	eventually(t, "running", func() bool { return len(f.States("s1")) == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if last := f.Last("s1"); last.State != errand.StateCancelled {
		t.Fatalf("after stop: %+v, want cancelled reported", last)
	}
}

func TestOutcomeRetriedWhileManagerUnreachable(t *testing.T) {
	f := fakemanager.New()
	f.FailStatus = 5
	r := router.New()
	r.HandleFunc("ok", func(w http.ResponseWriter, _ *http.Request) { httphelper.WriteJSON(w, 7, http.StatusOK) })
	p := newPoller(t, config(f, r, 1))
	start(t, p)
	f.Push(task("o1", "ok"))
	eventually(t, "outcome delivered", func() bool { return f.Last("o1").State == errand.StateSucceeded })
	if got := string(f.Last("o1").Result); got != "7" {
		t.Fatalf("result %s", got)
	}
	f.Lock()
	defer f.Unlock()
	if f.FailStatus != 0 {
		t.Fatalf("%d failures left; the outcome was not retried through them", f.FailStatus)
	}
}

func TestOutcomeAbandonedAfterReportTimeout(t *testing.T) {
	f := fakemanager.New()
	f.FailStatus = 1 << 30
	r := router.New()
	r.HandleFunc("ok", func(w http.ResponseWriter, _ *http.Request) { httphelper.WriteJSON(w, 1, http.StatusOK) })
	cfg := config(f, r, 1)
	cfg.ReportTimeout = 50 * time.Millisecond
	p := newPoller(t, cfg)
	start(t, p)
	f.Push(task("a1", "ok"))
	eventually(t, "task started", func() bool { return len(f.States("a1")) == 1 })
	// Abandoned, the task leaves the running list: its lease may expire
	// and the manager decides.
	eventually(t, "outcome abandoned", func() bool { return len(p.Running()) == 0 })
	if got := f.States("a1"); !slices.Equal(got, []errand.State{errand.StateRunning}) {
		t.Fatalf("reports %v", got)
	}
}

// refusingSession gives up when the manager refuses the delegate.
type refusingSession struct {
	session
	told chan error
}

func (s refusingSession) Refused(_ context.Context, err error) error {
	s.told <- err
	return fmt.Errorf("register anew: %w", errand.ErrUnauthorized)
}

// A poller whose delegate the manager refuses tells its session; when the
// session gives up, the poller stops by itself and says why.
func TestRefusedDelegateStopsPoller(t *testing.T) {
	f := fakemanager.New()
	f.AcquireErr = errand.Errorf(errand.CodeUnauthorized, "unknown token")
	cfg := config(f, router.New(), 1)
	s := refusingSession{session: session{f}, told: make(chan error, 1)}
	cfg.Session = s
	p := newPoller(t, cfg)
	stop := start(t, p)
	select {
	case err := <-s.told:
		if !errors.Is(err, errand.ErrUnauthorized) {
			t.Fatalf("session told %v, want unauthorized", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the session was not told of the refusal")
	}
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the poller kept running after its session gave up")
	}
	if err := stop(); !errors.Is(err, errand.ErrUnauthorized) || !errors.Is(p.Err(), errand.ErrUnauthorized) {
		t.Fatalf("Stop = %v, Err = %v; want the session's error", err, p.Err())
	}
}
