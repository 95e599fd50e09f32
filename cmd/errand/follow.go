package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

// Exit codes of a followed run.
const (
	exitRunFailed      = 1   // the run failed or was cancelled
	exitConfigError    = 2   // the config did not load or validate
	exitRunInterrupted = 130 // SIGINT or SIGTERM cancelled the run
)

// runPollInterval is how often a followed run is read.
const runPollInterval = 25 * time.Millisecond

// cancelGrace bounds how long a run cancelled by a signal is followed
// while its cleanups run.
const cancelGrace = 30 * time.Second

// followOptions say how a run is followed.
type followOptions struct {
	// approve grants every approval a stage waits for.
	approve bool
	// failOnWait ends the run when a stage waits for an approval that
	// nobody can give (errand run without --approve).
	failOnWait bool
	colour     bool
}

// useColour reports whether w is a terminal.
func useColour(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// follower streams a run to a terminal: each step's log with a
// stage/step prefix as it comes, a status line per step, a summary.
type follower struct {
	c interface {
		client.Client
		client.RunClient
	}
	out  io.Writer
	opts followOptions

	mu      sync.Mutex // serialises writes to out
	started map[string]bool
	printed map[string]bool
	wg      sync.WaitGroup
	waiting map[string]bool
}

// followRun follows a run until it ends and returns the exit code its
// result calls for. When ctx ends (a signal) the run is cancelled and
// followed while its cleanups run.
func followRun(ctx context.Context, c interface {
	client.Client
	client.RunClient
}, id string, out io.Writer, opts followOptions) (int, error) {
	f := &follower{c: c, out: out, opts: opts, started: map[string]bool{}, printed: map[string]bool{}, waiting: map[string]bool{}}
	// Logs are followed with a context of their own: they must go on
	// while a cancelled run cleans up.
	lctx, stopLogs := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLogs()
	interrupted := false
	poll := ctx
	var deadline <-chan time.Time
	var run *client.Run
	for {
		var err error
		run, err = c.GetRun(context.WithoutCancel(poll), id)
		if err != nil {
			return exitFailed, err
		}
		f.update(lctx, run)
		if run.Phase == "finished" || run.Phase == "setuperror" {
			break
		}
		if reason := f.approvals(ctx, run); reason != "" {
			f.line("%s", reason)
			if err := c.CancelRun(context.WithoutCancel(ctx), id); err != nil {
				return exitFailed, err
			}
		}
		select {
		case <-time.After(runPollInterval):
		case <-ctx.Done():
			if !interrupted {
				interrupted = true
				f.line("interrupted: cancelling run %s (cleanups still run)", id)
				if err := c.CancelRun(context.WithoutCancel(ctx), id); err != nil {
					return exitFailed, err
				}
				deadline = time.After(cancelGrace)
				poll = context.WithoutCancel(ctx)
				ctx = poll
			}
		case <-deadline:
			stopLogs()
			f.wg.Wait()
			return exitRunInterrupted, fmt.Errorf("run %s did not end within %s of its cancel", id, cancelGrace)
		}
	}
	f.wg.Wait()
	f.update(lctx, run)
	f.summary(run)
	switch {
	case interrupted:
		return exitRunInterrupted, nil
	case run.Phase == "setuperror":
		return exitConfigError, nil
	case run.Result == "success":
		return exitOK, nil
	}
	return exitRunFailed, nil
}

// approvals grants or reports the approvals stages wait for. It returns a
// reason to give up when nobody can approve.
func (f *follower) approvals(ctx context.Context, run *client.Run) string {
	for _, s := range run.Stages {
		if s.State != "waiting" || f.waiting[s.Name] {
			continue
		}
		switch {
		case f.opts.approve:
			if err := f.c.ApproveRun(ctx, run.ID, s.Name, "errand-run"); err != nil && !errors.Is(err, errand.ErrConflict) {
				f.line("approve %s: %v", s.Name, err)
			}
			if len(s.Approvals)+1 >= s.Approval {
				f.waiting[s.Name] = true
			}
			f.line("%s: approved (--approve)", s.Name)
		case f.opts.failOnWait:
			f.waiting[s.Name] = true
			return fmt.Sprintf("%s: waits for %d approval(s) that nobody can give here; run again with --approve", s.Name, s.Approval)
		default:
			f.waiting[s.Name] = true
			f.line("%s: waiting for %d approval(s): errand runs approve %s %s", s.Name, s.Approval, run.ID, s.Name)
		}
	}
	return ""
}

// update starts following the logs of steps that started, in run order,
// and reports steps that ended without running.
func (f *follower) update(ctx context.Context, run *client.Run) {
	for _, s := range run.Stages {
		for _, st := range s.Steps {
			key := s.Name + "/" + st.Name
			if f.started[key] {
				continue
			}
			switch st.State {
			case errand.StatePending, errand.StateQueued:
				continue
			case errand.StateSkipped, errand.StateCancelled:
				if st.StartedAt == nil {
					f.started[key] = true
					f.status(key, st)
					continue
				}
			}
			f.started[key] = true
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.stream(ctx, key, st.TaskID)
			}()
		}
	}
}

