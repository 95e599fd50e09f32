package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/delegate"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/poller"
	"github.com/errandci/errand/router"
)

// dispatchBench is `errand bench dispatch`: no-op tasks through the whole
// path, created over HTTP and run by real delegates that report over
// HTTP.
type dispatchBench struct {
	*benchOpts
	capacity int
	batch    int
}

func addDispatchBench(cmd *kingpin.CmdClause, g *globals) {
	c := cmd.Command("dispatch", "Create no-op tasks over HTTP and have real delegates run them; report tasks per second. "+
		"With -n, the tasks are created first and the figure is the burn-down.")
	b := &dispatchBench{benchOpts: newBenchOpts(c, "dispatch", benchDefaults{delegates: 8, duration: 10 * time.Second})}
	c.Flag("capacity", "Tasks each delegate runs at once.").Envar("ERRAND_BENCH_CAPACITY").Default("8").IntVar(&b.capacity)
	c.Flag("batch", "Tasks created per request.").Envar("ERRAND_BENCH_BATCH").Default("500").IntVar(&b.batch)
	c.Action(b.action(g, func() error {
		if b.delegates < 1 || b.capacity < 1 || b.batch < 1 || b.batch > errand.MaxBatch {
			return usageErrorf("--delegates and --capacity must be positive, --batch between 1 and %d", errand.MaxBatch)
		}
		return nil
	}, func(ctx context.Context, out *benchOut) ([]benchValue, error) { return b.run(ctx, out, g) }))
}

// doneCounter counts the tasks whose outcome a manager applied, from the
// answers to the delegates' reports.
type doneCounter struct {
	client.DelegateClient
	done *atomic.Int64
}

// Authenticated keeps counting with the delegate's own token.
func (c *doneCounter) Authenticated(token string) client.DelegateClient {
	return &doneCounter{DelegateClient: c.DelegateClient.Authenticated(token), done: c.done}
}

// Reports counts the outcomes applied.
func (c *doneCounter) Reports(ctx context.Context, id string, reports []*client.Report) ([]*client.ReportResult, error) {
	res, err := c.DelegateClient.Reports(ctx, id, reports)
	c.count(res)
	return res, err
}

// Acquire counts the outcomes it carried that were applied.
func (c *doneCounter) Acquire(ctx context.Context, id string, r *client.AcquireRequest) (*client.AcquireResponse, error) {
	resp, err := c.DelegateClient.Acquire(ctx, id, r)
	if err == nil {
		c.count(resp.Reports)
	}
	return resp, err
}

func (c *doneCounter) count(res []*client.ReportResult) {
	for _, r := range res {
		if r != nil && r.Status == client.ReportApplied && r.State.Terminal() {
			c.done.Add(1)
		}
	}
}

func (b *dispatchBench) run(ctx context.Context, out *benchOut, g *globals) ([]benchValue, error) {
	if err := raiseOpenFiles(uint64(4*b.delegates*b.replicas + 2*benchIdleConns)); err != nil {
		return nil, err
	}
	env, err := b.startEnv(ctx, g.Stderr)
	if err != nil {
		return nil, err
	}
	defer env.close()
	typ := benchTaskType()
	r := router.New(router.WithLogger(env.log))
	r.HandleFunc(typ, func(w http.ResponseWriter, _ *http.Request) {
		httphelper.WriteJSON(w, struct{}{}, http.StatusOK)
	})
	spec := make([]*client.TaskSpec, b.batch)
	for i := range spec {
		spec[i] = &client.TaskSpec{Type: typ}
	}
	var created, done atomic.Int64
	create := func(i, n int) error {
		if _, err := env.user(i).CreateTasks(ctx, spec[:n]); err != nil {
			return err
		}
		created.Add(int64(n))
		return nil
	}
	if b.count > 0 {
		start := time.Now()
		for i, left := 0, b.count; left > 0; i, left = i+1, left-b.batch {
			if err := create(i, min(b.batch, left)); err != nil {
				return nil, err
			}
		}
		out.line("created", num("tasks", float64(b.count), 0), ms("took_ms", time.Since(start)))
	}

	t0 := time.Now()
	delegates, err := startDelegates(ctx, b.delegates, b.delegates, func(i int) (*delegate.Delegate, error) {
		return delegate.New(delegate.Config{
			Name: "bench-" + strconv.Itoa(i), Hostname: "bench", Capacity: b.capacity, StateDir: env.dir,
			Client: &doneCounter{DelegateClient: env.registrar(i), done: &done}, Identity: &delegate.MemoryIdentity{},
			Poller: poller.Config{Wait: poller.DefaultWait}, Log: env.log,
		}, r)
	})
	defer stopAll(delegates)
	if err != nil {
		return nil, err
	}
	produced := make(chan error, 1)
	pctx, stopProducing := context.WithCancel(ctx)
	defer stopProducing()
	if b.count == 0 {
		// Keep a backlog that every delegate can fill its slots from.
		backlog := int64(max(4*b.delegates*b.capacity, 2*b.batch))
		go func() {
			for i := 0; pctx.Err() == nil; i++ {
				if created.Load()-done.Load() >= backlog {
					if sleepCtx(pctx, time.Millisecond) != nil {
						break
					}
					continue
				}
				if err := create(i, b.batch); err != nil && pctx.Err() == nil {
					produced <- err
					return
				}
			}
			produced <- nil
		}()
	}
	var lastDone int64
	lastAt := t0
	stop := out.progress(b.interval, func() []benchValue {
		now, n := time.Now(), done.Load()
		vals := []benchValue{num("elapsed_s", now.Sub(t0).Seconds(), 1), num("tasks", float64(n), 0),
			num("tasks_per_s", float64(n)/now.Sub(t0).Seconds(), 0), num("last_tasks_per_s", float64(n-lastDone)/now.Sub(lastAt).Seconds(), 0)}
		lastDone, lastAt = n, now
		return vals
	})
	defer stop()
	end := t0.Add(b.duration)
	for {
		if b.count > 0 && done.Load() >= int64(b.count) || b.count == 0 && !time.Now().Before(end) {
			break
		}
		select {
		case err := <-produced:
			return nil, fmt.Errorf("create tasks: %w", err)
		default:
		}
		if err := sleepCtx(ctx, time.Millisecond); err != nil {
			return nil, err
		}
	}
	elapsed, n := time.Since(t0), done.Load()
	stop()
	return []benchValue{num("delegates", float64(b.delegates), 0), num("replicas", float64(b.replicas), 0),
		num("elapsed_s", elapsed.Seconds(), 2), num("tasks", float64(n), 0), num("tasks_per_s", float64(n)/elapsed.Seconds(), 0)}, nil
}
