package exec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/proc"
	"github.com/errandci/errand/tasks/runtime"
)

// pipeDrain bounds the wait for a step's output after its processes were
// killed: a process that left the group may hold the pipe open.
const pipeDrain = 2 * time.Second

// Start runs one step: its script read by the shell, in the workspace,
// with the delegate's environment (less its ERRAND_ settings) and the
// step's, in a process group of its own. The group dies with the
// delegate (see procs.go).
func (d driver) Start(_ context.Context, s *runtime.Step) (runtime.Handle, error) {
	h := d.h
	ws, err := h.workspace(s.Stage)
	if err != nil {
		return nil, err
	}
	dir, err := workingDir(ws, s.WorkingDir)
	if err != nil {
		return nil, err
	}
	args := append(s.Shell[1:len(s.Shell):len(s.Shell)], "-c", s.Script)
	cmd := osexec.Command(s.Shell[0], args...)
	cmd.Dir = dir
	cmd.Env = append(hostEnv(), s.Env(ws)...)
	return h.start(cmd, s.Output.Stream())
}

// workingDir creates the step's working directory rel (checked by the
// handlers: relative, cleaned) in the workspace. It walks the path one
// component at a time from the workspace, each opened relative to its
// parent without following symbolic links, so that a link in the
// workspace can never make it create (or enter) a directory outside.
func workingDir(ws, rel string) (string, error) {
	if rel == "" {
		return ws, nil
	}
	dir := filepath.Join(ws, rel)
	fd, err := syscall.Open(ws, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return "", errand.Errorf(errand.CodeTaskFailed, "open workspace: %v", err)
	}
	defer func() { syscall.Close(fd) }()
	for _, name := range strings.Split(rel, "/") {
		next, err := openDirAt(fd, name)
		if err != nil {
			if errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.ENOTDIR) {
				return "", errand.Errorf(errand.CodeInvalid, "working_dir %q leads outside the workspace: %s is a symbolic link or not a directory", rel, name)
			}
			return "", errand.Errorf(errand.CodeTaskFailed, "create working_dir %q: %s: %v", rel, name, err)
		}
		syscall.Close(fd)
		fd = next
	}
	return dir, nil
}

// openDirAt opens the directory name in the directory parent, creating
// it when it does not exist, never through a symbolic link.
func openDirAt(parent int, name string) (int, error) {
	const flags = syscall.O_RDONLY | syscall.O_DIRECTORY | syscall.O_NOFOLLOW | syscall.O_CLOEXEC
	fd, err := syscall.Openat(parent, name, flags, 0)
	if errors.Is(err, syscall.ENOENT) {
		if err := syscall.Mkdirat(parent, name, 0o750); err != nil && !errors.Is(err, syscall.EEXIST) {
			return -1, err
		}
		fd, err = syscall.Openat(parent, name, flags, 0)
	}
	return fd, err
}

// hostEnv is the delegate's own environment without its ERRAND_
// settings (which hold its token).
func hostEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ERRAND_") {
			env = append(env, kv)
		}
	}
	return env
}

// step is a started step: its shell, the leader of its process group.
type step struct {
	h       *Handlers
	cmd     *osexec.Cmd
	pgid    int
	started time.Time
	pr      *os.File // the read end of the output pipe
	waited  chan struct{}
	copied  chan struct{}
	wd      *watchdog
	forget  func()

	destroy sync.Once
}

// start starts cmd in a process group of its own with its output copied
// to out.
func (h *Handlers) start(cmd *osexec.Cmd, out io.Writer) (*step, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, errand.Errorf(errand.CodeTaskFailed, "output pipe: %v", err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	type startResult struct {
		err  error
		stat proc.Stat
	}
	started := make(chan startResult, 1)
	s := &step{h: h, cmd: cmd, started: time.Now(), pr: pr, waited: make(chan struct{}), copied: make(chan struct{}), forget: func() {}}
	go func() {
		defer close(s.waited)
		// The parent-death signal is sent when the thread that forked
		// ends: keep it until the shell has been waited for.
		goruntime.LockOSThread()
		defer goruntime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- startResult{err: err}
			return
		}
		// Read before Wait: the shell cannot be reaped in between.
		st, err := proc.Read("/proc", cmd.Process.Pid)
		started <- startResult{err: err, stat: st}
		_ = cmd.Wait()
	}()
	sr := <-started
	pw.Close()
	if cmd.Process == nil {
		<-s.waited
		pr.Close()
		if errors.Is(sr.err, osexec.ErrNotFound) || errors.Is(sr.err, os.ErrNotExist) {
			return nil, fmt.Errorf("start %s: %w", cmd.Path, runtime.ErrShellNotFound)
		}
		return nil, errand.Errorf(errand.CodeTaskFailed, "start %s: %v", cmd.Path, sr.err)
	}
	s.pgid = cmd.Process.Pid
	h.track(s.pgid, true)
	if sr.err == nil {
		if s.forget, err = h.record(s.pgid, sr.stat.Start); err != nil {
			h.logger().WithError(err).Warn("cannot record a step's processes: a restarted delegate would not find them")
		}
	}
	if s.wd, err = startWatchdog(s.pgid); err != nil {
		h.logger().WithError(err).Warn("no watchdog for a step: its children may outlive a killed delegate")
	}
	go func() {
		defer close(s.copied)
		_, _ = io.Copy(out, pr)
	}()
	return s, nil
}

// Wait waits for the shell to exit.
func (s *step) Wait(ctx context.Context) (runtime.Exit, error) {
	select {
	case <-s.waited:
		return runtime.Exit{Code: exitCode(s.cmd.ProcessState)}, nil
	case <-ctx.Done():
		return runtime.Exit{}, ctx.Err()
	}
}

// Stop sends SIGTERM to the step's process group, SIGKILL after the
// grace, and waits for the shell to exit.
func (s *step) Stop(ctx context.Context, grace time.Duration) error {
	_ = syscall.Kill(-s.pgid, syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-s.waited:
		return nil
	case <-timer.C:
	case <-ctx.Done():
	}
	_ = syscall.Kill(-s.pgid, syscall.SIGKILL)
	<-s.waited
	return nil
}

// Destroy kills whatever is left of the step's process group once the
// shell exited, stops its watchdog and waits, for a bounded time, for
// the end of its output.
func (s *step) Destroy(context.Context) error {
	s.destroy.Do(func() {
		_ = syscall.Kill(-s.pgid, syscall.SIGKILL)
		<-s.waited
		if s.wd != nil {
			s.wd.stop()
		}
		select {
		case <-s.copied:
		case <-time.After(pipeDrain):
			s.pr.Close()
			<-s.copied
		}
		s.pr.Close()
		s.forget()
		s.h.track(s.pgid, false)
	})
	return nil
}

// Inspect says whether the shell runs.
func (s *step) Inspect(context.Context) (runtime.Status, error) {
	st := runtime.Status{Running: true, StartedAt: s.started}
	select {
	case <-s.waited:
		st.Running = false
		st.Exit = &runtime.Exit{Code: exitCode(s.cmd.ProcessState)}
	default:
	}
	return st, nil
}

func (h *Handlers) killGrace() time.Duration {
	if h.KillGrace > 0 {
		return h.KillGrace
	}
	return DefaultKillGrace
}

// exitCode is the shell's convention: the status, or 128 + the signal
// that killed the process.
func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
