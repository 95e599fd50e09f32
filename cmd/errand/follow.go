package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/cenkalti/backoff/v4"
	"github.com/mattn/go-isatty"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

// Exit codes of a followed run.
const (
	exitRunFailed      = 1   // the run failed or was cancelled
	exitConfigError    = 2   // the config did not load or validate
	exitCouldNotFollow = 3   // the manager could not be read: the run's result is unknown
	exitRunInterrupted = 130 // SIGINT or SIGTERM stopped the follower (and cancelled the run when asked)
)

// runPollInterval is how often a followed run is read.
const runPollInterval = 25 * time.Millisecond

// cancelGrace bounds how long a run cancelled by a signal is followed
// while its cleanups run.
const cancelGrace = 30 * time.Second

// followRetry bounds how long errand submit --follow retries a manager
// that does not answer (a restart) before it gives up with exit code 3.
const followRetry = 2 * time.Minute

// lineTimeLayout is how --timestamps and tables show a time: local, with
// its zone.
const (
	lineTimeLayout  = "2006-01-02 15:04:05.000 MST"
	tableTimeLayout = "2006-01-02 15:04:05 MST"
)

// followOptions say how a run is followed.
type followOptions struct {
	// approve grants every approval a stage waits for.
	approve bool
	// failOnWait ends the run when a stage waits for an approval that
	// nobody can give (errand run without --approve).
	failOnWait bool
	// failOnUnserved ends the run when a task waits for a delegate that
	// cannot come (errand run: its one delegate is the only one there is).
	failOnUnserved bool
	colour         bool
	// timestamps prefixes each line with the time it is printed.
	timestamps bool
	// json prints one JSON event per line instead of text.
	json bool
	// cancelOnInterrupt cancels the run when ctx ends and follows its
	// cleanups; otherwise following stops and the run goes on.
	cancelOnInterrupt bool
	// retry bounds how long a manager that does not answer is retried
	// with backoff; 0 retries nothing beyond the client's own retries.
	retry time.Duration
	// lostCode is the exit code when the run cannot be followed
	// (exitFailed when 0).
	lostCode int
}

