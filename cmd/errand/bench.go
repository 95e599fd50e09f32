package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/delegate"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/internal/proc"
	"github.com/errandci/errand/manager"
	"github.com/errandci/errand/poller"
	"github.com/errandci/errand/router"
)

func init() { commands = append(commands, addBenchCommand) }

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat;
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// benchIdleConns bounds the idle connections the bench keeps, so that
// heartbeats reuse a few connections instead of one each.
const benchIdleConns = 1024

// idleBench is the configuration of `errand bench idle`.
type idleBench struct {
	delegates   int
	duration    time.Duration
	warmup      time.Duration
	wait        time.Duration
	interval    time.Duration
	concurrency int
	managerArgs []string
}

func addBenchCommand(app *kingpin.Application, g *globals) {
	cmd := app.Command("bench", "Measure the manager.")
	idle := cmd.Command("idle", "Start a manager, keep many delegates long-polling it with nothing to do, and report its memory and CPU.")
	var b idleBench
	idle.Flag("delegates", "Number of delegates.").Envar("ERRAND_BENCH_DELEGATES").Default("10000").IntVar(&b.delegates)
	idle.Flag("duration", "How long to measure once every delegate is polling.").Envar("ERRAND_BENCH_DURATION").Default("30s").DurationVar(&b.duration)
	idle.Flag("warmup", "How long to wait after the last delegate started polling before measuring.").Envar("ERRAND_BENCH_WARMUP").Default("5s").DurationVar(&b.warmup)
	// The delegates are the real ones of `errand delegate` (the delegate
	// package), polling and heartbeating with its defaults, so that the
	// figures are those of a real fleet.
	idle.Flag("wait", "Acquire long-poll wait (the delegate's default).").Envar("ERRAND_BENCH_WAIT").Default(poller.DefaultWait.String()).DurationVar(&b.wait)
	idle.Flag("heartbeat-interval", "Heartbeat interval the manager gives delegates (its default).").Envar("ERRAND_BENCH_HEARTBEAT_INTERVAL").
		Default(manager.DefaultHeartbeatInterval.String()).DurationVar(&b.interval)
	idle.Flag("concurrency", "Registrations in flight at once.").Envar("ERRAND_BENCH_CONCURRENCY").Default("32").IntVar(&b.concurrency)
	idle.Flag("manager-arg", "Extra argument of the manager (repeatable).").Envar("ERRAND_BENCH_MANAGER_ARG").StringsVar(&b.managerArgs)
	idle.Action(g.action(func(ctx context.Context) error {
		if b.delegates < 1 || b.duration <= 0 || b.concurrency < 1 {
			return usageErrorf("--delegates, --duration and --concurrency must be positive")
		}
		return b.run(ctx, g.Stdout, g.Stderr)
	}))
}

