package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/storetest"
)

// BenchmarkDispatch drives b.N no-op tasks through the store the way a
// manager under load does: one producer creates them in batches, eight
// delegates acquire 8 to 32 at a time and report each running, then
// succeeded. It reports tasks per second.
func BenchmarkDispatch(b *testing.B) {
	const (
		acquirers = 8
		batch     = 500
	)
	ctx := context.Background()
	s := open(b, filepath.Join(b.TempDir(), "errand.db"))
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	delegates := make([]*errand.Delegate, acquirers)
	for i := range delegates {
		d, err := s.DelegateRegister(ctx, store.DelegateRegisterParams{
			Delegate: &errand.Delegate{ID: fmt.Sprintf("d%d", i), Name: "bench", Capacity: 32}, TokenHash: "h", Now: now})
		if err != nil {
			b.Fatal(err)
		}
		delegates[i] = d
	}
	// queued wakes idle acquirers, as the manager's long-poll hub does.
	queued := make(chan struct{}, 1)
	defer s.Subscribe(func(c store.Change) {
		if c.Kind == store.ChangeTaskQueued {
			select {
			case queued <- struct{}{}:
			default:
			}
		}
	})()

	var (
		done   atomic.Int64
		wg     sync.WaitGroup
		failed = make(chan error, acquirers+1)
		stop   = make(chan struct{})
	)
	total := int64(b.N)
	b.ResetTimer()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for created := 0; created < b.N; {
			n := min(batch, b.N-created)
			tasks := make([]*errand.Task, n)
			for i := range tasks {
				tasks[i] = &errand.Task{ID: fmt.Sprintf("t%09d", created+i), Type: "bench.noop", MaxAttempts: 1}
			}
			if _, err := s.TaskCreate(ctx, store.TaskCreateParams{Tasks: tasks, Now: now}); err != nil {
				failed <- err
				return
			}
			created += n
		}
	}()
	for i, d := range delegates {
		wg.Add(1)
		go func() {
			defer wg.Done()
			perAcquire := 8 + i*24/(acquirers-1)
			for done.Load() < total {
				got, err := s.TaskAcquire(ctx, store.TaskAcquireParams{Delegate: d, Max: perAcquire, Now: now})
				if err != nil {
					failed <- err
					return
				}
				if len(got) == 0 {
					select {
					case <-queued:
					case <-stop:
						return
					case <-time.After(time.Millisecond):
					}
					continue
				}
				for _, tk := range got {
					for _, st := range []errand.State{errand.StateRunning, errand.StateSucceeded} {
						if _, err := s.TaskReport(ctx, store.TaskReportParams{TaskID: tk.ID, DelegateID: d.ID,
							LeaseToken: tk.Lease.Token, State: st, Now: now}); err != nil {
							failed <- err
							return
						}
					}
				}
				if done.Add(int64(len(got))) == total {
					close(stop)
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(failed)
	for err := range failed {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}

// BenchmarkLogAppend appends b.N batches of 1,000 lines, spread over four
// running tasks written to at once, the way delegates stream build
// output. It reports lines per second.
func BenchmarkLogAppend(b *testing.B) {
	const tasks, lines = 4, 1000
	ctx := context.Background()
	s := open(b, filepath.Join(b.TempDir(), "errand.db"))
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	d, err := s.DelegateRegister(ctx, store.DelegateRegisterParams{
		Delegate: &errand.Delegate{ID: "d", Name: "bench", Capacity: tasks}, TokenHash: "h", Now: now})
	if err != nil {
		b.Fatal(err)
	}
	specs := make([]*errand.Task, tasks)
	for i := range specs {
		specs[i] = &errand.Task{ID: fmt.Sprint("t", i), Type: "bench.log", MaxAttempts: 1}
	}
	if _, err := s.TaskCreate(ctx, store.TaskCreateParams{Tasks: specs, Now: now}); err != nil {
		b.Fatal(err)
	}
	leased, err := s.TaskAcquire(ctx, store.TaskAcquireParams{Delegate: d, Max: tasks, Now: now})
	if err != nil || len(leased) != tasks {
		b.Fatalf("acquire: %d tasks, %v", len(leased), err)
	}
	batch := make([]string, lines)
	for i := range batch {
		batch[i] = fmt.Sprintf("%05d %s", i, strings.Repeat("log output ", 6))
	}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		errs = make(chan error, tasks)
	)
	b.ResetTimer()
	for _, t := range leased {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var offset int64
			for next.Add(1) <= int64(b.N) {
				end, err := s.LogAppend(ctx, store.LogAppendParams{TaskID: t.ID, DelegateID: d.ID,
					LeaseToken: t.Lease.Token, Offset: offset, Lines: batch, Now: now})
				if err != nil {
					errs <- err
					return
				}
				offset = end
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N*lines)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkBurnDown is the store-alone burn-down (storetest.BurnDown) on
// SQLite: go test -run '^$' -bench BurnDown -benchtime 1x.
func BenchmarkBurnDown(b *testing.B) {
	storetest.BurnDown(b, func(b *testing.B) store.Store { return open(b, filepath.Join(b.TempDir(), "errand.db")) })
}