// useColour reports whether w is a terminal that may be coloured:
// not with --no-color, nor when NO_COLOR is set to anything non-empty.
func useColour(w io.Writer, noColour bool) bool {
	if noColour || os.Getenv("NO_COLOR") != "" {
		return false
	}
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// runFollower is what a follower needs of a manager's client.
type runFollower interface {
	client.Client
	client.RunClient
}

// Parts of a stage a unit prints.
const (
	partSetup   = "setup"
	partStep    = "step"
	partCleanup = "cleanup"
)

// unit is one thing the follower prints: a step (its start, its log and
// its status), or a stage's setup or cleanup (only when it failed). A
// unit prints once every unit in after is done, so that nothing shows up
// before what it depends on.
type unit struct {
	stage, step, part string
	key               string
	after             []*unit
	readyOnce         sync.Once
	ready             chan struct{} // closed when the unit's task started or ended, or the run ended
	done              chan struct{} // closed when the unit printed all it had
}

func (u *unit) markReady() { u.readyOnce.Do(func() { close(u.ready) }) }

// follower streams a run to a terminal in run order: a line when a step
// starts, its log prefixed stage/step, its status line; the failures of
// a stage's setup and cleanup with their logs; a summary table.
type follower struct {
	c     runFollower
	out   io.Writer
	opts  followOptions
	runID string

	mu      sync.Mutex // serialises writes to out and guards run
	run     *client.Run
	units   []*unit
	byKey   map[string]*unit
	wg      sync.WaitGroup
	waiting map[string]bool
	// told holds the waiting reason last printed per stage/part.
	told     map[string]string
	retrying bool
}

func newFollower(c runFollower, out io.Writer, opts followOptions) *follower {
	if opts.lostCode == 0 {
		opts.lostCode = exitFailed
	}
	return &follower{c: c, out: out, opts: opts, byKey: map[string]*unit{}, waiting: map[string]bool{}, told: map[string]string{}}
}

// followRun follows a run until it ends and returns the exit code its
// result calls for. When ctx ends (a signal) the run is cancelled and
// followed while its cleanups run if opts.cancelOnInterrupt; otherwise
// following stops and the run goes on on the manager.
func followRun(ctx context.Context, c runFollower, id string, out io.Writer, opts followOptions) (int, error) {
	f := newFollower(c, out, opts)
	f.runID = id
	// Logs are followed with a context of their own: they must go on
	// while a cancelled run cleans up.
	lctx, stopLogs := context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		stopLogs()
		f.wg.Wait()
	}()
	interrupted := false
	rctx := ctx // the context retries end with
	var deadline <-chan time.Time
	var run *client.Run
	for {
		var err error
		run, err = f.getRun(rctx)
		switch {
		case err == nil:
		case ctx.Err() != nil && !interrupted:
			// A signal ended a retry: handled below.
		default:
			return f.opts.lostCode, fmt.Errorf("follow run %s: %w", id, err)
		}
		if run != nil {
			f.update(lctx, run)
			if run.Phase == "finished" || run.Phase == "setuperror" {
				break
			}
			reason := f.explainWaits(run)
			if reason == "" {
				reason = f.approvals(lctx, run)
			}
			if reason != "" {
				f.message("%s", reason)
				if err := c.CancelRun(lctx, id); err != nil && !errors.Is(err, errand.ErrConflict) {
					return exitFailed, err
				}
			}
		}
		select {
		case <-time.After(runPollInterval):
		case <-ctx.Done():
			if interrupted {
				continue
			}
			interrupted = true
			if !f.opts.cancelOnInterrupt {
				f.message("interrupted: stopped following; run %s goes on (errand runs get %s; errand runs cancel %s)", id, id, id)
				return exitRunInterrupted, nil
			}
			f.message("interrupted: cancelling run %s (cleanups still run)", id)
			if err := c.CancelRun(lctx, id); err != nil && !errors.Is(err, errand.ErrConflict) {
				return exitFailed, err
			}
			deadline = time.After(cancelGrace)
			rctx = lctx
			ctx = lctx
		case <-deadline:
			stopLogs()
			return exitRunInterrupted, fmt.Errorf("run %s did not end within %s of its cancel", id, cancelGrace)
		}
	}
	f.end()
	f.wg.Wait()
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

// getRun reads the run, retrying a manager that does not answer.
func (f *follower) getRun(ctx context.Context) (*client.Run, error) {
	var run *client.Run
	err := f.retry(ctx, func() error {
		var err error
		run, err = f.c.GetRun(ctx, f.runID)
		return err
	})
	return run, err
}

// retry runs op until it succeeds, fails for good (errand.Retryable says
// which failures may pass), opts.retry has passed or ctx ends. It is the
// one retry layer of a follow: the client given to followRun should not
// retry on its own.
func (f *follower) retry(ctx context.Context, op func() error) error {
	if f.opts.retry <= 0 {
		return op()
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 250 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	window := &windowBackOff{BackOff: b, end: time.Now().Add(f.opts.retry)}
	err := backoff.RetryNotify(func() error {
		err := op()
		if err != nil && !errand.Retryable(err) {
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(window, ctx), func(err error, _ time.Duration) {
		f.mu.Lock()
		first := !f.retrying
		f.retrying = true
		f.mu.Unlock()
		if first {
			f.message("the manager does not answer (%v): retrying for up to %s", err, f.opts.retry)
		}
	})
	if err == nil {
		f.mu.Lock()
		back := f.retrying
		f.retrying = false
		f.mu.Unlock()
		if back {
			f.message("the manager answers again: following run %s", f.runID)
		}
	}
	return err
}

// windowBackOff is a backoff that retries until end, its last wait cut
// so that the last try comes at end: a follower given --reconnect-for
// tries for that long, not only while the next wait fits in it.
type windowBackOff struct {
	backoff.BackOff
	end time.Time
}

// NextBackOff implements backoff.BackOff.
func (w *windowBackOff) NextBackOff() time.Duration {
	left := time.Until(w.end)
	if left <= 0 {
		return backoff.Stop
	}
	d := w.BackOff.NextBackOff()
	if d == backoff.Stop || d > left {
		return left
	}
	return d
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
			// Distinct approvers, as many as the stage needs; a failed
			// approval is tried again at the next poll.
			approvals := slices.Clone(s.Approvals)
			var err error
			for i, limit := 1, s.Approval+len(approvals); len(approvals) < s.Approval && i <= limit && err == nil; i++ {
				who := fmt.Sprintf("errand-run-%d", i)
				if slices.Contains(approvals, who) {
					continue
				}
				if err = f.c.ApproveRun(ctx, run.ID, s.Name, who); err != nil && !errors.Is(err, errand.ErrConflict) {
					f.message("approve %s as %s: %v", s.Name, who, err)
					break
				}
				err = nil
				approvals = append(approvals, who)
			}
			if err == nil {
				f.waiting[s.Name] = true
				f.message("%s: approved by %s (--approve)", s.Name, strings.Join(approvals, ", "))
			}
		case f.opts.failOnWait:
			f.waiting[s.Name] = true
			return fmt.Sprintf("%s: waits for %d approval(s) that nobody can give here; run again with --approve", s.Name, s.Approval)
		default:
			f.waiting[s.Name] = true
			f.message("%s: waiting for %d approval(s): errand runs approve %s %s", s.Name, s.Approval, run.ID, s.Name)
		}
	}
	return ""
}

// update keeps the latest view of the run, plans the units on the first
// call, and marks those whose task started (steps) or ended (setup,
// cleanup) ready.
func (f *follower) update(ctx context.Context, run *client.Run) {
	f.mu.Lock()
	f.run = run
	first := f.units == nil && run.Phase != "setuperror"
	f.mu.Unlock()
	if first {
		f.plan(ctx, run)
	}
	for _, s := range run.Stages {
		if u := f.byKey[s.Name+"/"+partSetup]; u != nil && (s.Setup == nil || s.Setup.State.Terminal()) {
			u.markReady()
		}
		if u := f.byKey[s.Name+"/"+partCleanup]; u != nil && (s.Cleanup == nil || s.Cleanup.State.Terminal()) {
			u.markReady()
		}
		for _, st := range s.Steps {
			if st.State != errand.StatePending && st.State != errand.StateQueued || s.State == "skipped" || s.State == "cancelled" {
				if u := f.byKey[s.Name+"/"+partStep+"/"+st.Name]; u != nil {
					u.markReady()
				}
			}
		}
	}
}

// plan makes the units of a run and starts one goroutine each: a stage's
// setup waits for the stages it depends on, its steps for its setup and
// each other in order, its cleanup for its last step.
func (f *follower) plan(ctx context.Context, run *client.Run) {
	last := map[string]*unit{}
	for _, s := range run.Stages {
		setup := f.newUnit(s.Name, "", partSetup)
		for _, d := range s.Depends {
			if u := last[d]; u != nil {
				setup.after = append(setup.after, u)
			}
		}
		prev := setup
		for _, st := range s.Steps {
			u := f.newUnit(s.Name, st.Name, partStep)
			u.after = []*unit{prev}
			prev = u
		}
		cleanup := f.newUnit(s.Name, "", partCleanup)
		cleanup.after = []*unit{prev}
		last[s.Name] = cleanup
	}
	for _, u := range f.units {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.play(ctx, u)
		}()
	}
}

func (f *follower) newUnit(stage, step, part string) *unit {
	u := &unit{stage: stage, step: step, part: part, ready: make(chan struct{}), done: make(chan struct{})}
	u.key = stage + "/" + part
	if part == partStep {
		u.key += "/" + step
	}
	f.units = append(f.units, u)
	f.byKey[u.key] = u
	return u
}

// end marks every unit ready: the run ended, what was not printed yet is
// printed as it stands.
func (f *follower) end() {
	for _, u := range f.units {
		u.markReady()
	}
}

// play prints a unit once those before it are done and its task is
// ready.
func (f *follower) play(ctx context.Context, u *unit) {
	defer close(u.done)
	for _, a := range u.after {
		select {
		case <-a.done:
		case <-ctx.Done():
			return
		}
	}
	select {
	case <-u.ready:
	case <-ctx.Done():
		return
	}
	stage := f.stage(u.stage)
	if stage == nil {
		return
	}
	switch u.part {
	case partStep:
		f.playStep(ctx, u, stage)
	case partSetup:
		f.playStageTask(ctx, u, stage.Setup)
	case partCleanup:
		f.playStageTask(ctx, u, stage.Cleanup)
	}
}

// stage returns the latest view of a stage.
func (f *follower) stage(name string) *client.RunStage {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.run.Stages {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// playStep prints a step: its start, its log from the beginning, its
// status. A step that ended without starting gets its status only.
func (f *follower) playStep(ctx context.Context, u *unit, stage *client.RunStage) {
	i := slices.IndexFunc(stage.Steps, func(st *client.RunStep) bool { return st.Name == u.step })
	if i < 0 {
		return
	}
	st := stage.Steps[i]
	key := u.stage + "/" + u.step
	if st.TaskID == "" || st.StartedAt == nil && (st.State.Terminal() || stage.State == "skipped" || stage.State == "cancelled") {
		if !st.State.Terminal() {
			st = &client.RunStep{Name: st.Name, State: errand.StateSkipped, TaskID: st.TaskID}
		}
		f.stepEnded(u, st)
		return
	}
	f.stepStarted(u, st.TaskID)
	f.copyLog(ctx, u, key, st.TaskID, true)
	var t *errand.Task
	err := f.retry(ctx, func() error {
		var err error
		t, err = f.c.GetTask(ctx, st.TaskID)
		return err
	})
	if err != nil {
		f.message("%s: %v", key, err)
		return
	}
	f.stepEnded(u, stepOf(st.Name, t))
}

// copyLog prints a task's log, from its first line, following it while
// the task runs when follow is set; a broken stream resumes after the
// last line printed.
func (f *follower) copyLog(ctx context.Context, u *unit, prefix, taskID string, follow bool) {
	pw := &prefixWriter{emit: func(line string) { f.logLine(u, prefix, taskID, line) }}
	err := f.retry(ctx, func() error {
		// A retry reads again from the start of the unfinished line.
		pw.buf.Reset()
		return f.c.TaskLogs(ctx, taskID, &client.LogOptions{Offset: pw.lines, Follow: follow}, pw)
	})
	pw.flush()
	if err != nil && ctx.Err() == nil {
		f.message("%s: log: %v", prefix, err)
	}
}

// playStageTask prints a stage's setup or cleanup when it failed: its
// log, then a line naming the stage with the error's code and reason.
func (f *follower) playStageTask(ctx context.Context, u *unit, st *client.RunStageTask) {
	if st == nil || st.StartedAt == nil && !st.State.Terminal() {
		return
	}
	failed := st.State == errand.StateFailed || st.State == errand.StateTimedOut
	if failed {
		f.copyLog(ctx, u, u.stage+"/"+u.part, st.TaskID, false)
	}
	f.stageTaskEnded(u, st, failed)
}

// stepOf returns the step view of a step's task.
func stepOf(name string, t *errand.Task) *client.RunStep {
	st := &client.RunStep{Name: name, State: t.State, TaskID: t.ID, Error: t.Error, StartedAt: t.StartedAt, FinishedAt: t.FinishedAt}
	if t.StartedAt != nil && t.FinishedAt != nil {
		st.Duration = errand.Duration(t.FinishedAt.Sub(*t.StartedAt))
	}
	var res struct {
		ExitCode *int `json:"exit_code"`
	}
	if len(t.Result) > 0 && json.Unmarshal(t.Result, &res) == nil {
		st.ExitCode = res.ExitCode
	}
	return st
}

// followEvent is one line of errand run --json and errand submit
// --follow -o json. Times are RFC 3339 in UTC; durations are Go duration
// strings.
type followEvent struct {
	// Event is step_started, log, step_ended, setup_ended,
	// cleanup_ended, message or run_ended.
	Event string    `json:"event"`
	Time  time.Time `json:"time"`
	RunID string    `json:"run_id"`
	Stage string    `json:"stage,omitempty"`
	Step  string    `json:"step,omitempty"`
	// Part says what a log line comes from: step, setup or cleanup.
	Part       string          `json:"part,omitempty"`
	TaskID     string          `json:"task_id,omitempty"`
	Line       *string         `json:"line,omitempty"`
	State      string          `json:"state,omitempty"`
	ExitCode   *int            `json:"exit_code,omitempty"`
	Error      *errand.Error   `json:"error,omitempty"`
	StartedAt  *time.Time      `json:"started_at,omitempty"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
	Duration   errand.Duration `json:"duration,omitempty"`
	Message    string          `json:"message,omitempty"`
	// Phase, Result, Stages and SetupErrors are set on run_ended.
	Phase       string                 `json:"phase,omitempty"`
	Result      string                 `json:"result,omitempty"`
	Stages      []followStage          `json:"stages,omitempty"`
	SetupErrors []client.RunSetupError `json:"setup_errors,omitempty"`
}

// followStage is a stage in the run_ended event.
type followStage struct {
	Name     string          `json:"name"`
	State    string          `json:"state"`
	Duration errand.Duration `json:"duration"`
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// emit writes one event, as JSON or as a text line.
func (f *follower) emit(ev *followEvent, text string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if f.opts.json {
		ev.Time, ev.RunID = now.UTC(), f.runID
		b, err := json.Marshal(ev)
		if err != nil {
			return
		}
		f.out.Write(append(b, '\n'))
		return
	}
	if text == "" && ev.Event != "log" {
		return
	}
	if f.opts.timestamps {
		fmt.Fprintf(f.out, "%s ", now.Local().Format(lineTimeLayout))
	}
	fmt.Fprintln(f.out, text)
}

func (f *follower) paint(colour, s string) string {
	if !f.opts.colour {
		return s
	}
	return colour + s + "\x1b[0m"
}

const (
	colourGreen  = "\x1b[32m"
	colourRed    = "\x1b[31m"
	colourYellow = "\x1b[33m"
	colourBold   = "\x1b[1m"
)

// message prints a message line.
// explainWaits prints, once per change, why a stage's setup or a step is
// queued with no delegate that may run it (its type or selector). With
// failOnUnserved it returns a reason to give up.
func (f *follower) explainWaits(run *client.Run) string {
	giveUp := ""
	tell := func(key, reason string) {
		if reason != "" && f.told[key] != reason {
			f.told[key] = reason
			f.message("%s: waiting: %s", key, reason)
			if f.opts.failOnUnserved && giveUp == "" {
				giveUp = fmt.Sprintf("%s: no delegate here can run it: cancelling the run", key)
			}
		}
	}
	for _, s := range run.Stages {
		if s.Setup != nil && s.Setup.State == errand.StateQueued {
			tell(s.Name+"/"+partSetup, s.Setup.WaitingReason)
		}
		for _, st := range s.Steps {
			if st.State == errand.StateQueued {
				tell(s.Name+"/"+st.Name, st.WaitingReason)
			}
		}
	}
	return giveUp
}

func (f *follower) message(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	f.emit(&followEvent{Event: "message", Message: msg}, msg)
}

func (f *follower) stepStarted(u *unit, taskID string) {
	f.emit(&followEvent{Event: "step_started", Stage: u.stage, Step: u.step, TaskID: taskID},
		f.paint(colourBold, "▶ "+u.stage+"/"+u.step))
}

func (f *follower) logLine(u *unit, prefix, taskID, line string) {
	f.emit(&followEvent{Event: "log", Stage: u.stage, Step: u.step, Part: u.part, TaskID: taskID, Line: &line},
		prefix+" | "+line)
}

// stepEnded prints a step's status line, with its duration once it ran.
func (f *follower) stepEnded(u *unit, st *client.RunStep) {
	mark, colour := "–", colourYellow
	detail := string(st.State)
	switch st.State {
	case errand.StateSucceeded:
		mark, colour, detail = "✓", colourGreen, ""
	case errand.StateFailed, errand.StateTimedOut:
		mark, colour = "✗", colourRed
		if st.Error != nil {
			detail = st.Error.Reason
		}
	}
	line := mark + " " + u.stage + "/" + u.step
	if st.StartedAt != nil {
		line += fmt.Sprintf(" (%s)", time.Duration(st.Duration).Round(time.Millisecond))
	}
	if detail != "" {
		line += " " + detail
	}
	f.emit(&followEvent{Event: "step_ended", Stage: u.stage, Step: u.step, TaskID: st.TaskID, State: string(st.State),
		ExitCode: st.ExitCode, Error: st.Error, StartedAt: utc(st.StartedAt), FinishedAt: utc(st.FinishedAt), Duration: st.Duration},
		f.paint(colour, line))
}

// stageTaskEnded reports a stage's setup or cleanup: always as a JSON
// event, as a text line only when it failed.
func (f *follower) stageTaskEnded(u *unit, st *client.RunStageTask, failed bool) {
	var d errand.Duration
	if st.StartedAt != nil && st.FinishedAt != nil {
		d = errand.Duration(st.FinishedAt.Sub(*st.StartedAt))
	}
	text := ""
	if failed {
		text = fmt.Sprintf("✗ %s: %s failed", u.stage, u.part)
		if st.StartedAt != nil {
			text += fmt.Sprintf(" (%s)", time.Duration(d).Round(time.Millisecond))
		}
		if st.Error != nil {
			text += ": " + st.Error.Code
			if st.Error.Reason != "" {
				text += ": " + st.Error.Reason
			}
		}
		text = f.paint(colourRed, text)
	}
	f.emit(&followEvent{Event: u.part + "_ended", Stage: u.stage, TaskID: st.TaskID, State: string(st.State),
		Error: st.Error, StartedAt: utc(st.StartedAt), FinishedAt: utc(st.FinishedAt), Duration: d}, text)
}

// summary prints the run's outcome: a table of its stages with their
// results and durations, and the total.
func (f *follower) summary(run *client.Run) {
	ev := &followEvent{Event: "run_ended", Phase: run.Phase, Result: run.Result, SetupErrors: run.SetupErrors,
		StartedAt: utc(run.StartedAt), FinishedAt: utc(run.FinishedAt), Duration: run.Duration}
	if run.Phase == "setuperror" {
		var b strings.Builder
		fmt.Fprintf(&b, "run %s: the config has errors:", run.ID)
		for _, e := range run.SetupErrors {
			fmt.Fprintf(&b, "\n  %s", e.Error())
		}
		f.emit(ev, b.String())
		return
	}
	var b bytes.Buffer
	rows := make([][]string, 0, len(run.Stages)+1)
	for _, s := range run.Stages {
		ev.Stages = append(ev.Stages, followStage{Name: s.Name, State: s.State, Duration: s.Duration})
		rows = append(rows, []string{s.Name, s.State, roundDuration(s.Duration, s.StartedAt != nil)})
	}
	rows = append(rows, []string{"total", run.Result, roundDuration(run.Duration, run.StartedAt != nil)})
	_ = table(&b, []string{"STAGE", "RESULT", "DURATION"}, rows)
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	for i, l := range lines {
		if i > 0 && i <= len(run.Stages) {
			lines[i] = f.paint(resultColour(run.Stages[i-1].State), l)
		} else if i == len(lines)-1 {
			lines[i] = f.paint(resultColour(run.Result), l)
		}
	}
	lines = append(lines, fmt.Sprintf("run %s %s", run.ID, run.Result))
	if f.opts.json {
		f.emit(ev, "")
		return
	}
	for _, l := range lines {
		f.emit(ev, l)
	}
}

func resultColour(state string) string {
	switch state {
	case "success":
		return colourGreen
	case "failed":
		return colourRed
	}
	return colourYellow
}

// roundDuration renders a duration for a table; "-" for what never ran.
func roundDuration(d errand.Duration, ran bool) string {
	if !ran {
		return "-"
	}
	return time.Duration(d).Round(time.Millisecond).String()
}

// prefixWriter hands each whole line written to emit and counts them.
type prefixWriter struct {
	emit  func(line string)
	buf   bytes.Buffer
	lines int64
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
		w.lines++
		w.emit(strings.TrimRight(string(line), "\n"))
	}
}

func (w *prefixWriter) flush() {
	if w.buf.Len() > 0 {
		w.emit(w.buf.String())
		w.buf.Reset()
	}
}

// addOutputFlags adds --no-color and --timestamps, the flags of a
// command that follows a run.
func addOutputFlags(cmd *kingpin.CmdClause, noColour, timestamps *bool) {
	cmd.Flag("no-color", "Print no colours (also when NO_COLOR is set).").Envar("ERRAND_NO_COLOR").BoolVar(noColour)
	cmd.Flag("timestamps", "Prefix each line with the local time it is printed.").Envar("ERRAND_TIMESTAMPS").BoolVar(timestamps)
}
