package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/delegate"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/internal/proc"
	"github.com/errandci/errand/manager"
	"github.com/errandci/errand/poller"
	"github.com/errandci/errand/router"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat;
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// idleBench is the configuration of `errand bench idle`.
type idleBench struct {
	*benchOpts
	warmup      time.Duration
	wait        time.Duration
	hbInterval  time.Duration
	concurrency int
}

func addIdleBench(cmd *kingpin.CmdClause, g *globals) {
	idle := cmd.Command("idle", "Keep many real delegates long-polling the managers with nothing to do, and report the managers' memory and CPU.")
	b := &idleBench{benchOpts: newBenchOpts(idle, "idle", benchDefaults{delegates: 10000, duration: 30 * time.Second})}
	idle.Flag("warmup", "How long to wait after the last delegate started polling before measuring.").Envar("ERRAND_BENCH_WARMUP").Default("5s").DurationVar(&b.warmup)
	// The delegates are the real ones of `errand delegate` (the delegate
	// package), polling and heartbeating with its defaults, so that the
	// figures are those of a real fleet.
	idle.Flag("wait", "Acquire long-poll wait (the delegate's default).").Envar("ERRAND_BENCH_WAIT").Default(poller.DefaultWait.String()).DurationVar(&b.wait)
	idle.Flag("heartbeat-interval", "Heartbeat interval the managers give delegates (their default).").Envar("ERRAND_BENCH_HEARTBEAT_INTERVAL").
		Default(manager.DefaultHeartbeatInterval.String()).DurationVar(&b.hbInterval)
	idle.Flag("concurrency", "Registrations in flight at once.").Envar("ERRAND_BENCH_CONCURRENCY").Default("32").IntVar(&b.concurrency)
	idle.Action(b.action(g, func() error {
		if b.delegates < 1 || b.concurrency < 1 || b.duration <= 0 {
			return usageErrorf("--delegates, --duration and --concurrency must be positive")
		}
		return nil
	}, func(ctx context.Context, out *benchOut) ([]benchValue, error) { return b.run(ctx, out, g) }))
}

func (b *idleBench) run(ctx context.Context, out *benchOut, g *globals) ([]benchValue, error) {
	// One connection per long-poll, plus the idle pool and the
	// heartbeats in flight.
	if err := raiseOpenFiles(uint64(b.delegates + 2*benchIdleConns + 64)); err != nil {
		return nil, err
	}
	env, err := b.startEnv(ctx, g.Stderr, "--heartbeat-interval", b.hbInterval.String())
	if err != nil {
		return nil, err
	}
	defer env.close()

	var failures, calls atomic.Int64
	r := router.New(router.WithLogger(env.log))
	r.HandleFunc(benchTaskType(), func(w http.ResponseWriter, _ *http.Request) {
		httphelper.WriteJSON(w, map[string]any{}, http.StatusOK)
	})
	started := time.Now()
	delegates, err := startDelegates(ctx, b.delegates, b.concurrency, func(i int) (*delegate.Delegate, error) {
		c := &countingClient{DelegateClient: env.registrar(i), calls: &calls, failures: &failures}
		return delegate.New(delegate.Config{
			Name: "bench-" + strconv.Itoa(i), Hostname: "bench", Capacity: 1, StateDir: env.dir,
			Client: c, Identity: &delegate.MemoryIdentity{}, HeartbeatInterval: b.hbInterval,
			Poller: poller.Config{Wait: b.wait}, Log: env.log,
		}, r)
	})
	defer stopAll(delegates)
	if err != nil {
		return nil, err
	}
	out.line("start", num("delegates", float64(b.delegates), 0), ms("registered_ms", time.Since(started)))

	if err := sleepCtx(ctx, b.warmup); err != nil {
		return nil, err
	}
	cpu := func() (int64, error) {
		var sum int64
		for _, m := range env.procs {
			t, err := procCPUTicks(m.pid())
			if err != nil {
				return 0, err
			}
			sum += t
		}
		return sum, nil
	}
	rss := func() (int64, error) {
		var sum int64
		for _, m := range env.procs {
			r, err := procRSS(m.pid())
			if err != nil {
				return 0, err
			}
			sum += r
		}
		return sum, nil
	}
	cpu0, err := cpu()
	if err != nil {
		return nil, err
	}
	calls0 := calls.Load()
	t0 := time.Now()
	var peak int64
	lastCPU, lastCalls, lastAt := cpu0, calls0, t0
	stop := out.progress(b.benchOpts.interval, func() []benchValue {
		now := time.Now()
		c, _ := cpu()
		n := calls.Load()
		r, _ := rss()
		el := now.Sub(lastAt).Seconds()
		vals := []benchValue{num("elapsed_s", now.Sub(t0).Seconds(), 1),
			num("cpu_pct", float64(c-lastCPU)/clockTicks/el*100, 2), num("rss_mib", float64(r)/(1<<20), 1),
			num("calls_per_s", float64(n-lastCalls)/el, 0)}
		lastCPU, lastCalls, lastAt = c, n, now
		return vals
	})
	tick := time.NewTicker(time.Second)
	for time.Since(t0) < b.duration {
		select {
		case <-ctx.Done():
			tick.Stop()
			stop()
			return nil, ctx.Err()
		case <-tick.C:
		}
		if r, err := rss(); err == nil && r > peak {
			peak = r
		}
	}
	tick.Stop()
	stop()
	cpu1, err := cpu()
	if err != nil {
		return nil, err
	}
	elapsed := time.Since(t0)
	last, err := rss()
	if err != nil {
		return nil, err
	}
	peak = max(peak, last)
	return []benchValue{
		num("delegates", float64(b.delegates), 0), num("elapsed_s", elapsed.Seconds(), 1),
		num("cpu_pct", float64(cpu1-cpu0)/clockTicks/elapsed.Seconds()*100, 2),
		num("rss_mib", float64(last)/(1<<20), 1), num("rss_peak_mib", float64(peak)/(1<<20), 1),
		num("calls_per_s", float64(calls.Load()-calls0)/elapsed.Seconds(), 0),
		num("failed_calls", float64(failures.Load()), 0),
	}, nil
}

