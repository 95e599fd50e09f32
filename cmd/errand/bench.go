package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/client"
)

// `errand bench` measures the path a real task takes: managers started
// as their own processes on loopback (SQLite, or replicas on one
// PostgreSQL), real delegates speaking HTTP to them, real runtimes. Every
// bench prints lines of one format, `bench=NAME phase=PHASE key=value…`
// (or the same as JSON objects, one a line, with --json): a progress line
// every --interval and a final line; --baseline compares the final line
// with the final line of an earlier --json run.

func init() { commands = append(commands, addBenchCommand) }

func addBenchCommand(app *kingpin.Application, g *globals) {
	cmd := app.Command("bench", "Measure Errand on the path a real task takes, and compare with a baseline.")
	addDispatchBench(cmd, g)
	addPickupBench(cmd, g)
	addLogsBench(cmd, g)
	addIdleBench(cmd, g)
	addDockerBench(cmd, g)
	addStepBench(cmd, g)
}

// benchOpts are the flags every bench shares.
type benchOpts struct {
	name        string
	store       string
	replicas    int
	delegates   int
	duration    time.Duration
	count       int
	interval    time.Duration
	json        bool
	baseline    string
	managerArgs []string
	profile     *cpuProfile
}

// benchDefaults are a bench's defaults of the shared flags; a zero
// delegates leaves --delegates out, noStore leaves --store and
// --replicas out.
type benchDefaults struct {
	delegates int
	count     int
	duration  time.Duration
	noStore   bool
}

func newBenchOpts(cmd *kingpin.CmdClause, name string, d benchDefaults) *benchOpts {
	o := &benchOpts{name: name}
	if !d.noStore {
		cmd.Flag("store", "Task store of the managers: sqlite, or a postgres:// URL (the bench's tasks have a type of their own).").
			Envar("ERRAND_BENCH_STORE").Default("sqlite").StringVar(&o.store)
		cmd.Flag("replicas", "Managers sharing the store (more than 1 needs PostgreSQL); delegates are spread over them.").
			Envar("ERRAND_BENCH_REPLICAS").Default("1").IntVar(&o.replicas)
	} else {
		o.store, o.replicas = "sqlite", 1
	}
	if d.delegates > 0 {
		cmd.Flag("delegates", "Number of delegates.").Envar("ERRAND_BENCH_DELEGATES").Default(strconv.Itoa(d.delegates)).IntVar(&o.delegates)
	}
	cmd.Flag("duration", "How long to measure, when -n is 0.").Envar("ERRAND_BENCH_DURATION").Default(d.duration.String()).DurationVar(&o.duration)
	cmd.Flag("count", "Burn-down: how many to measure, then stop (0: run for --duration).").Short('n').
		Envar("ERRAND_BENCH_COUNT").Default(strconv.Itoa(d.count)).IntVar(&o.count)
	cmd.Flag("interval", "How often to print a progress line.").Envar("ERRAND_BENCH_INTERVAL").Default("2s").DurationVar(&o.interval)
	cmd.Flag("json", "Print each line as a JSON object.").Envar("ERRAND_BENCH_JSON").BoolVar(&o.json)
	cmd.Flag("baseline", "Compare the final figures with the final line of this bench in FILE (the output of an earlier --json run).").
		Envar("ERRAND_BENCH_BASELINE").PlaceHolder("FILE").StringVar(&o.baseline)
	cmd.Flag("manager-arg", "Extra argument of each manager (repeatable), e.g. --manager-arg=--cpu-profile=m.pprof.").
		Envar("ERRAND_BENCH_MANAGER_ARG").StringsVar(&o.managerArgs)
	o.profile = addCPUProfileFlag(cmd, "ERRAND_BENCH_CPU_PROFILE")
	return o
}

// check refuses flags that cannot work together.
func (o *benchOpts) check() error {
	switch {
	case o.replicas < 1:
		return usageErrorf("--replicas must be at least 1")
	case o.replicas > 1 && !isPostgres(o.store):
		return usageErrorf("--replicas %d needs a shared store: --store postgres://…", o.replicas)
	case o.store != "sqlite" && !isPostgres(o.store):
		return usageErrorf("--store must be sqlite or a postgres:// URL")
	case o.count < 0:
		return usageErrorf("-n must not be negative")
	case o.count == 0 && o.duration <= 0:
		return usageErrorf("--duration must be positive when -n is 0")
	case o.interval <= 0:
		return usageErrorf("--interval must be positive")
	}
	if o.baseline != "" {
		if _, err := os.Stat(o.baseline); err != nil {
			return usageErrorf("--baseline: %v", err)
		}
	}
	return nil
}

