package storetest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// Burn-down shape: the store-alone counterpart of River's "river bench"
// burn-down, so that the two can be compared on one database.
const (
	// BurnDownTasks is how many tasks a burn-down inserts when
	// ERRAND_BENCH_TASKS does not say.
	BurnDownTasks = 50000
	// burnWorkers acquire up to burnAcquire tasks at a time each.
	burnWorkers = 8
	burnAcquire = 32
	// burnInsert is the size of one TaskCreate batch of the insert.
	burnInsert = 1000
)

// BurnDown benchmarks a store on a backlog: each iteration inserts the
// tasks first (not timed), then 8 workers acquire up to 32 at a time and
// report each task running, then succeeded, all through store.Store. The
// reports of the tasks a worker holds are sent at once, one caller each,
// as the delegates holding them would, so that a store may commit
// reports that arrive together together. It reports tasks/s. open is
// called once.
func BurnDown(b *testing.B, open func(b *testing.B) store.Store) {
	n := BurnDownTasks
	if v := os.Getenv("ERRAND_BENCH_TASKS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			b.Fatalf("ERRAND_BENCH_TASKS=%q: want a positive number", v)
		}
	}
	ctx := context.Background()
	s := open(b)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	delegates := make([]*errand.Delegate, burnWorkers)
	for i := range delegates {
		d, err := s.DelegateRegister(ctx, store.DelegateRegisterParams{
			Delegate: &errand.Delegate{ID: fmt.Sprintf("burn-%d", i), Name: "burn", Capacity: burnAcquire}, TokenHash: "h", Now: now})
		if err != nil {
			b.Fatal(err)
		}
		delegates[i] = d
	}
	var total time.Duration
	b.ResetTimer()
	for iter := 0; iter < b.N; iter++ {
		b.StopTimer()
		for lo := 0; lo < n; lo += burnInsert {
			tasks := make([]*errand.Task, min(burnInsert, n-lo))
			for i := range tasks {
				tasks[i] = &errand.Task{ID: fmt.Sprintf("burn-%d-%09d", iter, lo+i), Type: "bench.noop", MaxAttempts: 1}
			}
			if _, err := s.TaskCreate(ctx, store.TaskCreateParams{Tasks: tasks, Now: now}); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		start := time.Now()
		if err := burn(ctx, s, delegates, now); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "tasks/s")
}

// burn runs the workers until none acquires anything more.
func burn(ctx context.Context, s store.Store, delegates []*errand.Delegate, now time.Time) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	for _, d := range delegates {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				got, err := s.TaskAcquire(ctx, store.TaskAcquireParams{Delegate: d, Max: burnAcquire, Now: now})
				if err != nil {
					fail(err)
					return
				}
				if len(got) == 0 {
					return
				}
				var reports sync.WaitGroup
				for _, tk := range got {
					reports.Add(1)
					go func() {
						defer reports.Done()
						for _, st := range []errand.State{errand.StateRunning, errand.StateSucceeded} {
							if _, err := s.TaskReport(ctx, store.TaskReportParams{TaskID: tk.ID, DelegateID: d.ID,
								LeaseToken: tk.Lease.Token, State: st, Now: now}); err != nil {
								fail(err)
								return
							}
						}
					}()
				}
				reports.Wait()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}
