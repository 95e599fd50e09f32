package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/alecthomas/kingpin/v2"
	yaml "go.yaml.in/yaml/v3"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/pipelines"
)

func init() { commands = append(commands, addPipelinesCommand) }

// pipelineSpecFlags are the flags that write a pipeline's spec.
type pipelineSpecFlags struct {
	spec, config, configPath, source string
	vars                             map[string]string
	webhookSecrets                   []string
}

func addPipelineSpecFlags(cmd *kingpin.CmdClause) *pipelineSpecFlags {
	f := &pipelineSpecFlags{vars: map[string]string{}}
	cmd.Flag("spec", "A JSON or YAML file holding the whole spec (config, config_path, source, variables, triggers, notify); the other flags override it.").
		Envar("ERRAND_PIPELINE_SPEC").StringVar(&f.spec)
	cmd.Flag("config", "The pipeline config file (.yml, .yaml, .json or .jsonnet), stored with the pipeline.").
		Envar("ERRAND_PIPELINE_CONFIG").StringVar(&f.config)
	cmd.Flag("config-path", "Where the config is in the pipeline's source, read when a run starts (instead of --config).").
		Envar("ERRAND_PIPELINE_CONFIG_PATH").StringVar(&f.configPath)
	cmd.Flag("source", `The runs' source as JSON: '{"git":{"url":"https://…","ref":"main"}}'.`).
		Envar("ERRAND_PIPELINE_SOURCE").StringVar(&f.source)
	cmd.Flag("var", "Variable K=V given to every step and to a Jsonnet config (repeatable).").
		Envar("ERRAND_PIPELINE_VAR").StringMapVar(&f.vars)
	cmd.Flag("webhook-secret", "Name of a manager secret whose value may sign webhook deliveries (repeatable).").
		Envar("ERRAND_PIPELINE_WEBHOOK_SECRET").StringsVar(&f.webhookSecrets)
	return f
}

