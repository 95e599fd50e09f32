// Package jsonnetbox evaluates untrusted Jsonnet in a child process that
// can be bounded and killed: go-jsonnet cannot be interrupted, and a
// program that recurses without end, allocates without end or loops for
// ever would otherwise crash, starve or outlive its limits in the
// process that evaluates it.
//
// The child is the running program itself, started again with an
// environment variable that ServeIfChild, called first thing in main,
// recognises. The child limits its own memory (RLIMIT_DATA and a soft Go
// memory limit), CPU time (RLIMIT_CPU) and goroutine stack; the parent
// kills its process group at a wall-clock deadline, bounds its output and
// bounds how many children run at once.
package jsonnetbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Defaults and bounds of Limits.
const (
	// DefaultTimeout bounds an evaluation's wall-clock time.
	DefaultTimeout = 10 * time.Second
	// DefaultMemory bounds an evaluation's memory.
	DefaultMemory = 256 << 20
	// MinMemory is the smallest memory limit accepted: below it the Go
	// runtime of the child has no room to evaluate anything.
	MinMemory = 64 << 20
	// DefaultMaxOutput bounds the JSON an evaluation may produce.
	DefaultMaxOutput = 16 << 20
	// MaxRunning bounds the evaluations running at once.
	MaxRunning = 4
	// maxStderr bounds what is kept of the child's standard error.
	maxStderr = 64 << 10
	// maxRequest bounds the request the child reads on its standard input.
	maxRequest = 64 << 20
	// waitDelay is how long the parent waits for the child's pipes after
	// killing it.
	waitDelay = 2 * time.Second
)

// Sentinel errors of an evaluation that hit a limit; the error returned
// wraps one and names the limit's value.
var (
	// ErrTimeLimit is an evaluation that ran past its time limit (wall
	// clock or CPU), or waited that long for a free slot.
	ErrTimeLimit = errors.New("Jsonnet evaluation exceeded its time limit")
	// ErrMemoryLimit is an evaluation that needed more memory than its
	// limit.
	ErrMemoryLimit = errors.New("Jsonnet evaluation exceeded its memory limit")
	// ErrStackOverflow is an evaluation that recursed too deep.
	ErrStackOverflow = errors.New("Jsonnet evaluation failed: stack overflow (deep recursion)")
	// ErrOutputLimit is an evaluation whose JSON output is too large.
	ErrOutputLimit = errors.New("Jsonnet evaluation exceeded its output limit")
	// ErrNoEvaluator is returned when this program cannot serve as the
	// child: ServeIfChild was not called at the start of main.
	ErrNoEvaluator = errors.New("no Jsonnet evaluator: this program does not call pipeline.ServeJsonnet at the start of main")
)

// Limits bound one evaluation. Zero fields take their defaults.
type Limits struct {
	// Timeout bounds the wall-clock time, waiting for a slot included;
	// the child's CPU time is bounded by it too.
	Timeout time.Duration
	// Memory bounds the child's memory in bytes (at least MinMemory).
	Memory int64
	// MaxOutput bounds the JSON output in bytes.
	MaxOutput int64
}

// withDefaults returns l with its zero fields set.
func (l Limits) withDefaults() Limits {
	if l.Timeout <= 0 {
		l.Timeout = DefaultTimeout
	}
	if l.Memory <= 0 {
		l.Memory = DefaultMemory
	}
	if l.MaxOutput <= 0 {
		l.MaxOutput = DefaultMaxOutput
	}
	return l
}

// Validate reports a limit that cannot work.
func (l Limits) Validate() error {
	if l.Timeout < 0 {
		return fmt.Errorf("Jsonnet time limit must not be negative, not %s", l.Timeout)
	}
	if l.Memory != 0 && l.Memory < MinMemory {
		return fmt.Errorf("Jsonnet memory limit must be at least %s, not %s", FormatBytes(MinMemory), FormatBytes(l.Memory))
	}
	return nil
}

// Request is one program to evaluate.
type Request struct {
	// Filename names the program in errors (file:line).
	Filename string `json:"filename"`
	// Source is the program.
	Source string `json:"source"`
	// ExtStr are its external variables (std.extVar);
	// std.native('extVarOr')(name, default) reads one with a default.
	ExtStr map[string]string `json:"ext_str,omitempty"`
	// ImportDir is the directory imports are read from, relative to the
	// importing file and never outside it; empty refuses every import.
	ImportDir string `json:"import_dir,omitempty"`
	// MaxImportSize bounds one imported file; 4 MiB when 0.
	MaxImportSize int64 `json:"max_import_size,omitempty"`
	// MaxStack bounds Jsonnet's own call stack (frames); 500 when 0.
	MaxStack int `json:"max_stack,omitempty"`
}

var (
	mu sync.Mutex
	// served is set by ServeIfChild: this program can be its own child.
	served bool
)

// slots bounds the children running at once; a slot is freed when its
// child has ended, killed or not.
var slots = make(chan struct{}, MaxRunning)

// helperPath returns the program to run as the child.
func helperPath() (string, error) {
	mu.Lock()
	defer mu.Unlock()
	if !served {
		return "", ErrNoEvaluator
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the Jsonnet evaluator: %w", err)
	}
	return exe, nil
}

