package delegate

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/goleak"

	"github.com/errandci/errand"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/internal/clock"
	"github.com/errandci/errand/internal/fakemanager"
	"github.com/errandci/errand/livelog"
	"github.com/errandci/errand/poller"
	"github.com/errandci/errand/router"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeConfig is the configuration of a delegate of the fake manager,
// with short waits.
func fakeConfig(t *testing.T, f *fakemanager.Manager, capacity int) Config {
	return Config{
		Name: "test", Client: f, StateDir: t.TempDir(), Capacity: capacity, Identity: &MemoryIdentity{},
		Poller: poller.Config{
			Wait:       200 * time.Millisecond,
			NewBackOff: func() backoff.BackOff { return backoff.NewConstantBackOff(5 * time.Millisecond) },
			Log:        livelog.Config{Interval: time.Millisecond},
		},
		Log: quiet(),
	}
}

// startFake starts a delegate until the test ends.
func startFake(t *testing.T, cfg Config, r *router.Router) *Delegate {
	t.Helper()
	d, err := New(cfg, r)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop(context.Background()) })
	return d
}

func blockRouter(release <-chan struct{}) *router.Router {
	r := router.New()
	r.HandleFunc("block", func(w http.ResponseWriter, req *http.Request) {
		select {
		case <-release:
			httphelper.WriteJSON(w, 1, http.StatusOK)
		case <-req.Context().Done():
			httphelper.WriteError(w, errand.Errorf(errand.CodeTaskFailed, "interrupted"))
		}
	})
	return r
}

func fakeTask(id, typ string) *errand.Task {
	return &errand.Task{ID: id, Type: typ, Lease: &errand.Lease{Token: "lease-" + id, DelegateID: "d1"}}
}

// ticking is waitFor on a fake clock that moves by step while it
// waits.
func ticking(t *testing.T, clk *clock.Fake, step time.Duration, what string, cond func() bool) {
	t.Helper()
	waitFor(t, what, func() bool {
		if cond() {
			return true
		}
		clk.Advance(step)
		return false
	})
}

// beat is what a heartbeat said.
type beat struct {
	ok                   bool
	running              []string
	draining, overloaded bool
}

func lastBeat(f *fakemanager.Manager) beat {
	f.Lock()
	defer f.Unlock()
	n := len(f.Beats)
	if n == 0 {
		return beat{}
	}
	b := f.Beats[n-1]
	return beat{ok: true, running: b.Running, draining: b.Draining, overloaded: b.Overloaded}
}