// build reads the spec the flags say.
func (f *pipelineSpecFlags) build(name string) (*client.PipelineSpec, error) {
	p := &client.PipelineSpec{}
	if f.spec != "" {
		b, err := os.ReadFile(f.spec)
		if err != nil {
			return nil, err
		}
		// YAML is a superset of JSON: one decoder for both, through
		// JSON so that the spec's field names are the API's.
		var doc any
		if err := yaml.Unmarshal(b, &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", f.spec, err)
		}
		j, err := json.Marshal(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.spec, err)
		}
		dec := json.NewDecoder(strings.NewReader(string(j)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(p); err != nil {
			return nil, fmt.Errorf("%s: %w", f.spec, err)
		}
	}
	p.Name = name
	if f.config != "" {
		b, err := os.ReadFile(f.config)
		if err != nil {
			return nil, err
		}
		p.Config, p.Filename, p.ConfigPath = string(b), f.config[strings.LastIndex(f.config, "/")+1:], ""
	}
	if f.configPath != "" {
		p.ConfigPath, p.Config, p.Filename = f.configPath, "", ""
	}
	if f.source != "" {
		if !json.Valid([]byte(f.source)) {
			return nil, fmt.Errorf("--source: not JSON: %s", f.source)
		}
		p.Source = json.RawMessage(f.source)
	}
	if len(f.vars) > 0 {
		if p.Variables == nil {
			p.Variables = map[string]string{}
		}
		for k, v := range f.vars {
			p.Variables[k] = v
		}
	}
	if len(f.webhookSecrets) > 0 {
		p.Triggers = &client.PipelineTriggers{Webhook: &client.WebhookTrigger{Secrets: f.webhookSecrets}}
	}
	return p, nil
}

func addPipelinesCommand(app *kingpin.Application, g *globals) {
	cmd := app.Command("pipelines", "Store named pipelines, start their runs and list them by number.").Alias("pipeline")
	cf := addClientFlags(cmd)
	addPipelineHookCommands(cmd, g, cf)

	create := cmd.Command("create", "Store a pipeline. A name that exists is refused (exit 1).")
	createName := create.Arg("name", "The pipeline's name: a-z, 0-9, '_' and '-'.").Required().String()
	createFlags := addPipelineSpecFlags(create)
	create.Action(g.action(func(ctx context.Context) error {
		spec, err := createFlags.build(*createName)
		if err != nil {
			return err
		}
		p, err := cf.client().CreatePipeline(ctx, spec)
		if err != nil {
			return err
		}
		return cf.print(g.Stdout, p, func() error { return printPipeline(g, p) })
	}))

	update := cmd.Command("update", "Replace a pipeline's spec; its runs and their numbers are kept.")
	updateName := update.Arg("name", "The pipeline's name.").Required().String()
	updateFlags := addPipelineSpecFlags(update)
	update.Action(g.action(func(ctx context.Context) error {
		spec, err := updateFlags.build(*updateName)
		if err != nil {
			return err
		}
		p, err := cf.client().UpdatePipeline(ctx, *updateName, spec)
		if err != nil {
			return err
		}
		return cf.print(g.Stdout, p, func() error { return printPipeline(g, p) })
	}))

	list := cmd.Command("list", "List pipelines in name order.").Alias("ls")
	var lf client.PipelineFilter
	list.Flag("prefix", "Only the pipelines whose name starts with this.").Envar("ERRAND_PREFIX").StringVar(&lf.Prefix)
	list.Flag("after", "Start after this name (paging).").Envar("ERRAND_AFTER").StringVar(&lf.After)
	list.Flag("limit", "At most this many pipelines.").Envar("ERRAND_LIMIT").Default("50").IntVar(&lf.Limit)
	list.Action(g.action(func(ctx context.Context) error {
		l, err := cf.client().ListPipelines(ctx, &lf)
		if err != nil {
			return err
		}
		return cf.print(g.Stdout, l, func() error {
			rows := make([][]string, len(l.Items))
			for i, p := range l.Items {
				rows[i] = []string{p.Name, strconv.FormatInt(p.LastNumber, 10), configOf(&p.PipelineSpec), dash(p.CreatedBy), localStamp(&p.UpdatedAt)}
			}
			return table(g.Stdout, []string{"NAME", "RUNS", "CONFIG", "CREATED BY", "UPDATED"}, rows)
		})
	}))

	get := cmd.Command("get", "Show a pipeline and its latest runs.")
	getName := get.Arg("name", "The pipeline's name.").Required().String()
	get.Action(g.action(func(ctx context.Context) error {
		c := cf.client()
		p, err := c.GetPipeline(ctx, *getName)
		if err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(g.Stdout, p)
		}
		if err := printPipeline(g, p); err != nil {
			return err
		}
		runs, err := c.ListPipelineRuns(ctx, p.Name, &client.PipelineRunFilter{Limit: 10})
		if err != nil {
			return err
		}
		fmt.Fprintln(g.Stdout)
		return printNumberedRuns(g, runs)
	}))

	del := cmd.Command("delete", "Delete a pipeline; its runs are kept, still found by number.").Alias("rm")
	delName := del.Arg("name", "The pipeline's name.").Required().String()
	del.Action(g.action(func(ctx context.Context) error {
		if err := cf.client().DeletePipeline(ctx, *delName); err != nil {
			return err
		}
		fmt.Fprintf(g.Stdout, "deleted: %s\n", *delName)
		return nil
	}))

	run := cmd.Command("run", "Start a run of a pipeline as you; with --follow, stream it and exit with its result "+
		"(0 success, 1 the run failed, 2 config error, 3 could not follow the run, 130 interrupted).")
	runName := run.Arg("name", "The pipeline's name.").Required().String()
	var (
		req    client.PipelineRunRequest
		follow bool
		vars   = map[string]string{}
	)
	run.Flag("ref", "Branch (refs/heads/x or x) or tag the run is for.").Envar("ERRAND_REF").StringVar(&req.Ref)
	run.Flag("commit", "Commit the run checks out.").Envar("ERRAND_COMMIT").StringVar(&req.Commit)
	run.Flag("event", "Event of the run, matched against the stages' when.").Envar("ERRAND_EVENT").StringVar(&req.Event)
	run.Flag("var", "Variable K=V over the pipeline's (repeatable).").Envar("ERRAND_VAR").StringMapVar(&vars)
	run.Flag("follow", "Stream the run's logs and exit with its result. Ctrl-C stops following; the run goes on.").Short('f').Envar("ERRAND_FOLLOW").BoolVar(&follow)
	run.Action(func(*kingpin.ParseContext) error {
		if len(vars) > 0 {
			req.Variables = vars
		}
		c := cf.client()
		r, err := c.StartPipelineRun(g.Ctx, *runName, &req)
		if err != nil {
			return &exitError{code: exitFailed, err: err}
		}
		return startedRun(g, cf, c, r, follow)
	})

	runsCmd := cmd.Command("runs", "List a pipeline's runs, highest number first.")
	runsName := runsCmd.Arg("name", "The pipeline's name.").Required().String()
	var rf client.PipelineRunFilter
	runsCmd.Flag("before", "Runs numbered below this (paging).").Envar("ERRAND_BEFORE").Int64Var(&rf.Before)
	runsCmd.Flag("limit", "At most this many runs.").Envar("ERRAND_LIMIT").Default("20").IntVar(&rf.Limit)
	runsCmd.Flag("trigger", "Only runs started this way: user, webhook, restart.").Envar("ERRAND_TRIGGER").StringVar(&rf.Trigger)
	runsCmd.Flag("ref", "Only runs for this ref.").Envar("ERRAND_REF").StringVar(&rf.Ref)
	runsCmd.Flag("commit", "Only runs of this commit.").Envar("ERRAND_COMMIT").StringVar(&rf.Commit)
	runsCmd.Flag("phase", "Only runs in this phase: queued, running, finished, setuperror.").Envar("ERRAND_PHASE").StringVar(&rf.Phase)
	runsCmd.Flag("result", "Only runs with this result: unknown, success, failed, cancelled.").Envar("ERRAND_RESULT").StringVar(&rf.Result)
	runsCmd.Action(g.action(func(ctx context.Context) error {
		l, err := cf.client().ListPipelineRuns(ctx, *runsName, &rf)
		if err != nil {
			return err
		}
		if cf.output == "json" {
			for _, r := range l.Items {
				utcRun(r)
			}
			return printJSON(g.Stdout, l)
		}
		return printNumberedRuns(g, l)
	}))
}