func isPostgres(store string) bool {
	return strings.HasPrefix(store, "postgres://") || strings.HasPrefix(store, "postgresql://")
}

// action runs a bench with its checks, output and baseline.
func (o *benchOpts) action(g *globals, check func() error, run func(ctx context.Context, out *benchOut) ([]benchValue, error)) kingpin.Action {
	return g.action(func(ctx context.Context) error {
		if err := o.check(); err != nil {
			return err
		}
		if check != nil {
			if err := check(); err != nil {
				return err
			}
		}
		out := &benchOut{bench: o.name, json: o.json, w: g.Stdout}
		// The bench's own process holds the delegates of dispatch, pickup,
		// logs and idle.
		if err := o.profile.start(); err != nil {
			return err
		}
		final, err := run(ctx, out)
		if perr := o.profile.stop(); err == nil {
			err = perr
		}
		if err != nil {
			return err
		}
		out.line("final", final...)
		if o.baseline != "" {
			return out.compare(o.baseline, final)
		}
		return nil
	})
}

// benchValue is one figure of a line: a number with its precision, or a
// word.
type benchValue struct {
	key  string
	num  float64
	prec int
	word string
}

func num(key string, v float64, prec int) benchValue { return benchValue{key: key, num: v, prec: prec} }
func word(key, v string) benchValue                  { return benchValue{key: key, word: v} }
func ms(key string, d time.Duration) benchValue {
	return num(key, float64(d.Microseconds())/1000, 2)
}

// benchOut prints a bench's lines.
type benchOut struct {
	bench string
	json  bool
	mu    sync.Mutex
	w     io.Writer
}

// line prints one line of phase.
func (o *benchOut) line(phase string, vals ...benchValue) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.json {
		var b bytes.Buffer
		fmt.Fprintf(&b, `{"bench":%q,"phase":%q`, o.bench, phase)
		for _, v := range vals {
			if v.word != "" {
				fmt.Fprintf(&b, `,%q:%q`, v.key, v.word)
			} else {
				fmt.Fprintf(&b, `,%q:%s`, v.key, jsonNumber(v.num, v.prec))
			}
		}
		b.WriteString("}\n")
		_, _ = o.w.Write(b.Bytes())
		return
	}
	parts := []string{"bench=" + o.bench, "phase=" + phase}
	for _, v := range vals {
		if v.word != "" {
			parts = append(parts, v.key+"="+v.word)
		} else {
			parts = append(parts, v.key+"="+strconv.FormatFloat(v.num, 'f', v.prec, 64))
		}
	}
	fmt.Fprintln(o.w, strings.Join(parts, " "))
}

func jsonNumber(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "null"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

// progress prints a progress line from fn every interval until the
// returned stop is called.
func (o *benchOut) progress(interval time.Duration, fn func() []benchValue) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				o.line("progress", fn()...)
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// compare prints, for each figure of the final line that the baseline's
// final line of the same bench has too, both and the change.
func (o *benchOut) compare(path string, final []benchValue) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read baseline: %w", err)
	}
	defer f.Close()
	var base map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["bench"] == o.bench && m["phase"] == "final" {
			base = m
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read baseline %s: %w", path, err)
	}
	if base == nil {
		return fmt.Errorf("baseline %s has no final line of `errand bench %s` (make one with --json)", path, o.bench)
	}
	for _, v := range final {
		b, ok := base[v.key].(float64)
		if v.word != "" || !ok {
			continue
		}
		change := math.NaN()
		if b != 0 {
			change = (v.num - b) / math.Abs(b) * 100
		}
		o.line("baseline", word("metric", v.key), num("now", v.num, v.prec), num("baseline", b, v.prec), num("change_pct", change, 1))
	}
	return nil
}

