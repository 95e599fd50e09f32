package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

// benchDelegate is a delegate the bench speaks for itself, call by call.
type benchDelegate struct {
	id string
	c  client.DelegateClient
}

// register registers a delegate on replica i serving typ.
func (e *benchEnv) register(ctx context.Context, i int, name, typ string) (*benchDelegate, error) {
	reg, err := e.registrar(i).Register(ctx, &client.RegisterRequest{Name: name, Hostname: "bench", Capacity: 100, TaskTypes: []string{typ}})
	if err != nil {
		return nil, err
	}
	return &benchDelegate{id: reg.ID, c: e.registrar(i).Authenticated(reg.Token)}, nil
}

// finish reports leased tasks succeeded.
func (d *benchDelegate) finish(ctx context.Context, tasks ...*errand.Task) error {
	reports := make([]*client.Report, 0, len(tasks))
	for _, t := range tasks {
		reports = append(reports, &client.Report{TaskID: t.ID, Lease: t.Lease.Token, State: errand.StateSucceeded})
	}
	res, err := d.c.Reports(ctx, d.id, reports)
	if err != nil {
		return err
	}
	for _, r := range res {
		if err := r.Err(); err != nil {
			return err
		}
	}
	return nil
}

// pickupBench is `errand bench pickup`.
type pickupBench struct{ *benchOpts }

func addPickupBench(cmd *kingpin.CmdClause, g *globals) {
	c := cmd.Command("pickup", "Measure the time from the start of a task's creation to the return of an acquire that was waiting for it; "+
		"with --replicas, the acquire waits on another replica than the one the task is created on.")
	b := &pickupBench{newBenchOpts(c, "pickup", benchDefaults{count: 200, duration: 10 * time.Second})}
	c.Action(b.action(g, nil, func(ctx context.Context, out *benchOut) ([]benchValue, error) { return b.run(ctx, out, g) }))
}

func (b *pickupBench) run(ctx context.Context, out *benchOut, g *globals) ([]benchValue, error) {
	env, err := b.startEnv(ctx, g.Stderr)
	if err != nil {
		return nil, err
	}
	defer env.close()
	typ := benchTaskType()
	// The acquire waits on the last replica; tasks are created on the
	// first.
	on := len(env.urls) - 1
	d, err := env.register(ctx, on, "bench-pickup", typ)
	if err != nil {
		return nil, err
	}
	user := env.user(0)
	var (
		mu  sync.Mutex
		lat []time.Duration
	)
	snapshot := func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Duration(nil), lat...)
	}
	t0 := time.Now()
	stop := out.progress(b.interval, func() []benchValue {
		s := snapshot()
		return []benchValue{num("elapsed_s", time.Since(t0).Seconds(), 1), num("samples", float64(len(s)), 0),
			ms("p50_ms", percentileOf(s, 0.5)), ms("p99_ms", percentileOf(s, 0.99))}
	})
	defer stop()
	for i := 0; b.count > 0 && i < b.count || b.count == 0 && time.Since(t0) < b.duration; i++ {
		type answer struct {
			a   *client.AcquireResponse
			err error
		}
		got := make(chan answer, 1)
		go func() {
			a, err := d.c.Acquire(ctx, d.id, &client.AcquireRequest{Wait: errand.Duration(30 * time.Second), Max: 1})
			got <- answer{a, err}
		}()
		// The poll must wait before the task is created.
		for {
			n, err := env.waiting(ctx, on)
			if err != nil {
				return nil, err
			}
			if n > 0 {
				break
			}
			if err := sleepCtx(ctx, 200*time.Microsecond); err != nil {
				return nil, err
			}
		}
		start := time.Now()
		if _, err := user.CreateTasks(ctx, []*client.TaskSpec{{Type: typ}}); err != nil {
			return nil, err
		}
		ans := <-got
		took := time.Since(start)
		if ans.err != nil {
			return nil, ans.err
		}
		if len(ans.a.Tasks) != 1 {
			return nil, fmt.Errorf("the acquire returned %d tasks, want 1", len(ans.a.Tasks))
		}
		mu.Lock()
		lat = append(lat, took)
		mu.Unlock()
		if err := d.finish(ctx, ans.a.Tasks...); err != nil {
			return nil, err
		}
	}
	stop()
	s := snapshot()
	return []benchValue{num("replicas", float64(b.replicas), 0), num("samples", float64(len(s)), 0),
		ms("p50_ms", percentileOf(s, 0.5)), ms("p99_ms", percentileOf(s, 0.99)), ms("max_ms", percentileOf(s, 1))}, nil
}

// logsBench is `errand bench logs`.
type logsBench struct {
	*benchOpts
	lines   int
	writers int
}

func addLogsBench(cmd *kingpin.CmdClause, g *globals) {
	c := cmd.Command("logs", "Append log lines in batches from several tasks at once, and follow one task's log as a user does; "+
		"report lines per second and how soon a batch is visible to the follower. -n counts batches.")
	b := &logsBench{benchOpts: newBenchOpts(c, "logs", benchDefaults{count: 400, duration: 10 * time.Second})}
	c.Flag("lines", "Lines per batch.").Envar("ERRAND_BENCH_LINES").Default("1000").IntVar(&b.lines)
	c.Flag("writers", "Tasks appending at once.").Envar("ERRAND_BENCH_WRITERS").Default("4").IntVar(&b.writers)
	c.Action(b.action(g, func() error {
		if b.lines < 1 || b.writers < 1 {
			return usageErrorf("--lines and --writers must be positive")
		}
		return nil
	}, func(ctx context.Context, out *benchOut) ([]benchValue, error) { return b.run(ctx, out, g) }))
}

