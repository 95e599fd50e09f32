package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

func init() { commands = append(commands, addRunsCommand) }

func addRunsCommand(app *kingpin.Application, g *globals) {
	cmd := app.Command("runs", "List, inspect, cancel and approve pipeline runs, and read their logs.")
	cf := addClientFlags(cmd)

	list := cmd.Command("list", "List runs, newest first.").Alias("ls")
	var after string
	var limit int
	list.Flag("after", "Start after this run id (paging).").Envar("ERRAND_AFTER").StringVar(&after)
	list.Flag("limit", "At most this many runs.").Envar("ERRAND_LIMIT").Default("20").IntVar(&limit)
	list.Action(g.action(func(ctx context.Context) error {
		l, err := cf.client().ListRuns(ctx, &client.RunFilter{After: after, Limit: limit})
		if err != nil {
			return err
		}
		if cf.output == "json" {
			for _, r := range l.Items {
				utcRun(r)
			}
			return printJSON(g.Stdout, l)
		}
		rows := make([][]string, len(l.Items))
		for i, r := range l.Items {
			rows[i] = []string{r.ID, r.Phase, r.Result, strconv.Itoa(r.StageCount), dash(r.Branch), dash(r.CreatedBy),
				localStamp(&r.CreatedAt), localStamp(r.StartedAt), localStamp(r.FinishedAt), runDuration(r.Duration, r.StartedAt)}
		}
		return table(g.Stdout, []string{"ID", "PHASE", "RESULT", "STAGES", "BRANCH", "CREATED BY", "CREATED", "STARTED", "FINISHED", "DURATION"}, rows)
	}))

	get := cmd.Command("get", "Show a run with its stages and steps, and why a stage's setup or cleanup failed.")
	getID := get.Arg("id", "Run id, or pipeline#number (api#42).").Required().String()
	get.Action(g.action(func(ctx context.Context) error {
		c := cf.client()
		id, err := resolveRun(ctx, c, *getID)
		if err != nil {
			return err
		}
		r, err := c.GetRun(ctx, id)
		if err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(g.Stdout, utcRun(r))
		}
		return printRun(ctx, c, g, r)
	}))

	cancel := cmd.Command("cancel", "Cancel a run: running steps are stopped, the rest skipped; cleanups still run. A run that has ended is refused (exit 1).")
	cancelID := cancel.Arg("id", "Run id, or pipeline#number.").Required().String()
	cancel.Action(g.action(func(ctx context.Context) error {
		c := cf.client()
		id, err := resolveRun(ctx, c, *cancelID)
		if err != nil {
			return err
		}
		if err := c.CancelRun(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(g.Stdout, "cancelled: %s\n", *cancelID)
		return nil
	}))

	restart := cmd.Command("restart", "Start a new run of what a run that has ended ran, linked to it (a new number for a run of a pipeline); "+
		"with --follow, stream it and exit with its result. A run that has not ended is refused (exit 1).")
	restartID := restart.Arg("id", "Run id, or pipeline#number.").Required().String()
	var restartFrom string
	var restartFollow bool
	restart.Flag("from", "failed: re-run the failed and cancelled stages and what follows them, keeping the stages that succeeded; start: re-run every stage.").
		Envar("ERRAND_RESTART_FROM").Default("failed").EnumVar(&restartFrom, "failed", "start")
	restart.Flag("follow", "Stream the new run's logs and exit with its result.").Short('f').Envar("ERRAND_FOLLOW").BoolVar(&restartFollow)
	restart.Action(func(*kingpin.ParseContext) error {
		c := cf.client()
		id, err := resolveRun(g.Ctx, c, *restartID)
		if err != nil {
			return &exitError{code: exitFailed, err: err}
		}
		r, err := c.RestartRun(g.Ctx, id, &client.RestartRequest{From: restartFrom})
		if err != nil {
			return &exitError{code: exitFailed, err: err}
		}
		return startedRun(g, cf, c, r, restartFollow)
	})

	approve := cmd.Command("approve", "Approve a stage that waits for approvals. Approving twice as the same approver, or a stage that waits for nothing, is refused (exit 1).")
	approveID := approve.Arg("id", "Run id, or pipeline#number.").Required().String()
	approveStage := approve.Arg("stage", "Stage name.").Required().String()
	var approver string
	approve.Flag("as", "Approver name, honoured only with the bootstrap admin token, for scripts (default: admin); a user token approves as its user.").Envar("ERRAND_APPROVER").StringVar(&approver)
	approve.Action(g.action(func(ctx context.Context) error {
		c := cf.client()
		id, err := resolveRun(ctx, c, *approveID)
		if err != nil {
			return err
		}
		approveID := &id
		// The API takes a second approval by the same approver as the
		// first (a retry is safe): say that it counts once.
		who := approver
		if who == "" {
			who = "admin"
		}
		if c.UserToken() {
			// A user approves as themself; the manager refuses a second
			// approval by the same user.
			if err := c.ApproveRun(ctx, *approveID, *approveStage, approver); err != nil {
				return err
			}
			fmt.Fprintf(g.Stdout, "approved: %s %s\n", *approveID, *approveStage)
			return nil
		}
		r, err := c.GetRun(ctx, *approveID)
		if err != nil {
			return err
		}
		if i := slices.IndexFunc(r.Stages, func(s *client.RunStage) bool { return s.Name == *approveStage }); i >= 0 {
			s := r.Stages[i]
			if s.State == "waiting" && slices.Contains(s.Approvals, who) {
				return fmt.Errorf("%s has approved stage %s of run %s already (%d of %d approvals): another approver is needed (--as NAME)",
					who, s.Name, r.ID, len(s.Approvals), s.Approval)
			}
		}
		if err := c.ApproveRun(ctx, *approveID, *approveStage, approver); err != nil {
			return err
		}
		fmt.Fprintf(g.Stdout, "approved: %s %s as %s\n", *approveID, *approveStage, who)
		return nil
	}))

	logs := cmd.Command("logs", "Print every step's log, prefixed with stage/step.")
	logsID := logs.Arg("id", "Run id, or pipeline#number.").Required().String()
	logs.Action(g.action(func(ctx context.Context) error {
		c := cf.client()
		id, err := resolveRun(ctx, c, *logsID)
		if err != nil {
			return err
		}
		r, err := c.GetRun(ctx, id)
		if err != nil {
			return err
		}
		for _, s := range r.Stages {
			for _, st := range s.Steps {
				if st.StartedAt == nil {
					continue
				}
				if err := printLog(ctx, c, g, st.TaskID, s.Name+"/"+st.Name); err != nil {
					return err
				}
			}
		}
		return nil
	}))
}