// percentileOf returns the p-th quantile of d (which it sorts).
func percentileOf(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// benchIdleConns bounds the idle connections a bench keeps.
const benchIdleConns = 1024

// benchEnv is the managers a bench runs against.
type benchEnv struct {
	dir          string
	urls         []string
	admin, reg   string
	procs        []*benchManager
	hc           *http.Client
	log          *logrus.Logger
	delegateLogs io.Writer
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// startEnv starts o.replicas managers on o.store, one after the other
// (the first migrates the schema), with tokens of the bench's own.
func (o *benchOpts) startEnv(ctx context.Context, stderr io.Writer, extra ...string) (*benchEnv, error) {
	dir, err := os.MkdirTemp("", "errand-bench-")
	if err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	e := &benchEnv{dir: dir, admin: randomHex(24), reg: randomHex(24), log: log, delegateLogs: stderr,
		hc: &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			MaxIdleConns:        benchIdleConns,
			MaxIdleConnsPerHost: benchIdleConns,
			IdleConnTimeout:     2 * time.Minute,
		}}}
	for i := range o.replicas {
		args := append([]string{"--store", o.store}, extra...)
		args = append(args, o.managerArgs...)
		m, url, err := startBenchManager(ctx, filepath.Join(dir, fmt.Sprintf("m%d", i)), e.admin, e.reg, stderr, args...)
		if err != nil {
			e.close()
			return nil, fmt.Errorf("manager %d: %w", i, err)
		}
		e.procs = append(e.procs, m)
		e.urls = append(e.urls, url)
	}
	return e, nil
}

// close stops the managers and removes their data.
func (e *benchEnv) close() {
	var wg sync.WaitGroup
	for _, m := range e.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.stop()
		}()
	}
	wg.Wait()
	_ = os.RemoveAll(e.dir)
}

// user returns a client of replica i with the admin token.
func (e *benchEnv) user(i int) *client.HTTP {
	return client.New(e.urls[i%len(e.urls)], e.admin, client.WithHTTPClient(e.hc), client.WithLogger(logrus.NewEntry(e.log)))
}

// registrar returns a client of replica i with the registration token.
func (e *benchEnv) registrar(i int) *client.HTTP {
	return client.New(e.urls[i%len(e.urls)], e.reg, client.WithHTTPClient(e.hc), client.WithLogger(logrus.NewEntry(e.log)))
}

// waiting returns how many acquires wait on replica i.
func (e *benchEnv) waiting(ctx context.Context, i int) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.urls[i%len(e.urls)]+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+e.admin)
	resp, err := e.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "errand_acquires_waiting "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(f), err
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return 0, errors.New("the manager's metrics have no errand_acquires_waiting")
}

// startDelegateProc starts `errand delegate` against replica i.
func (e *benchEnv) startDelegateProc(ctx context.Context, i int, name string, args ...string) (*benchManager, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the errand binary: %w", err)
	}
	state := filepath.Join(e.dir, "delegate-"+name)
	all := append([]string{"delegate", "--manager", e.urls[i%len(e.urls)], "--name", name, "--state-dir", state, "--log-level", "warn"}, args...)
	cmd := exec.CommandContext(ctx, self, all...)
	cmd.Env = append(os.Environ(), "ERRAND_TOKEN="+e.reg)
	cmd.Stdout, cmd.Stderr = io.Discard, e.delegateLogs
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start delegate: %w", err)
	}
	m := &benchManager{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(m.done)
	}()
	return m, nil
}

// waitDelegate waits until a delegate called name is active.
func (e *benchEnv) waitDelegate(ctx context.Context, name string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err := e.user(0).ListDelegates(ctx)
		if err == nil {
			for _, d := range l.Items {
				if d.Name == name && d.State == "active" {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("delegate %s not active after 30s", name)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// benchManager is a process the bench started: a manager or a delegate.
type benchManager struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (m *benchManager) pid() int { return m.cmd.Process.Pid }

// stop asks the process to stop and waits, killing it after a while.
func (m *benchManager) stop() {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
}

// startBenchManager starts `errand manager` on a free loopback port with
// data dir dir and the given tokens (passed in its environment, not its
// arguments), and waits until it is ready.
func startBenchManager(ctx context.Context, dir, admin, reg string, stderr io.Writer, extra ...string) (*benchManager, string, error) {
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
	args := append([]string{"manager", "--listen", addr, "--data-dir", dir, "--log-level", "warn"}, extra...)
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), "ERRAND_ADMIN_TOKEN="+admin, "ERRAND_REGISTRATION_TOKEN="+reg)
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
	deadline := time.Now().Add(60 * time.Second)
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
			return nil, "", errors.New("manager not ready after 60s")
		}
	}
}

// raiseOpenFiles raises the soft limit of open files to want, or to the
// hard limit if that is lower. The managers inherit it.
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

// benchTaskType returns a task type of the bench's own, so that tasks
// left in a shared store by another run are never the bench's.
func benchTaskType() string { return "bench.noop." + randomHex(4) }