// followWriter receives a followed log and notes when each line of the
// watched batches arrived.
type followWriter struct {
	mu    sync.Mutex
	lines int64
	seen  map[int64]chan struct{} // line index → closed when it arrived
}

func (w *followWriter) Write(p []byte) (int, error) {
	n := int64(strings.Count(string(p), "\n"))
	w.mu.Lock()
	for i := w.lines; i < w.lines+n; i++ {
		if ch, ok := w.seen[i]; ok {
			close(ch)
			delete(w.seen, i)
		}
	}
	w.lines += n
	w.mu.Unlock()
	return len(p), nil
}

// watch returns a channel closed when line i has arrived.
func (w *followWriter) watch(i int64) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan struct{})
	if i < w.lines {
		close(ch)
		return ch
	}
	w.seen[i] = ch
	return ch
}

func (b *logsBench) run(ctx context.Context, out *benchOut, g *globals) ([]benchValue, error) {
	env, err := b.startEnv(ctx, g.Stderr)
	if err != nil {
		return nil, err
	}
	defer env.close()
	typ := benchTaskType()
	d, err := env.register(ctx, 0, "bench-logs", typ)
	if err != nil {
		return nil, err
	}
	specs := make([]*client.TaskSpec, b.writers)
	for i := range specs {
		specs[i] = &client.TaskSpec{Type: typ}
	}
	if _, err := env.user(0).CreateTasks(ctx, specs); err != nil {
		return nil, err
	}
	a, err := d.c.Acquire(ctx, d.id, &client.AcquireRequest{Max: b.writers})
	if err != nil {
		return nil, err
	}
	if len(a.Tasks) != b.writers {
		return nil, fmt.Errorf("acquired %d tasks, want %d", len(a.Tasks), b.writers)
	}
	followed := a.Tasks[0]
	fw := &followWriter{seen: map[int64]chan struct{}{}}
	fctx, stopFollow := context.WithCancel(ctx)
	defer stopFollow()
	followDone := make(chan error, 1)
	go func() {
		followDone <- env.user(len(env.urls)-1).TaskLogs(fctx, followed.ID, &client.LogOptions{Follow: true}, fw)
	}()
	batch := make([]string, b.lines)
	for i := range batch {
		batch[i] = fmt.Sprintf("%05d %s", i, strings.Repeat("log output ", 6))
	}
	var (
		next, lines atomic.Int64
		mu          sync.Mutex
		visible     []time.Duration
		wg          sync.WaitGroup
		errs        = make(chan error, b.writers)
	)
	t0 := time.Now()
	more := func() bool {
		n := next.Add(1)
		return b.count > 0 && n <= int64(b.count) || b.count == 0 && time.Since(t0) < b.duration
	}
	stop := out.progress(b.interval, func() []benchValue {
		mu.Lock()
		v := append([]time.Duration(nil), visible...)
		mu.Unlock()
		el := time.Since(t0).Seconds()
		return []benchValue{num("elapsed_s", el, 1), num("lines", float64(lines.Load()), 0),
			num("lines_per_s", float64(lines.Load())/el, 0), ms("visible_p50_ms", percentileOf(v, 0.5))}
	})
	defer stop()
	for w, t := range a.Tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var offset int64
			for more() {
				var seen <-chan struct{}
				if w == 0 {
					seen = fw.watch(offset + int64(len(batch)) - 1)
				}
				start := time.Now()
				res, err := d.c.AppendLogs(ctx, t.ID, &client.LogAppend{Lease: t.Lease.Token, Offset: offset, Lines: batch})
				if err != nil {
					errs <- err
					return
				}
				offset = res.Next
				lines.Add(int64(len(batch)))
				if seen != nil {
					select {
					case <-seen:
						mu.Lock()
						visible = append(visible, time.Since(start))
						mu.Unlock()
					case err := <-followDone:
						errs <- fmt.Errorf("the follower stopped: %v", err)
						return
					case <-ctx.Done():
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	stop()
	close(errs)
	for err := range errs {
		return nil, err
	}
	if err := d.finish(ctx, a.Tasks...); err != nil {
		return nil, err
	}
	stopFollow()
	if err := <-followDone; err != nil && !errors.Is(err, context.Canceled) {
		return nil, fmt.Errorf("follow: %w", err)
	}
	mu.Lock()
	defer mu.Unlock()
	n := lines.Load()
	return []benchValue{num("writers", float64(b.writers), 0), num("lines", float64(n), 0), num("elapsed_s", elapsed.Seconds(), 2),
		num("lines_per_s", float64(n)/elapsed.Seconds(), 0),
		ms("visible_p50_ms", percentileOf(visible, 0.5)), ms("visible_p99_ms", percentileOf(visible, 0.99))}, nil
}
