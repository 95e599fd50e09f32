package main

import (
	"fmt"
	"strings"

	"github.com/alecthomas/kingpin/v2"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/pipeline"
)

func init() { commands = append(commands, addSubmitCommand) }

func addSubmitCommand(app *kingpin.Application, g *globals) {
	cmd := app.Command("submit", "Submit a pipeline config to a manager; with --follow, stream it like errand run and exit with its result "+
		"(0 success, 1 the run failed, 2 config error, 3 could not follow the run, 130 interrupted).")
	cf := addClientFlags(cmd)
	var (
		path                 string
		follow, cancelOnInt  bool
		noColour, timestamps bool
		branch, event        string
		extStr               = map[string]string{}
	)
	cmd.Arg("file", "A config file, or a directory holding config.jsonnet, config.json or config.yml.").Required().StringVar(&path)
	cmd.Flag("follow", "Stream the run's logs and exit with its result. Ctrl-C stops following; the run goes on.").Short('f').Envar("ERRAND_FOLLOW").BoolVar(&follow)
	cmd.Flag("cancel-on-interrupt", "With --follow: Ctrl-C (SIGINT, SIGTERM) also cancels the run and follows its cleanups.").Envar("ERRAND_CANCEL_ON_INTERRUPT").BoolVar(&cancelOnInt)
	retryFor := followRetry
	cmd.Flag("reconnect-for", "With --follow: how long a manager that does not answer (a restart) is retried before errand gives up with exit code 3.").
		Envar("ERRAND_RECONNECT_FOR").Default(followRetry.String()).DurationVar(&retryFor)
	addOutputFlags(cmd, &noColour, &timestamps)
	cmd.Flag("branch", "Branch of the run.").Envar("ERRAND_BRANCH").StringVar(&branch)
	cmd.Flag("event", "Event of the run.").Envar("ERRAND_EVENT").StringVar(&event)
	cmd.Flag("ext-str", "Jsonnet external variable K=V (repeatable).").Envar("ERRAND_EXT_STR").StringMapVar(&extStr)
	jf := addJsonnetFlags(cmd)
	sf := addSourceFlags(cmd)
	cmd.Action(func(*kingpin.ParseContext) error {
		if err := jf.validate(); err != nil {
			return err
		}
		source, commit, err := sf.source()
		if err != nil {
			return err
		}
		// Jsonnet is rendered here, where its imports are.
		name, src, err := pipeline.Render(path, jf.loadOptions(extStr))
		if err != nil {
			return &exitError{code: exitConfigError, err: err}
		}
		c := cf.client()
		run, err := c.CreateRun(g.Ctx, &client.RunRequest{Config: string(src), Filename: name,
			Branch: branch, Event: event, ExtStr: extStr, Source: source, Commit: commit})
		if err != nil {
			return &exitError{code: exitFailed, err: err}
		}
		jsonOut := cf.output == "json"
		switch {
		case jsonOut && !follow:
			if err := printJSON(g.Stdout, utcRun(run)); err != nil {
				return err
			}
		case jsonOut:
			// The events say which run they belong to.
		default:
			fmt.Fprintf(g.Stdout, "run %s %s%s\n", run.ID, strings.TrimRight(c.BaseURL(), "/"), run.Href)
		}
		if !follow {
			if run.Phase == "setuperror" {
				if !jsonOut {
					for _, e := range run.SetupErrors {
						fmt.Fprintf(g.Stdout, "  %s\n", e.Error())
					}
				}
				return exitFor(exitConfigError)
			}
			return nil
		}
		// Following retries a manager that does not answer itself
		// (--reconnect-for): its client sends each call once, so that
		// the retries are not nested.
		once := *cf
		once.retry = 0
		code, err := followRun(g.Ctx, once.client(), run.ID, g.Stdout, followOptions{
			colour: useColour(g.Stdout, noColour) && !jsonOut, timestamps: timestamps, json: jsonOut,
			cancelOnInterrupt: cancelOnInt, retry: retryFor, lostCode: exitCouldNotFollow})
		if err != nil {
			return &exitError{code: max(code, exitFailed), err: err}
		}
		if code == exitRunInterrupted && !cancelOnInt {
			return &exitError{code: code, err: fmt.Errorf("interrupted: stopped following run %s, which goes on", run.ID)}
		}
		return exitFor(code)
	})
}
