package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/alecthomas/kingpin/v2"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
)

func init() { commands = append(commands, addTasksCommand) }

// maxSpecFile bounds a task spec file read by tasks create.
const maxSpecFile = 16 << 20

func addTasksCommand(app *kingpin.Application, g *globals) {
	cmd := app.Command("tasks", "Create, list, inspect and cancel tasks, and read their logs.")
	cf := addClientFlags(cmd)

	list := cmd.Command("list", "List tasks.").Alias("ls")
	var states []string
	var typ, runID, after string
	var limit int
	list.Flag("state", "Only tasks in this state (repeatable).").EnumsVar(&states, stateNames()...)
	list.Flag("type", "Only tasks of this type.").StringVar(&typ)
	list.Flag("run", "Only tasks of this pipeline run.").StringVar(&runID)
	list.Flag("after", "Start after this task id (paging).").StringVar(&after)
	list.Flag("limit", "At most this many tasks.").Default("100").IntVar(&limit)
	list.Action(g.action(func(ctx context.Context) error {
		f := &client.TaskFilter{Type: typ, RunID: runID, After: after, Limit: limit}
		for _, s := range states {
			f.States = append(f.States, errand.State(s))
		}
		l, err := cf.client().ListTasks(ctx, f)
		if err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(g.Stdout, l)
		}
		return taskTable(g.Stdout, l.Items)
	}))

	get := cmd.Command("get", "Show a task.")
	getID := get.Arg("id", "Task id.").Required().String()
	get.Action(g.action(func(ctx context.Context) error {
		t, err := cf.client().GetTask(ctx, *getID)
		if err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(g.Stdout, t)
		}
		return taskFields(g.Stdout, t)
	}))

	cancel := cmd.Command("cancel", "Cancel tasks: pending and queued ones end at once, running ones are stopped by their delegate.")
	cancelIDs := cancel.Arg("id", "Task ids.").Required().Strings()
	cancel.Action(g.action(func(ctx context.Context) error {
		c := cf.client()
		for _, id := range *cancelIDs {
			if err := c.CancelTask(ctx, id); err != nil {
				return err
			}
			fmt.Fprintf(g.Stdout, "cancel requested: %s\n", id)
		}
		return nil
	}))

	logs := cmd.Command("logs", "Print a task's log.")
	logsID := logs.Arg("id", "Task id.").Required().String()
	follow := logs.Flag("follow", "Keep printing lines as they arrive until the task ends.").Short('f').Bool()
	offset := logs.Flag("offset", "Start at this line (0 is the first).").Default("0").Int64()
	logs.Action(g.action(func(ctx context.Context) error {
		if *offset < 0 {
			return usageErrorf("--offset must not be negative")
		}
		return cf.client().TaskLogs(ctx, *logsID, &client.LogOptions{Offset: *offset, Follow: *follow}, g.Stdout)
	}))

	create := cmd.Command("create", `Create tasks from a JSON file ("-" for standard input): one task spec, or {"tasks": [...]}.`)
	file := create.Arg("file", "JSON file, or - for standard input.").Required().String()
	create.Action(g.action(func(ctx context.Context) error {
		specs, err := readSpecs(*file)
		if err != nil {
			return err
		}
		tasks, err := cf.client().CreateTasks(ctx, specs)
		if err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(g.Stdout, &client.TaskList{Kind: errand.KindTaskList, Items: tasks})
		}
		return taskTable(g.Stdout, tasks)
	}))
}

func stateNames() []string {
	names := make([]string, len(errand.States))
	for i, s := range errand.States {
		names[i] = string(s)
	}
	return names
}

// readSpecs reads task specs from a file or standard input, strictly:
// unknown fields are errors.
func readSpecs(name string) ([]*client.TaskSpec, error) {
	if name == "" { // the command line parser reads a lone "-" as ""
		name = "-"
	}
	var r io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("read task specs: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxSpecFile+1))
	if err != nil {
		return nil, fmt.Errorf("read task specs from %s: %w", name, err)
	}
	if len(b) > maxSpecFile {
		return nil, fmt.Errorf("read task specs from %s: larger than %d bytes", name, maxSpecFile)
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("read task specs from %s: %w", name, httphelper.Unmarshal(b, &probe))
	}
	if _, ok := probe["tasks"]; ok {
		var batch client.TaskBatch
		if err := httphelper.Unmarshal(b, &batch); err != nil {
			return nil, fmt.Errorf("read task specs from %s: %w", name, err)
		}
		if len(batch.Tasks) == 0 {
			return nil, fmt.Errorf("read task specs from %s: the batch holds no task", name)
		}
		return batch.Tasks, nil
	}
	var spec client.TaskSpec
	if err := httphelper.Unmarshal(bytes.TrimSpace(b), &spec); err != nil {
		return nil, fmt.Errorf("read task spec from %s: %w", name, err)
	}
	return []*client.TaskSpec{&spec}, nil
}

func taskTable(w io.Writer, tasks []*client.Task) error {
	rows := make([][]string, 0, len(tasks))
	for _, t := range tasks {
		state := string(t.State)
		if t.CancelRequested && !t.State.Terminal() {
			state += " (cancelling)"
		}
		rows = append(rows, []string{t.ID, t.Type, state, strconv.Itoa(t.Attempt) + "/" + strconv.Itoa(t.MaxAttempts),
			dash(t.DelegateID), stamp(t.CreatedAt)})
	}
	return table(w, []string{"ID", "TYPE", "STATE", "ATTEMPT", "DELEGATE", "CREATED"}, rows)
}

func taskFields(w io.Writer, t *client.Task) error {
	deps := make([]string, 0, len(t.DependsOn))
	for _, d := range t.DependsOn {
		c := d.Condition
		if c == "" {
			c = errand.OnSuccess
		}
		deps = append(deps, d.Task+" ("+string(c)+")")
	}
	var errText string
	if t.Error != nil {
		errText = t.Error.Code + ": " + t.Error.Reason
	}
	var labels []string
	for k, v := range t.Selector.Labels {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	return fields(w, [][2]string{
		{"ID", t.ID},
		{"Type", t.Type},
		{"State", string(t.State)},
		{"Cancel requested", yes(t.CancelRequested)},
		{"Attempt", fmt.Sprintf("%d of %d", t.Attempt, t.MaxAttempts)},
		{"Priority", strconv.Itoa(t.Priority)},
		{"Run", t.RunID},
		{"Depends on", strings.Join(deps, ", ")},
		{"Affinity", t.Affinity},
		{"Labels", strings.Join(labels, ",")},
		{"Arch", t.Selector.Arch},
		{"Group", t.Selector.Group},
		{"Timeout", durationText(t.Timeout)},
		{"Delegate", t.DelegateID},
		{"Log lines", strconv.FormatInt(t.LogLines, 10)},
		{"Created", stamp(t.CreatedAt)},
		{"Queued", stampPtr(t.QueuedAt)},
		{"Started", stampPtr(t.StartedAt)},
		{"Finished", stampPtr(t.FinishedAt)},
		{"Data", string(t.Data)},
		{"Result", string(t.Result)},
		{"Error", errText},
	})
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return ""
}

func durationText(d errand.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}