// printRun shows a run as tables: the run, then its stages with their
// setup, steps and cleanup; then the log of each setup or cleanup that
// failed.
func printRun(ctx context.Context, c *client.HTTP, g *globals, r *client.Run) error {
	// fields leaves out what is empty: a run that has not finished has
	// no finished line.
	opt := func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return localStamp(t)
	}
	if err := fields(g.Stdout, [][2]string{
		{"run", r.ID}, {"phase", r.Phase}, {"result", r.Result}, {"branch", r.Branch}, {"event", r.Event},
		{"source", sourceLabel(r.Source)}, {"commit", r.Commit},
		{"created", localStamp(&r.CreatedAt)}, {"created by", r.CreatedBy}, {"started", opt(r.StartedAt)}, {"finished", opt(r.FinishedAt)},
		{"duration", runDuration(r.Duration, r.StartedAt)}, {"cancelled", opt(r.CancelledAt)},
		{"name", r.Name}, {"trigger", triggerText(r.Trigger)}, {"restart of", restartText(r)}, {"kept", keptText(r)},
	}); err != nil {
		return err
	}
	for _, e := range r.SetupErrors {
		fmt.Fprintf(g.Stdout, "  %s\n", e.Error())
	}
	if len(r.Stages) == 0 {
		return nil
	}
	fmt.Fprintln(g.Stdout)
	var rows [][]string
	var failed []struct {
		key string
		t   *client.RunStageTask
	}
	stageTask := func(s *client.RunStage, part string, t *client.RunStageTask) {
		if t == nil || t.State == errand.StatePending {
			return
		}
		detail := ""
		if t.Error != nil && (t.State == errand.StateFailed || t.State == errand.StateTimedOut) {
			detail = t.Error.Code + ": " + t.Error.Reason
			failed = append(failed, struct {
				key string
				t   *client.RunStageTask
			}{s.Name + "/" + part, t})
		}
		rows = append(rows, []string{s.Name, "(" + part + ")", string(t.State), detail,
			localStamp(t.StartedAt), localStamp(t.FinishedAt), spanDuration(t.StartedAt, t.FinishedAt), t.TaskID})
	}
	for _, s := range r.Stages {
		detail := ""
		if s.Approval > 0 {
			detail = fmt.Sprintf("approvals %d/%d", len(s.Approvals), s.Approval)
		}
		rows = append(rows, []string{s.Name, "", s.State, detail, localStamp(s.StartedAt), localStamp(s.FinishedAt),
			runDuration(s.Duration, s.StartedAt), ""})
		stageTask(s, partSetup, s.Setup)
		for _, st := range s.Steps {
			detail := ""
			switch {
			case st.ExitCode != nil:
				detail = "exit " + strconv.Itoa(*st.ExitCode)
			case st.Error != nil && st.State != errand.StateSkipped:
				detail = st.Error.Code + ": " + st.Error.Reason
			}
			rows = append(rows, []string{s.Name, st.Name, string(st.State), detail, localStamp(st.StartedAt), localStamp(st.FinishedAt),
				runDuration(st.Duration, st.StartedAt), st.TaskID})
		}
		stageTask(s, partCleanup, s.Cleanup)
	}
	if err := table(g.Stdout, []string{"STAGE", "STEP", "STATE", "DETAIL", "STARTED", "FINISHED", "DURATION", "TASK"}, rows); err != nil {
		return err
	}
	for _, f := range failed {
		fmt.Fprintf(g.Stdout, "\n%s failed: %s: %s\n", f.key, f.t.Error.Code, f.t.Error.Reason)
		if err := printLog(ctx, c, g, f.t.TaskID, f.key); err != nil {
			return err
		}
	}
	return nil
}