// Evaluate runs a Jsonnet program in a child process bounded by limits
// and returns its JSON output. An error from the program names its
// file:line; an error of a limit wraps ErrTimeLimit, ErrMemoryLimit,
// ErrStackOverflow or ErrOutputLimit.
func Evaluate(ctx context.Context, req Request, limits Limits) ([]byte, error) {
	if err := limits.Validate(); err != nil {
		return nil, err
	}
	l := limits.withDefaults()
	exe, err := helperPath()
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode Jsonnet request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, l.Timeout)
	defer cancel()
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		if ctx.Err() == context.DeadlineExceeded {
			return nil, fmt.Errorf("%w of %s waiting for one of %d evaluation slots", ErrTimeLimit, l.Timeout, MaxRunning)
		}
		return nil, ctx.Err()
	}
	defer func() { <-slots }()
	return run(ctx, cancel, exe, body, l)
}

// run starts the child, feeds it the request and waits for it, killing
// its process group at ctx's end or when its output grows past the limit.
func run(ctx context.Context, cancel context.CancelFunc, exe string, body []byte, l Limits) ([]byte, error) {
	cmd := exec.CommandContext(ctx, exe)
	// The child gets nothing of this process's environment: no tokens,
	// no secrets.
	cmd.Env = []string{
		childEnv + "=" + childSpec{Memory: l.Memory, CPUSeconds: cpuSeconds(l.Timeout), MaxOutput: l.MaxOutput}.String(),
		"GOMAXPROCS=1",
		"GOTRACEBACK=none",
	}
	// The child dies with the thread that started it (Pdeathsig), so that
	// thread is kept until the child has ended.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay
	cmd.Stdin = bytes.NewReader(body)
	stdout := &capWriter{max: l.MaxOutput, onFull: cancel}
	stderr := &capWriter{max: maxStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr

	err := cmd.Run()
	switch {
	case stdout.full:
		return nil, fmt.Errorf("%w of %s", ErrOutputLimit, FormatBytes(l.MaxOutput))
	case err == nil:
		return stdout.buf.Bytes(), nil
	case ctx.Err() == context.DeadlineExceeded:
		return nil, fmt.Errorf("%w of %s", ErrTimeLimit, l.Timeout)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("Jsonnet evaluation stopped: %w", ctx.Err())
	}
	return nil, childError(err, stderr.buf.String(), l)
}

// childError explains why the child failed from its exit status and what
// it wrote on standard error.
func childError(err error, stderr string, l Limits) error {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return fmt.Errorf("run the Jsonnet evaluator: %w", err)
	}
	if ee.ExitCode() == exitEvalError {
		var ce childErr
		if json.Unmarshal([]byte(strings.TrimSpace(stderr)), &ce) == nil && ce.Message != "" {
			if ce.Kind == kindOutput {
				return fmt.Errorf("%w of %s", ErrOutputLimit, FormatBytes(l.MaxOutput))
			}
			return errors.New(ce.Message)
		}
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && (ws.Signal() == syscall.SIGKILL || ws.Signal() == syscall.SIGXCPU) {
		// Not killed by us (that is the deadline, handled before): the
		// kernel ended it at its CPU-time limit.
		return fmt.Errorf("%w of %s (CPU time)", ErrTimeLimit, l.Timeout)
	}
	switch {
	case strings.Contains(stderr, "stack overflow") || strings.Contains(stderr, "stack exceeds"):
		return ErrStackOverflow
	case strings.Contains(stderr, "out of memory") || strings.Contains(stderr, "cannot allocate memory") ||
		strings.Contains(stderr, "failed to create new OS thread") || strings.Contains(stderr, "ThreadSanitizer failed to allocate"):
		return fmt.Errorf("%w of %s", ErrMemoryLimit, FormatBytes(l.Memory))
	}
	// A runtime that cannot map memory under RLIMIT_DATA does not always
	// say so: it may die of SIGSEGV instead. A child that used at least
	// half of its limit before it died ran out of memory.
	if ru, ok := ee.SysUsage().(*syscall.Rusage); ok && ru.Maxrss*1024 >= int64(l.Memory)/2 {
		return fmt.Errorf("%w of %s", ErrMemoryLimit, FormatBytes(l.Memory))
	}
	msg := strings.TrimSpace(stderr)
	if first, _, ok := strings.Cut(msg, "\n"); ok {
		msg = first
	}
	return fmt.Errorf("Jsonnet evaluator failed (%s): %s", ee, msg)
}

// cpuSeconds is the CPU-time limit of a child with the given wall-clock
// limit: a second more, rounded up, so that the wall clock usually wins
// and the CPU limit stops a child whose parent is gone.
func cpuSeconds(timeout time.Duration) uint64 {
	return uint64((timeout+time.Second-1)/time.Second) + 1
}

// capWriter keeps up to max bytes. Past max it drops the rest, sets full
// and calls onFull (once).
type capWriter struct {
	max    int64
	onFull func()
	buf    bytes.Buffer
	full   bool
}

func (w *capWriter) Write(p []byte) (int, error) {
	if w.full {
		return len(p), nil
	}
	if room := w.max - int64(w.buf.Len()); int64(len(p)) > room {
		w.buf.Write(p[:max(room, 0)])
		w.full = true
		if w.onFull != nil {
			w.onFull()
		}
		return len(p), nil
	}
	return w.buf.Write(p)
}

// FormatBytes writes a size the way limits are written: 256 MiB, 64 KiB,
// 1000 B.
func FormatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
