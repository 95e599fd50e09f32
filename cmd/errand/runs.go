package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/errandci/errand/client"
)

func init() { commands = append(commands, addRunsCommand) }

func addRunsCommand(app *kingpin.Application, g *globals) {
	cmd := app.Command("runs", "List, inspect, cancel and approve pipeline runs, and read their logs.")
	cf := addClientFlags(cmd)

	list := cmd.Command("list", "List runs, newest first.").Alias("ls")
	var after string
	var limit int
	list.Flag("after", "Start after this run id (paging).").StringVar(&after)
	list.Flag("limit", "At most this many runs.").Default("20").IntVar(&limit)
	list.Action(g.action(func(ctx context.Context) error {
		l, err := cf.client().ListRuns(ctx, &client.RunFilter{After: after, Limit: limit})
		if err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(g.Stdout, l)
		}
		rows := make([][]string, len(l.Items))
		for i, r := range l.Items {
			rows[i] = []string{r.ID, r.Phase, r.Result, strconv.Itoa(len(r.Stages)), r.Branch, r.CreatedAt.Local().Format(time.DateTime)}
		}
		return table(g.Stdout, []string{"ID", "PHASE", "RESULT", "STAGES", "BRANCH", "CREATED"}, rows)
	}))

	get := cmd.Command("get", "Show a run with its stages and steps.")
	getID := get.Arg("id", "Run id.").Required().String()
	get.Action(g.action(func(ctx context.Context) error {
		r, err := cf.client().GetRun(ctx, *getID)
		if err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(g.Stdout, r)
		}
		fmt.Fprintf(g.Stdout, "run %s: %s %s\n", r.ID, r.Phase, r.Result)
		for _, e := range r.SetupErrors {
			fmt.Fprintf(g.Stdout, "  %s\n", e.Error())
		}
		var rows [][]string
		for _, s := range r.Stages {
			approvals := ""
			if s.Approval > 0 {
				approvals = fmt.Sprintf("%d/%d", len(s.Approvals), s.Approval)
			}
			rows = append(rows, []string{s.Name, "", s.State, approvals, "", ""})
			for _, st := range s.Steps {
				exit := ""
				if st.ExitCode != nil {
					exit = strconv.Itoa(*st.ExitCode)
				}
				rows = append(rows, []string{s.Name, st.Name, string(st.State), exit, time.Duration(st.Duration).Round(time.Millisecond).String(), st.TaskID})
			}
		}
		return table(g.Stdout, []string{"STAGE", "STEP", "STATE", "EXIT/APPROVALS", "DURATION", "TASK"}, rows)
	}))

	cancel := cmd.Command("cancel", "Cancel a run: running steps are stopped, the rest skipped; cleanups still run.")
	cancelID := cancel.Arg("id", "Run id.").Required().String()
	cancel.Action(g.action(func(ctx context.Context) error {
		if err := cf.client().CancelRun(ctx, *cancelID); err != nil {
			return err
		}
		fmt.Fprintf(g.Stdout, "cancelled: %s\n", *cancelID)
		return nil
	}))

	approve := cmd.Command("approve", "Approve a stage that waits for approvals.")
	approveID := approve.Arg("id", "Run id.").Required().String()
	approveStage := approve.Arg("stage", "Stage name.").Required().String()
	var approver string
	approve.Flag("as", "Approver name (default: admin).").StringVar(&approver)
	approve.Action(g.action(func(ctx context.Context) error {
		if err := cf.client().ApproveRun(ctx, *approveID, *approveStage, approver); err != nil {
			return err
		}
		fmt.Fprintf(g.Stdout, "approved: %s %s\n", *approveID, *approveStage)
		return nil
	}))

	logs := cmd.Command("logs", "Print every step's log, prefixed with stage/step.")
	logsID := logs.Arg("id", "Run id.").Required().String()
	logs.Action(g.action(func(ctx context.Context) error {
		c := cf.client()
		r, err := c.GetRun(ctx, *logsID)
		if err != nil {
			return err
		}
		f := &follower{c: c, out: g.Stdout}
		for _, s := range r.Stages {
			for _, st := range s.Steps {
				if st.StartedAt == nil {
					continue
				}
				pw := &prefixWriter{f: f, prefix: s.Name + "/" + st.Name}
				if err := c.TaskLogs(ctx, st.TaskID, nil, pw); err != nil {
					return err
				}
				pw.flush()
			}
		}
		return nil
	}))
}
