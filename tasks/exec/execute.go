package exec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/internal/proc"
	"github.com/errandci/errand/livelog"
	"github.com/errandci/errand/router"
	"github.com/errandci/errand/tasks"
)

// pipeDrain bounds the wait for a step's output after its processes were
// killed: a process that left the group may hold the pipe open.
const pipeDrain = 2 * time.Second

// Execute runs one step: its commands as one script read by the shell,
// in the workspace, with the step's environment and secrets, output lines
// shipped to the task log as they come.
func (h *Handlers) Execute(w http.ResponseWriter, r *http.Request) {
	var data tasks.ExecuteData
	t, err := decodeTask(r, &data)
	if err != nil {
		httphelper.WriteError(w, err)
		return
	}
	if len(data.Commands) == 0 {
		httphelper.WriteError(w, errand.Errorf(errand.CodeInvalid, "%v", errNoCommands))
		return
	}
	ws, err := h.workspace(t)
	if err != nil {
		httphelper.WriteError(w, err)
		return
	}
	dir, err := workingDir(ws, data.WorkingDir)
	if err != nil {
		httphelper.WriteError(w, err)
		return
	}
	shell := strings.Fields(data.Shell)
	if len(shell) == 0 {
		shell = strings.Fields(DefaultShell)
	}

	logs := router.LogFrom(r.Context())
	secrets := make([]string, 0, len(data.Secrets))
	for _, v := range data.Secrets {
		secrets = append(secrets, v)
	}
	var masker *maskWriter
	if m, ok := logs.(router.Masker); ok {
		m.Mask(secrets...)
	} else if len(secrets) > 0 {
		m, _ := livelog.NewMasker(secrets...)
		masker = &maskWriter{w: logs, masker: m}
		logs = masker
	}

	args := append(shell[1:len(shell):len(shell)], "-c", strings.Join(data.Commands, "\n"))
	cmd := osexec.Command(shell[0], args...)
	cmd.Dir = dir
	cmd.Env = environ(ws, &data)
	res, err := h.run(r.Context(), cmd, logs)
	if masker != nil {
		masker.flush()
	}
	if err != nil {
		httphelper.WriteError(w, err)
		return
	}
	if res.ExitCode != 0 {
		writeExitError(w, res, fmt.Sprintf("step %s exited with code %d", data.Step, res.ExitCode))
		return
	}
	httphelper.WriteJSON(w, res, http.StatusOK)
}

// workingDir resolves a step's working directory, which must stay inside
// the workspace, and creates it. It walks the path one component at a
// time from the workspace, each opened relative to its parent without
// following symbolic links, so that a link in the workspace can never
// make it create (or enter) a directory outside.
func workingDir(ws, rel string) (string, error) {
	if rel == "" {
		return ws, nil
	}
	if filepath.IsAbs(rel) {
		return "", errand.Errorf(errand.CodeInvalid, "working_dir %q must be relative to the workspace", rel)
	}
	dir := filepath.Join(ws, rel)
	if dir == ws {
		return ws, nil
	}
	if !within(ws, dir) {
		return "", errand.Errorf(errand.CodeInvalid, "working_dir %q leads outside the workspace", rel)
	}
	fd, err := syscall.Open(ws, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return "", errand.Errorf(errand.CodeTaskFailed, "open workspace: %v", err)
	}
	defer func() { syscall.Close(fd) }()
	rest, _ := filepath.Rel(ws, dir)
	for _, name := range strings.Split(rest, string(filepath.Separator)) {
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

// environ is the step's environment: the delegate's own, without its
// ERRAND_ settings (which hold its token), then the step's variables and
// secrets.
func environ(ws string, d *tasks.ExecuteData) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ERRAND_") {
			env = append(env, kv)
		}
	}
	env = append(env, "CI=true", "ERRAND_WORKSPACE="+ws, "ERRAND_RUN_ID="+d.RunID,
		"ERRAND_STAGE="+d.Stage.Stage, "ERRAND_STEP="+d.Step)
	for _, m := range []map[string]string{d.Environment, d.Secrets} {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			env = append(env, k+"="+m[k])
		}
	}
	return env
}

// run starts cmd in a process group of its own, copies its output to logs
// and waits. When ctx ends, the whole group gets SIGTERM, then SIGKILL
// after the grace. Whatever is left of the group when the shell exits is
// killed too. The group dies with the delegate (see procs.go).
func (h *Handlers) run(ctx context.Context, cmd *osexec.Cmd, logs io.Writer) (tasks.ExecuteResult, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return tasks.ExecuteResult{}, fmt.Errorf("output pipe: %w", err)
	}
	defer pr.Close()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	type startResult struct {
		err  error
		stat proc.Stat
	}
	started := make(chan startResult, 1)
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		// The parent-death signal is sent when the thread that forked
		// ends: keep it until the shell has been waited for.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
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
		<-waited
		if errors.Is(sr.err, osexec.ErrNotFound) || errors.Is(sr.err, os.ErrNotExist) {
			fmt.Fprintf(logs, "%s: command not found\n", cmd.Path)
			return tasks.ExecuteResult{ExitCode: 127}, nil
		}
		return tasks.ExecuteResult{}, errand.Errorf(errand.CodeTaskFailed, "start %s: %v", cmd.Path, sr.err)
	}
	pgid := cmd.Process.Pid
	h.track(pgid, true)
	defer h.track(pgid, false)
	forget := func() {}
	if sr.err == nil {
		if forget, err = h.record(pgid, sr.stat.Start); err != nil {
			h.logger().WithError(err).Warn("cannot record a step's processes: a restarted delegate would not find them")
		}
	}
	defer forget()
	wd, err := startWatchdog(pgid)
	if err != nil {
		h.logger().WithError(err).Warn("no watchdog for a step: its children may outlive a killed delegate")
	}

	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(logs, pr)
	}()
	select {
	case <-waited:
	case <-ctx.Done():
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		grace := time.NewTimer(h.killGrace())
		select {
		case <-waited:
		case <-grace.C:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-waited
		}
		grace.Stop()
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	if wd != nil {
		wd.stop()
	}
	select {
	case <-copied:
	case <-time.After(pipeDrain):
		pr.Close()
		<-copied
	}
	return tasks.ExecuteResult{ExitCode: exitCode(cmd.ProcessState), DurationMS: time.Since(start).Milliseconds()}, nil
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

// maskWriter masks secrets line by line, in one pass, for a log writer
// that cannot mask them itself. A line longer than
// livelog.DefaultMaxLineBytes is written in parts, so output with no
// newline never grows without bound.
type maskWriter struct {
	mu      sync.Mutex
	w       io.Writer
	masker  *livelog.Masker
	partial []byte
}

func (m *maskWriter) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.partial = append(m.partial, p...)
	var out string
	if i := bytes.LastIndexByte(m.partial, '\n'); i >= 0 {
		out = m.masker.Mask(string(m.partial[:i+1]))
		m.partial = append([]byte(nil), m.partial[i+1:]...)
	} else if len(m.partial) > livelog.DefaultMaxLineBytes {
		cut := m.masker.SafeCut(string(m.partial))
		out = m.masker.Mask(string(m.partial[:cut])) + "\n"
		m.partial = append([]byte(nil), m.partial[cut:]...)
	} else {
		return len(p), nil
	}
	if _, err := io.WriteString(m.w, out); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (m *maskWriter) mask(s string) string { return m.masker.Mask(s) }

func (m *maskWriter) flush() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.partial) > 0 {
		_, _ = io.WriteString(m.w, m.mask(string(m.partial)))
		m.partial = nil
	}
}