// startedRun prints a run just started, and follows it with follow.
func startedRun(g *globals, cf *clientFlags, c *client.HTTP, r *client.Run, follow bool) error {
	jsonOut := cf.output == "json"
	switch {
	case jsonOut && !follow:
		return printJSON(g.Stdout, utcRun(r))
	case jsonOut:
	default:
		fmt.Fprintf(g.Stdout, "run %s %s %s%s\n", runLabel(r), r.ID, strings.TrimRight(c.BaseURL(), "/"), r.Href)
	}
	if !follow {
		if r.Phase == "setuperror" {
			for _, e := range r.SetupErrors {
				fmt.Fprintf(g.Stdout, "  %s\n", e.Error())
			}
			return exitFor(exitConfigError)
		}
		return nil
	}
	once := *cf
	once.retry = 0
	code, err := followRun(g.Ctx, once.client(), r.ID, g.Stdout, followOptions{
		colour: useColour(g.Stdout, false) && !jsonOut, json: jsonOut, retry: followRetry, lostCode: exitCouldNotFollow})
	if err != nil {
		return &exitError{code: max(code, exitFailed), err: err}
	}
	if code == exitRunInterrupted {
		return &exitError{code: code, err: fmt.Errorf("interrupted: stopped following run %s, which goes on", r.ID)}
	}
	return exitFor(code)
}