// startDelegates makes n delegates with newDelegate and starts them,
// concurrency registrations at a time. It returns the delegates started,
// also when one failed.
func startDelegates(ctx context.Context, n, concurrency int, newDelegate func(i int) (*delegate.Delegate, error)) ([]*delegate.Delegate, error) {
	next := make(chan int)
	errc := make(chan error, concurrency)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var started []*delegate.Delegate
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				d, err := newDelegate(i)
				if err == nil {
					err = d.Start(ctx)
				}
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				started = append(started, d)
				mu.Unlock()
			}
		}()
	}
	var err error
feed:
	for i := 0; i < n; i++ {
		select {
		case next <- i:
		case err = <-errc:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	if err != nil {
		return started, fmt.Errorf("start delegates: %w", err)
	}
	return started, nil
}

// stopAll stops the delegates, many at a time.
func stopAll(delegates []*delegate.Delegate) {
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	for _, d := range delegates {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_ = d.Stop(context.Background())
		}()
	}
	wg.Wait()
}

// countingClient counts the heartbeats and acquires answered, and those
// that failed while the bench ran.
type countingClient struct {
	client.DelegateClient
	calls, failures *atomic.Int64
}

// Authenticated keeps counting with the delegate's own token.
func (c *countingClient) Authenticated(token string) client.DelegateClient {
	return &countingClient{DelegateClient: c.DelegateClient.Authenticated(token), calls: c.calls, failures: c.failures}
}

// Heartbeat counts a heartbeat.
func (c *countingClient) Heartbeat(ctx context.Context, id string, r *client.HeartbeatRequest) (*client.HeartbeatResponse, error) {
	resp, err := c.DelegateClient.Heartbeat(ctx, id, r)
	c.count(ctx, err)
	return resp, err
}

// Acquire counts a poll.
func (c *countingClient) Acquire(ctx context.Context, id string, r *client.AcquireRequest) (*client.AcquireResponse, error) {
	resp, err := c.DelegateClient.Acquire(ctx, id, r)
	c.count(ctx, err)
	return resp, err
}

func (c *countingClient) count(ctx context.Context, err error) {
	switch {
	case err == nil:
		c.calls.Add(1)
	case ctx.Err() == nil:
		c.failures.Add(1)
	}
}

// procCPUTicks returns the user plus system CPU time of a process, in
// clock ticks.
func procCPUTicks(pid int) (int64, error) {
	st, err := proc.Read("/proc", pid)
	if err != nil {
		return 0, fmt.Errorf("read process stat: %w", err)
	}
	return st.UTime + st.STime, nil
}

// procRSS returns the resident set size of a process in bytes.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, fmt.Errorf("read process status: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) != 2 || f[1] != "kB" {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmRSS: %w", err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