// printLog prints a task's log with a prefix.
func printLog(ctx context.Context, c *client.HTTP, g *globals, taskID, prefix string) error {
	pw := &prefixWriter{emit: func(line string) { fmt.Fprintf(g.Stdout, "%s | %s\n", prefix, line) }}
	if err := c.TaskLogs(ctx, taskID, nil, pw); err != nil {
		return err
	}
	pw.flush()
	return nil
}

// localStamp renders a time for a table: local, with its zone; "-" when
// unset.
func localStamp(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.Local().Format(tableTimeLayout)
}

// runDuration renders a duration for a table; "-" before a start.
func runDuration(d errand.Duration, started *time.Time) string {
	return roundDuration(d, started != nil)
}

func spanDuration(start, end *time.Time) string {
	if start == nil || end == nil {
		return "-"
	}
	return end.Sub(*start).Round(time.Millisecond).String()
}

// utcRun puts every time of a run in UTC, the way JSON output shows
// times.
func utcRun(r *client.Run) *client.Run {
	r.CreatedAt = r.CreatedAt.UTC()
	r.StartedAt, r.FinishedAt, r.CancelledAt = utc(r.StartedAt), utc(r.FinishedAt), utc(r.CancelledAt)
	for _, s := range r.Stages {
		s.StartedAt, s.FinishedAt = utc(s.StartedAt), utc(s.FinishedAt)
		for _, t := range []*client.RunStageTask{s.Setup, s.Cleanup} {
			if t != nil {
				t.StartedAt, t.FinishedAt = utc(t.StartedAt), utc(t.FinishedAt)
			}
		}
		for _, st := range s.Steps {
			st.StartedAt, st.FinishedAt = utc(st.StartedAt), utc(st.FinishedAt)
		}
	}
	return r
}
