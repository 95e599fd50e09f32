package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
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

	list := cmd.Command("list", "List tasks, newest first, with the stage, step and delegate name of each.").Alias("ls")
	var states []string
	var typ, runID, after string
	var limit int
	list.Flag("state", "Only tasks in this state (repeatable).").Envar("ERRAND_STATE").EnumsVar(&states, stateNames()...)
	list.Flag("type", "Only tasks of this type.").Envar("ERRAND_TYPE").StringVar(&typ)
	list.Flag("run", "Only tasks of this pipeline run.").Envar("ERRAND_RUN").StringVar(&runID)
	list.Flag("after", "Only tasks created after this task id.").Envar("ERRAND_AFTER").StringVar(&after)
	list.Flag("limit", "At most this many tasks: the newest.").Envar("ERRAND_LIMIT").Default("100").IntVar(&limit)
	list.Action(g.action(func(ctx context.Context) error {
		if limit < 1 {
			return usageErrorf("--limit: %d; at least 1", limit)
		}
		f := &client.TaskFilter{Type: typ, RunID: runID, After: after}
		for _, s := range states {
			f.States = append(f.States, errand.State(s))
		}
		c := cf.client()
		items, err := newestTasks(ctx, c, f, limit)
		if err != nil {
			return err
		}
		return cf.print(g.Stdout, &client.TaskList{Kind: errand.KindTaskList, Items: items}, func() error {
			names, err := delegateNames(ctx, c, items)
			if err != nil {
				return err
			}
			return taskTable(g.Stdout, items, names)
		})
	}))

	get := cmd.Command("get", "Show a task.")
	getID := get.Arg("id", "Task id.").Required().String()
	get.Action(g.action(func(ctx context.Context) error {
		c := cf.client()
		t, err := c.GetTask(ctx, *getID)
		if err != nil {
			return err
		}
		return cf.print(g.Stdout, t, func() error {
			names, err := delegateNames(ctx, c, []*client.Task{t})
			if err != nil {
				return err
			}
			return taskFields(g.Stdout, t, names)
		})
	}))

	cancel := cmd.Command("cancel", "Cancel tasks: pending and queued ones end at once, running ones are stopped by their delegate.")
	cancelIDs := cancel.Arg("id", "Task ids.").Required().Strings()
	cancel.Action(g.action(func(ctx context.Context) error {
		c := cf.client()
		var done []actionResult
		for _, id := range *cancelIDs {
			if err := c.CancelTask(ctx, id); err != nil {
				return err
			}
			done = append(done, actionResult{Kind: "task", ID: id, Action: "cancel_requested"})
			if cf.output != "json" {
				fmt.Fprintf(g.Stdout, "cancel requested: %s\n", id)
			}
		}
		if cf.output == "json" {
			return printJSON(g.Stdout, done)
		}
		return nil
	}))

	logs := cmd.Command("logs", "Print a task's log; with -o json, one object per line with the line's offset and text.")
	logsID := logs.Arg("id", "Task id.").Required().String()
	follow := logs.Flag("follow", "Keep printing lines as they arrive until the task ends.").Short('f').Envar("ERRAND_FOLLOW").Bool()
	offset := logs.Flag("offset", "Start at this line (0 is the first).").Envar("ERRAND_OFFSET").Default("0").Int64()
	logs.Action(g.action(func(ctx context.Context) error {
		if *offset < 0 {
			return usageErrorf("--offset: %d; 0 (the first line) or more", *offset)
		}
		var w io.Writer = g.Stdout
		var jw *logJSONWriter
		if cf.output == "json" {
			jw = &logJSONWriter{enc: json.NewEncoder(g.Stdout), offset: *offset}
			w = jw
		}
		err := cf.client().TaskLogs(ctx, *logsID, &client.LogOptions{Offset: *offset, Follow: *follow}, w)
		if jw != nil && err == nil {
			err = jw.flush()
		}
		return err
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
		return cf.print(g.Stdout, &client.TaskList{Kind: errand.KindTaskList, Items: tasks}, func() error {
			return taskTable(g.Stdout, tasks, nil)
		})
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

// listPage is the largest page the API answers.
const listPage = 1000

// newestTasks returns the newest limit tasks that f selects, newest first,
// listing newest first. With f.After it first asks for the oldest task
// that follows f.After and stops there, so that only tasks created after
// f.After are kept.
func newestTasks(ctx context.Context, c *client.HTTP, f *client.TaskFilter, limit int) ([]*client.Task, error) {
	stop := ""
	if f.After != "" {
		first := *f
		first.Order, first.Limit = client.OrderAsc, 1
		l, err := c.ListTasks(ctx, &first)
		if err != nil {
			return nil, err
		}
		if len(l.Items) == 0 {
			return nil, nil
		}
		stop = l.Items[0].ID
	}
	var kept []*client.Task
	page := *f
	page.Order, page.After = client.OrderDesc, ""
	for len(kept) < limit {
		page.Limit = min(limit-len(kept), listPage)
		l, err := c.ListTasks(ctx, &page)
		if err != nil {
			return nil, err
		}
		for _, t := range l.Items {
			kept = append(kept, t)
			if t.ID == stop {
				return kept, nil
			}
		}
		if l.Next == "" || len(l.Items) == 0 {
			break
		}
		page.After = l.Next
	}
	if stop != "" && len(kept) < limit {
		// The first task after f.After went away (pruned) while listing:
		// walk forward from f.After instead.
		return newestAfter(ctx, c, f, limit)
	}
	return kept, nil
}

// newestAfter returns the newest limit tasks that f selects, newest first,
// by paging oldest first from f.After and keeping the last ones.
func newestAfter(ctx context.Context, c *client.HTTP, f *client.TaskFilter, limit int) ([]*client.Task, error) {
	var kept []*client.Task
	page := *f
	page.Order, page.Limit = client.OrderAsc, listPage
	for {
		l, err := c.ListTasks(ctx, &page)
		if err != nil {
			return nil, err
		}
		kept = append(kept, l.Items...)
		if len(kept) > limit {
			kept = append(kept[:0], kept[len(kept)-limit:]...)
		}
		if l.Next == "" || len(l.Items) == 0 {
			break
		}
		page.After = l.Next
	}
	slices.Reverse(kept)
	return kept, nil
}

// delegateNames maps the ids of the delegates that ran tasks to their
// names, from one list of delegates; nil when no task has a delegate.
func delegateNames(ctx context.Context, c *client.HTTP, tasks []*client.Task) (map[string]string, error) {
	if !slices.ContainsFunc(tasks, func(t *client.Task) bool { return t.DelegateID != "" }) {
		return nil, nil
	}
	l, err := c.ListDelegates(ctx)
	if err != nil {
		return nil, err
	}
	names := make(map[string]string, len(l.Items))
	for _, d := range l.Items {
		names[d.ID] = d.Name
	}
	return names, nil
}

// delegateName is the name of a task's delegate, its id when the
// delegate is gone (a dynamic one removed), "-" when it has none.
func delegateName(names map[string]string, id string) string {
	if n, ok := names[id]; ok && n != "" {
		return n
	}
	return dash(id)
}

// stageStep returns the stage and step of a task of the built-in exec
// and docker types (those a pipeline stage expands into), from its data;
// the step is empty for a stage's initialize and cleanup tasks, both are
// for tasks of other types.
func stageStep(t *client.Task) (stage, step string) {
	if !strings.HasPrefix(t.Type, "exec.") && !strings.HasPrefix(t.Type, "docker.") || len(t.Data) == 0 {
		return "", ""
	}
	var d struct {
		Stage string `json:"stage"`
		Step  string `json:"step"`
	}
	if json.Unmarshal(t.Data, &d) != nil {
		return "", ""
	}
	return d.Stage, d.Step
}

func taskTable(w io.Writer, tasks []*client.Task, names map[string]string) error {
	rows := make([][]string, 0, len(tasks))
	for _, t := range tasks {
		state := string(t.State)
		if t.CancelRequested && !t.State.Terminal() {
			state += " (cancelling)"
		}
		stage, step := stageStep(t)
		rows = append(rows, []string{t.ID, t.Type, state, strconv.Itoa(t.Attempt) + "/" + strconv.Itoa(t.MaxAttempts),
			dash(stage), dash(step), delegateName(names, t.DelegateID), localTime(t.CreatedAt)})
	}
	return table(w, []string{"ID", "TYPE", "STATE", "ATTEMPT", "STAGE", "STEP", "DELEGATE", "CREATED"}, rows)
}

// logJSONWriter turns the log lines written to it into one JSON object
// per line: {"offset": N, "text": "…"}.
type logJSONWriter struct {
	enc     *json.Encoder
	offset  int64
	partial []byte
}

// logLine is a log line of `tasks logs -o json`.
type logLine struct {
	Offset int64  `json:"offset"`
	Text   string `json:"text"`
}

func (l *logJSONWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.partial = append(l.partial, p...)
			break
		}
		line := append(l.partial, p[:i]...)
		l.partial = l.partial[:0]
		p = p[i+1:]
		if err := l.enc.Encode(logLine{Offset: l.offset, Text: string(line)}); err != nil {
			return 0, fmt.Errorf("write log line: %w", err)
		}
		l.offset++
	}
	return n, nil
}

// flush writes a last line that had no newline.
func (l *logJSONWriter) flush() error {
	if len(l.partial) == 0 {
		return nil
	}
	_, err := l.Write([]byte("\n"))
	return err
}

// actionResult is what an action on several objects (cancel, drain)
// prints with -o json, one per object.
type actionResult struct {
	Kind   string `json:"kind"`
	ID     string `json:"id"`
	Action string `json:"action"`
}

func taskFields(w io.Writer, t *client.Task, names map[string]string) error {
	stage, step := stageStep(t)
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
		{"Stage", stage},
		{"Step", step},
		{"Delegate", delegateNameID(names, t.DelegateID)},
		{"Log lines", strconv.FormatInt(t.LogLines, 10)},
		{"Created", localTime(t.CreatedAt)},
		{"Queued", localTimePtr(t.QueuedAt)},
		{"Started", localTimePtr(t.StartedAt)},
		{"Finished", localTimePtr(t.FinishedAt)},
		{"Data", string(t.Data)},
		{"Result", string(t.Result)},
		{"Error", errText},
	})
}

// delegateNameID is a delegate's name with its id, for fields.
func delegateNameID(names map[string]string, id string) string {
	if n, ok := names[id]; ok && n != "" && n != id {
		return n + " (" + id + ")"
	}
	return id
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
