package exec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/internal/proc"
)

// A step's processes must not outlive the delegate that runs them. Three
// layers see to it, from the most immediate to the last resort:
//
//   - The step's shell is started with PR_SET_PDEATHSIG (SIGKILL). The
//     kernel ties that signal to the thread that forked, not to the
//     process, and the Go runtime may end threads: the goroutine that
//     starts the step keeps its OS thread locked until the shell has been
//     waited for, so the signal fires only when the delegate dies.
//   - The shell's children do not inherit that signal. A watchdog, a
//     small /bin/sh process outside the step's group, holds the read end
//     of a pipe whose write end only the delegate holds: when the
//     delegate dies, however it dies, the kernel closes the pipe and the
//     watchdog kills the step's whole process group. A re-exec shim of
//     the delegate's own binary would do the same without /bin/sh, but
//     this package is a library that embedders run from binaries of
//     their own; /bin/sh is on every host that runs host steps.
//   - Each running step's process group is recorded under the state dir
//     with the start time of its leader. A delegate starting on that
//     state dir (KillLeftovers) kills the groups recorded by a previous
//     process that is gone, for when the watchdog died with it.
//
// Processes that leave the step's process group (setsid, setpgid) escape
// all three; a cgroup per step would hold them and is not used here.

// watchdogName is the watchdog's $0, which names it in ps.
const watchdogName = "errand-step-watchdog"

// watchdogScript waits for the end of its standard input (the delegate's
// end of the pipe closing) and kills the step's process group, $1.
const watchdogScript = `read _ || :; kill -s KILL -- -"$1"`

// watchdog is a started watchdog process.
type watchdog struct {
	cmd  *osexec.Cmd
	pipe *os.File // the delegate's end
}

// startWatchdog starts the watchdog of the process group pgid.
func startWatchdog(pgid int) (*watchdog, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("watchdog pipe: %w", err)
	}
	defer pr.Close()
	cmd := osexec.Command("/bin/sh", "-c", watchdogScript, watchdogName, strconv.Itoa(pgid))
	cmd.Stdin = pr
	cmd.Dir = "/"
	// A group of its own: the signals sent to the step's group, or to the
	// terminal's, do not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	return &watchdog{cmd: cmd, pipe: pw}, nil
}

// stop ends the watchdog without letting it kill anything: the step's
// group is gone and its id may be reused.
func (w *watchdog) stop() {
	_ = w.cmd.Process.Kill()
	_ = w.cmd.Wait()
	w.pipe.Close()
}

// stepRecord is what is kept of a running step's process group.
type stepRecord struct {
	PGID int `json:"pgid"`
	// Start is the start time of the group's leader in clock ticks since
	// boot (/proc/PID/stat field 22), so that a reused id is told apart.
	Start  uint64 `json:"start"`
	BootID string `json:"boot_id"`
}

// ownerDir is where this process records its steps:
// Steps/<pid>-<start time>, so that delegates sharing a state dir tell
// their records from those of a process that is gone.
func (h *Handlers) ownerDir() (string, error) {
	h.ownerOnce.Do(func() {
		st, err := proc.Read("/proc", os.Getpid())
		if err != nil {
			h.ownerErr = fmt.Errorf("read own start time: %w", err)
			return
		}
		h.owner = filepath.Join(h.Steps, fmt.Sprintf("%d-%d", os.Getpid(), st.Start))
	})
	return h.owner, h.ownerErr
}

// record notes the step's process group, whose leader started at start,
// under the state dir and returns
// the function that removes the note. Without Steps it notes nothing.
func (h *Handlers) record(pgid int, start uint64) (func(), error) {
	if h.Steps == "" {
		return func() {}, nil
	}
	dir, err := h.ownerDir()
	if err != nil {
		return func() {}, err
	}
	b, _ := json.Marshal(stepRecord{PGID: pgid, Start: start, BootID: proc.BootID()})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return func() {}, fmt.Errorf("record step: %w", err)
	}
	path := filepath.Join(dir, strconv.Itoa(pgid)+".json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return func() {}, fmt.Errorf("record step: %w", err)
	}
	return func() { _ = os.Remove(path) }, nil
}

// leftoverWait bounds the wait for killed leftovers to be gone.
const leftoverWait = 5 * time.Second

// KillLeftovers kills the step processes that a previous delegate process
// on this state dir left running (it was killed, and so was its
// watchdog), and forgets them. Records of processes still running (a
// sibling delegate sharing the state dir, or this one) are left alone. A
// recorded group is killed only when its leader is the process that was
// recorded (same start time) or, the leader being gone, in its members
// started after it. Call it at start-up, before the delegate takes work,
// so that a stage's cleanup never races the processes of its steps.
func (h *Handlers) KillLeftovers(ctx context.Context) error {
	if h.Steps == "" {
		return nil
	}
	owners, err := os.ReadDir(h.Steps)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read step records: %w", err)
	}
	self, _ := h.ownerDir()
	boot := proc.BootID()
	var errs []error
	var killed []int
	for _, o := range owners {
		dir := filepath.Join(h.Steps, o.Name())
		if dir == self || ownerAlive(o.Name()) {
			continue
		}
		recs, err := os.ReadDir(dir)
		if err != nil {
			errs = append(errs, fmt.Errorf("read step records: %w", err))
			continue
		}
		for _, r := range recs {
			path := filepath.Join(dir, r.Name())
			var rec stepRecord
			if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &rec) == nil && rec.PGID > 1 && rec.BootID == boot {
				pids := h.killGroup(rec)
				if len(pids) > 0 {
					h.logger().WithFields(logrus.Fields{"pgid": rec.PGID, "pids": pids}).
						Warn("killed the processes of a step left running by a previous delegate process")
				}
				killed = append(killed, pids...)
			}
			if err := os.Remove(path); err != nil {
				errs = append(errs, fmt.Errorf("forget step record: %w", err))
			}
		}
		_ = os.Remove(dir)
	}
	waitGone(ctx, killed)
	return errors.Join(errs...)
}

// ownerAlive reports whether the process named <pid>-<start time> runs.
func ownerAlive(name string) bool {
	p, s, ok := strings.Cut(name, "-")
	pid, err1 := strconv.Atoi(p)
	start, err2 := strconv.ParseUint(s, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return false
	}
	st, err := proc.Read("/proc", pid)
	return err == nil && st.Start == start
}

// killGroup sends SIGKILL to the members of the recorded group and
// returns their pids.
func (h *Handlers) killGroup(rec stepRecord) []int {
	if st, err := proc.Read("/proc", rec.PGID); err == nil && st.Start != rec.Start {
		return nil // the id was reused by another process
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := proc.Read("/proc", pid)
		if err != nil || st.PGRP != rec.PGID || st.Start < rec.Start || st.Zombie() {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitGone waits, for a bounded time, until the killed processes have
// ended.
func waitGone(ctx context.Context, pids []int) {
	deadline := time.Now().Add(leftoverWait)
	for _, pid := range pids {
		for running(pid) && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// running reports whether pid runs: a zombie has ended.
func running(pid int) bool {
	st, err := proc.Read("/proc", pid)
	return err == nil && !st.Zombie()
}

func (h *Handlers) logger() logrus.FieldLogger {
	if h.Log != nil {
		return h.Log
	}
	return logrus.StandardLogger()
}