// runLabel names a run: pipeline#number, or its id.
func runLabel(r *client.Run) string {
	if r.Name != "" {
		return r.Name
	}
	return r.ID
}

func configOf(p *client.PipelineSpec) string {
	if p.ConfigPath != "" {
		return "source:" + p.ConfigPath
	}
	return p.Filename
}

func printPipeline(g *globals, p *client.Pipeline) error {
	kv := [][2]string{{"pipeline", p.Name}, {"config", configOf(&p.PipelineSpec)}, {"runs", strconv.FormatInt(p.LastNumber, 10)},
		{"created", localStamp(&p.CreatedAt)}, {"created by", p.CreatedBy}, {"updated", localStamp(&p.UpdatedAt)}}
	if len(p.Source) > 0 {
		kv = append(kv, [2]string{"source", string(p.Source)})
	}
	for _, k := range slices.Sorted(maps.Keys(p.Variables)) {
		kv = append(kv, [2]string{"var " + k, p.Variables[k]})
	}
	if t := p.Triggers; t != nil && t.Webhook != nil {
		kv = append(kv, [2]string{"webhook", "secrets " + strings.Join(t.Webhook.Secrets, ", ")})
	}
	for _, n := range p.Notify {
		switch {
		case n.Webhook != nil:
			kv = append(kv, [2]string{"notify", "webhook " + n.Webhook.URL + " on " + strings.Join(n.Webhook.On, ",")})
		case n.Slack != nil:
			kv = append(kv, [2]string{"notify", "slack " + n.Slack.URLSecret + " on " + strings.Join(n.Slack.On, ",")})
		}
	}
	return fields(g.Stdout, kv)
}

func printNumberedRuns(g *globals, l *client.RunList) error {
	rows := make([][]string, len(l.Items))
	for i, r := range l.Items {
		trig, ref, commit := "-", "-", "-"
		if t := r.Trigger; t != nil {
			trig = t.Kind
			if t.Who != "" {
				trig += " " + t.Who
			}
			ref, commit = dash(t.Ref), dash(shortCommit(t.Commit))
		}
		rows[i] = []string{runLabel(r), r.Phase, r.Result, trig, ref, commit, dash(r.RestartOf), localStamp(&r.CreatedAt), runDuration(r.Duration, r.StartedAt)}
	}
	return table(g.Stdout, []string{"RUN", "PHASE", "RESULT", "TRIGGER", "REF", "COMMIT", "RESTART OF", "CREATED", "DURATION"}, rows)
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// resolveRun returns the id of the run arg names: an id, or
// pipeline#number.
func resolveRun(ctx context.Context, c *client.HTTP, arg string) (string, error) {
	name, n, ok := pipelines.ParseRunName(arg)
	if !ok {
		return arg, nil
	}
	r, err := c.GetPipelineRun(ctx, name, n)
	if err != nil {
		return "", err
	}
	return r.ID, nil
}

// triggerText says who or what started a run and for what change.
func triggerText(t *client.RunTrigger) string {
	if t == nil {
		return ""
	}
	parts := []string{t.Kind}
	for _, f := range [][2]string{{"by", t.Who}, {"event", t.Event}, {"ref", t.Ref}, {"commit", shortCommit(t.Commit)}, {"author", t.Author}} {
		if f[1] != "" {
			parts = append(parts, f[0]+" "+f[1])
		}
	}
	if t.Message != "" {
		msg, _, _ := strings.Cut(t.Message, "\n")
		parts = append(parts, strconv.Quote(msg))
	}
	return strings.Join(parts, ", ")
}

func restartText(r *client.Run) string {
	if r.RestartOf == "" {
		return ""
	}
	return r.RestartOf + " (from " + r.RestartFrom + ")"
}

// keptText names the stages a restart kept from the runs it restarts.
func keptText(r *client.Run) string {
	var kept []string
	for _, s := range r.Stages {
		if s.KeptFrom != "" {
			kept = append(kept, s.Name+" from "+s.KeptFrom)
		}
	}
	return strings.Join(kept, ", ")
}