func (b *idleBench) run(ctx context.Context, stdout, stderr io.Writer) error {
	// One connection per long-poll, plus the idle pool and the
	// heartbeats in flight.
	if err := raiseOpenFiles(uint64(b.delegates + 2*benchIdleConns)); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "errand-bench-")
	if err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	defer os.RemoveAll(dir)

	proc, url, err := b.startManager(ctx, dir, stderr)
	if err != nil {
		return err
	}
	defer proc.stop()
	_, regPath := manager.TokenPaths(dir)
	regToken, err := os.ReadFile(regPath)
	if err != nil {
		return fmt.Errorf("read registration token: %w", err)
	}

	log := logrus.New()
	log.SetOutput(io.Discard)
	hc := &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConns:        benchIdleConns,
		MaxIdleConnsPerHost: benchIdleConns,
		IdleConnTimeout:     2 * b.wait,
	}}
	var failures, calls atomic.Int64
	c := &countingClient{
		DelegateClient: client.New(url, strings.TrimSpace(string(regToken)), client.WithHTTPClient(hc), client.WithLogger(logrus.NewEntry(log))),
		calls:          &calls, failures: &failures,
	}
	r := router.New(router.WithLogger(log))
	r.HandleFunc(benchTaskType, func(w http.ResponseWriter, _ *http.Request) {
		httphelper.WriteJSON(w, map[string]any{}, http.StatusOK)
	})

	started := time.Now()
	delegates, err := b.startAll(ctx, func(i int) (*delegate.Delegate, error) {
		return delegate.New(delegate.Config{
			Name: "bench-" + strconv.Itoa(i), Hostname: "bench", Capacity: 1, StateDir: dir,
			Client: c, Identity: &delegate.MemoryIdentity{}, HeartbeatInterval: b.interval,
			Poller: poller.Config{Wait: b.wait}, Log: log,
		}, r)
	})
	defer stopAll(delegates)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "registered %d delegates in %s; all long-polling\n", b.delegates, time.Since(started).Round(time.Millisecond))

	if err := sleepCtx(ctx, b.warmup); err != nil {
		return err
	}
	cpu0, err := procCPUTicks(proc.pid())
	if err != nil {
		return err
	}
	calls0 := calls.Load()
	t0 := time.Now()
	var peak int64
	tick := time.NewTicker(time.Second)
	for time.Since(t0) < b.duration {
		select {
		case <-ctx.Done():
			tick.Stop()
			return ctx.Err()
		case <-tick.C:
		}
		if rss, err := procRSS(proc.pid()); err == nil && rss > peak {
			peak = rss
		}
	}
	tick.Stop()
	cpu1, err := procCPUTicks(proc.pid())
	if err != nil {
		return err
	}
	elapsed := time.Since(t0)
	callRate := float64(calls.Load()-calls0) / elapsed.Seconds()
	rss, err := procRSS(proc.pid())
	if err != nil {
		return err
	}
	peak = max(peak, rss)
	cpuPct := float64(cpu1-cpu0) / clockTicks / elapsed.Seconds() * 100
	fmt.Fprintf(stdout, "delegates:        %d (heartbeat every %s, acquire wait %s)\n", b.delegates, b.interval, b.wait)
	fmt.Fprintf(stdout, "measured for:     %s\n", elapsed.Round(time.Millisecond))
	fmt.Fprintf(stdout, "manager RSS:      %.1f MiB (peak %.1f MiB)\n", float64(rss)/(1<<20), float64(peak)/(1<<20))
	fmt.Fprintf(stdout, "manager CPU:      %.2f %% of one core\n", cpuPct)
	fmt.Fprintf(stdout, "delegate calls:   %.0f/s (heartbeats and acquires answered)\n", callRate)
	fmt.Fprintf(stdout, "failed calls:     %d\n", failures.Load())
	return nil
}

// benchTaskType is the one task type the bench's delegates serve; the
// bench queues none.
const benchTaskType = "bench.noop"

// startAll makes b.delegates delegates with newDelegate and starts them,
// b.concurrency registrations at a time. It returns the delegates started,
// also when one failed.
func (b *idleBench) startAll(ctx context.Context, newDelegate func(i int) (*delegate.Delegate, error)) ([]*delegate.Delegate, error) {
	next := make(chan int)
	errc := make(chan error, b.concurrency)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var started []*delegate.Delegate
	for w := 0; w < b.concurrency; w++ {
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
	for i := 0; i < b.delegates; i++ {
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

// benchManager is the manager process under measurement.
type benchManager struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (m *benchManager) pid() int { return m.cmd.Process.Pid }

// stop asks the manager to stop and waits, killing it after a while.
func (m *benchManager) stop() {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
}

func (b *idleBench) startManager(ctx context.Context, dir string, stderr io.Writer) (*benchManager, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", fmt.Errorf("find the errand binary: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", fmt.Errorf("find a free port: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	args := append([]string{"manager", "--listen", addr, "--data-dir", dir, "--log-level", "warn",
		"--heartbeat-interval", b.interval.String()}, b.managerArgs...)
	cmd := exec.Command(self, args...)
	cmd.Stdout = io.Discard
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start manager: %w", err)
	}
	m := &benchManager{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(m.done)
	}()
	url := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m, url, nil
			}
		}
		select {
		case <-m.done:
			return nil, "", errors.New("manager exited before it was ready")
		case <-ctx.Done():
			m.stop()
			return nil, "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.stop()
			return nil, "", errors.New("manager not ready after 30s")
		}
	}
}

// raiseOpenFiles raises the soft limit of open files to want, or to the
// hard limit if that is lower. The manager inherits it.
func raiseOpenFiles(want uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read open files limit: %w", err)
	}
	if lim.Cur >= want {
		return nil
	}
	lim.Cur = min(want, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise open files limit to %d: %w", lim.Cur, err)
	}
	if lim.Cur < want {
		return fmt.Errorf("open files limit is %d, %d are needed: raise the hard limit (ulimit -Hn)", lim.Cur, want)
	}
	return nil
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

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