func TestWrongRegistrationToken(t *testing.T) {
	f := fakemanager.New()
	f.Token = "wrong"
	d, err := New(fakeConfig(t, f, 1), blockRouter(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = d.Run(context.Background())
	if !errors.Is(err, errand.ErrUnauthorized) {
		t.Fatalf("Run = %v, want unauthorized", err)
	}
}

func TestResumesStoredIdentity(t *testing.T) {
	f := fakemanager.New()
	ids := &MemoryIdentity{}
	_ = ids.Save(&Identity{ID: "d1", Token: "D"})
	cfg := fakeConfig(t, f, 1)
	cfg.Identity = ids
	d := startFake(t, cfg, blockRouter(nil))
	<-d.Ready()
	if d.ID() != "d1" {
		t.Fatalf("id = %q", d.ID())
	}
	f.Lock()
	defer f.Unlock()
	if f.Registered != 0 {
		t.Fatal("registered again instead of resuming")
	}
	// Its first word says it resumes and holds nothing, so that the
	// leases of the process before it end at once.
	if len(f.Beats) == 0 || !f.Beats[0].Resumed || len(f.Beats[0].Running) != 0 {
		t.Fatalf("first heartbeat = %+v, want resumed with nothing running", f.Beats)
	}
	for _, b := range f.Beats[1:] {
		if b.Resumed {
			t.Fatalf("a later heartbeat says resumed: %+v", f.Beats)
		}
	}

	// An identity the manager does not know is replaced.
	f2 := fakemanager.New()
	ids2 := &MemoryIdentity{}
	_ = ids2.Save(&Identity{ID: "gone", Token: "T"})
	cfg2 := fakeConfig(t, f2, 1)
	cfg2.Identity = ids2
	d2 := startFake(t, cfg2, blockRouter(nil))
	<-d2.Ready()
	if got, _ := ids2.Load(); got == nil || got.ID != "d1" || got.Token != "D" {
		t.Fatalf("stored identity = %+v, want the new registration", got)
	}
}

func TestHeartbeatReportsRunningAndDraining(t *testing.T) {
	f := fakemanager.New()
	release := make(chan struct{})
	proc := t.TempDir()
	setLoad := func(perCPU float64) {
		load := strconv.FormatFloat(perCPU*float64(runtime.NumCPU()), 'f', 2, 64)
		if err := os.WriteFile(filepath.Join(proc, "loadavg"), []byte(load+" 0.5 0.5 1/100 4242\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	setLoad(0.1)
	clk := clock.NewFake(time.Unix(1, 0))
	cfg := fakeConfig(t, f, 3)
	cfg.ProcDir, cfg.MaxLoad, cfg.Clock = proc, 1, clk
	d := startFake(t, cfg, blockRouter(release))
	f.Push(fakeTask("h1", "block"))
	ticking(t, clk, 20*time.Millisecond, "heartbeat listing h1", func() bool {
		b := lastBeat(f)
		return b.ok && slices.Equal(b.running, []string{"h1"})
	})
	setLoad(2)
	ticking(t, clk, 100*time.Millisecond, "overloaded heartbeat and max 0", func() bool {
		f.Lock()
		max0 := f.AcquireMax[len(f.AcquireMax)-1] == 0
		f.Unlock()
		return lastBeat(f).overloaded && max0
	})
	d.Drain()
	ticking(t, clk, 20*time.Millisecond, "draining heartbeat", func() bool { return lastBeat(f).draining })
	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.poller.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if f.Last("h1").State != errand.StateSucceeded {
		t.Fatalf("h1 = %+v", f.Last("h1"))
	}
}

// A cancel the manager answers to a heartbeat stops the task, which is
// reported cancelled under its lease.
func TestCancelFromHeartbeat(t *testing.T) {
	f := fakemanager.New()
	clk := clock.NewFake(time.Unix(1, 0))
	cfg := fakeConfig(t, f, 1)
	cfg.Clock = clk
	startFake(t, cfg, blockRouter(nil))
	f.Push(fakeTask("c2", "block"))
	waitFor(t, "running", func() bool { return len(f.States("c2")) == 1 })
	f.Lock()
	f.BeatCancel = []string{"c2"}
	f.Unlock()
	ticking(t, clk, 20*time.Millisecond, "final report", func() bool { return f.Last("c2").State.Terminal() })
	last := f.Last("c2")
	if last.State != errand.StateCancelled || last.Error == nil || last.Error.Code != errand.CodeCancelled {
		t.Fatalf("final report %+v, want cancelled/cancelled", last)
	}
	if last.Lease != "lease-c2" {
		t.Fatalf("report carried lease %q", last.Lease)
	}
}

// An idle delegate's long-poll stands for its heartbeat: while it waits
// in acquire with nothing to run, no periodic heartbeat is sent; once it
// runs a task, heartbeats report it again.
func TestIdlePollReplacesHeartbeats(t *testing.T) {
	f := fakemanager.New()
	release := make(chan struct{})
	defer close(release)
	clk := clock.NewFake(time.Unix(1, 0))
	cfg := fakeConfig(t, f, 2)
	cfg.Clock = clk
	startFake(t, cfg, blockRouter(release))
	waitFor(t, "a poll in flight", func() bool {
		f.Lock()
		defer f.Unlock()
		return f.Acquires > 0
	})
	// 15 heartbeat intervals of the fake manager pass, each with the
	// heartbeat loop waiting on its timer.
	stuck := make(chan struct{})
	timeout := time.AfterFunc(5*time.Second, func() { close(stuck) })
	defer timeout.Stop()
	for range 15 {
		if !clk.WaitTimers(1, stuck) {
			t.Fatal("the heartbeat loop armed no timer")
		}
		clk.Advance(20 * time.Millisecond)
	}
	f.Lock()
	idle := len(f.Beats)
	f.Unlock()
	if idle > 1 {
		t.Fatalf("%d heartbeats sent while idle in a poll, want at most 1", idle)
	}
	f.Push(fakeTask("busy", "block"))
	ticking(t, clk, 20*time.Millisecond, "heartbeats while a task runs", func() bool {
		f.Lock()
		defer f.Unlock()
		n := len(f.Beats)
		return n > idle+2 && slices.Equal(f.Beats[n-1].Running, []string{"busy"})
	})
}

// A delegate whose token the manager refuses registers anew; when the
// registration token is refused too, the delegate stops by itself and
// says why.
func TestRefusedTokenRegistersAnewThenStops(t *testing.T) {
	f := fakemanager.New()
	d, err := New(fakeConfig(t, f, 1), blockRouter(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.Lock()
	f.AcquireErr = errand.Errorf(errand.CodeUnauthorized, "unknown token")
	f.Unlock()
	waitFor(t, "a second registration", func() bool {
		f.Lock()
		defer f.Unlock()
		return f.Registered >= 2
	})
	f.Lock()
	f.Token = "revoked"
	f.Unlock()
	select {
	case <-d.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the delegate kept running with its registration refused")
	}
	if err := d.Stop(context.Background()); !errors.Is(err, errand.ErrUnauthorized) || !strings.Contains(err.Error(), "registration token") {
		t.Fatalf("Stop = %v, want the refused registration token", err)
	}
}
