package scheduler

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/clock"
	"github.com/errandci/errand/manager/store/sqlite"
)

// newScheduler returns a started scheduler over a fresh SQLite store,
// stopped (and the store closed) when the test ends.
func newScheduler(t *testing.T, clk *clock.Fake) *Scheduler {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "errand.db"))
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	s, err := New(Config{
		HeartbeatInterval: 10 * time.Second, LeaseTTL: 40 * time.Second, MaxWait: time.Minute,
		SweepInterval: time.Hour, TimeoutGrace: 30 * time.Second, HeartbeatFlushInterval: time.Hour,
		Log: log, Now: clk.Now,
	}, st)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
		<-s.Done()
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}

// A cancel whose change never arrived is found by the next heartbeat
// after cancelRecheck, which reads the store again.
func TestMissedCancelFoundByRecheck(t *testing.T) {
	clk := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	s := newScheduler(t, clk)
	ctx := context.Background()
	d, _, err := s.Register(ctx, &errand.Delegate{Name: "d"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, []*errand.Task{{ID: "t1", Type: "noop", MaxAttempts: 1}}); err != nil {
		t.Fatal(err)
	}
	ans, err := s.Acquire(ctx, d.ID, 0, 1)
	if err != nil || len(ans.Tasks) != 1 {
		t.Fatalf("acquire = %+v, %v", ans, err)
	}
	task := ans.Tasks[0]
	if _, err := s.Report(ctx, Report{TaskID: task.ID, DelegateID: d.ID, LeaseToken: task.Lease.Token, State: errand.StateRunning}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Cancel(ctx, task.ID); err != nil {
		t.Fatal(err)
	}
	// Lose the change, as a broken notification channel would.
	s.cache.mu.Lock()
	s.cache.byID[d.ID].cancels.ended(task.ID)
	s.cache.mu.Unlock()

	hb, err := s.Heartbeat(ctx, d.ID, Heartbeat{Running: []string{task.ID}})
	if err != nil || len(hb.Cancel) != 0 {
		t.Fatalf("heartbeat = %+v, %v: the cache was expected to have missed the cancel", hb, err)
	}
	clk.Advance(cancelRecheck + time.Second)
	hb, err = s.Heartbeat(ctx, d.ID, Heartbeat{Running: []string{task.ID}})
	if err != nil || fmt.Sprint(hb.Cancel) != fmt.Sprint([]string{task.ID}) {
		t.Fatalf("heartbeat after the recheck = %+v, %v, want the cancel", hb, err)
	}
}

// Stop without Start releases what New took (its subscription) and
// closes Done; a long-poll ends at once after EndWaits.
func TestLifecycle(t *testing.T) {
	clk := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	s := newScheduler(t, clk)
	ctx := context.Background()
	d, _, err := s.Register(ctx, &errand.Delegate{Name: "d"})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := s.Acquire(ctx, d.ID, 30*time.Second, 1)
		got <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for s.Waiting() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("long-poll never started")
		}
		time.Sleep(time.Millisecond)
	}
	s.EndWaits()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("long-poll did not end after EndWaits")
	}

	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "errand.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	unstarted, err := New(Config{LeaseTTL: time.Second, HeartbeatInterval: time.Second, HeartbeatFlushInterval: time.Second}, st)
	if err != nil {
		t.Fatal(err)
	}
	if err := unstarted.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-unstarted.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
}