// stream copies a step's log with its prefix, then prints its status.
func (f *follower) stream(ctx context.Context, key, taskID string) {
	pw := &prefixWriter{f: f, prefix: key}
	err := f.c.TaskLogs(ctx, taskID, &client.LogOptions{Follow: true}, pw)
	pw.flush()
	if err != nil && ctx.Err() == nil {
		f.line("%s: log: %v", key, err)
	}
	t, err := f.c.GetTask(context.WithoutCancel(ctx), taskID)
	if err != nil {
		f.line("%s: %v", key, err)
		return
	}
	f.status(key, stepOf(t))
}

func stepOf(t *errand.Task) *client.RunStep {
	st := &client.RunStep{State: t.State, Error: t.Error, StartedAt: t.StartedAt, FinishedAt: t.FinishedAt}
	if t.StartedAt != nil && t.FinishedAt != nil {
		st.Duration = errand.Duration(t.FinishedAt.Sub(*t.StartedAt))
	}
	return st
}

// status prints a step's status line, once.
func (f *follower) status(key string, st *client.RunStep) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.printed[key] {
		return
	}
	f.printed[key] = true
	mark, colour := "–", "\x1b[33m"
	detail := string(st.State)
	switch st.State {
	case errand.StateSucceeded:
		mark, colour, detail = "✓", "\x1b[32m", ""
	case errand.StateFailed, errand.StateTimedOut:
		mark, colour = "✗", "\x1b[31m"
		if st.Error != nil {
			detail = st.Error.Reason
		}
	}
	line := mark + " " + key
	if st.StartedAt != nil {
		line += fmt.Sprintf(" (%s)", time.Duration(st.Duration).Round(time.Millisecond))
	}
	if detail != "" {
		line += " " + detail
	}
	if f.opts.colour {
		line = colour + line + "\x1b[0m"
	}
	fmt.Fprintln(f.out, line)
}

// line prints a message line.
func (f *follower) line(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fmt.Fprintf(f.out, format+"\n", args...)
}

// summary prints the run's outcome.
func (f *follower) summary(run *client.Run) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if run.Phase == "setuperror" {
		fmt.Fprintf(f.out, "run %s: the config has errors:\n", run.ID)
		for _, e := range run.SetupErrors {
			fmt.Fprintf(f.out, "  %s\n", e.Error())
		}
		return
	}
	counts := map[errand.State]int{}
	for _, s := range run.Stages {
		for _, st := range s.Steps {
			counts[st.State]++
		}
	}
	var parts []string
	for _, s := range []errand.State{errand.StateSucceeded, errand.StateFailed, errand.StateTimedOut, errand.StateSkipped, errand.StateCancelled} {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	stages := make([]string, len(run.Stages))
	for i, s := range run.Stages {
		stages[i] = s.Name + " " + s.State
	}
	fmt.Fprintf(f.out, "run %s %s: steps %s; stages %s\n", run.ID, run.Result, strings.Join(parts, ", "), strings.Join(stages, ", "))
}

// prefixWriter writes each whole line with a prefix.
type prefixWriter struct {
	f      *follower
	prefix string
	buf    bytes.Buffer
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadBytes('\n')
		if err != nil {
			// An incomplete line waits for the rest.
			rest := append([]byte(nil), line...)
			w.buf.Reset()
			w.buf.Write(rest)
			return len(p), nil
		}
		w.f.line("%s | %s", w.prefix, strings.TrimRight(string(line), "\n"))
	}
}

func (w *prefixWriter) flush() {
	if w.buf.Len() > 0 {
		w.f.line("%s | %s", w.prefix, w.buf.String())
		w.buf.Reset()
	}
}
