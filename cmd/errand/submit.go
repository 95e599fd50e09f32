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
	cmd := app.Command("submit", "Submit a pipeline config to a manager; with --follow, stream it like errand run and exit with its result.")
	cf := addClientFlags(cmd)
	var (
		path          string
		follow        bool
		branch, event string
		extStr        = map[string]string{}
	)
	cmd.Arg("file", "A config file, or a directory holding config.jsonnet, config.json or config.yml.").Required().StringVar(&path)
	cmd.Flag("follow", "Stream the run's logs and exit with its result.").Short('f').BoolVar(&follow)
	cmd.Flag("branch", "Branch of the run.").StringVar(&branch)
	cmd.Flag("event", "Event of the run.").StringVar(&event)
	cmd.Flag("ext-str", "Jsonnet external variable K=V (repeatable).").StringMapVar(&extStr)
	cmd.Action(func(*kingpin.ParseContext) error {
		// Jsonnet is rendered here, where its imports are.
		name, src, err := pipeline.Render(path, pipeline.LoadOptions{ExtStr: extStr})
		if err != nil {
			return &exitError{code: exitConfigError, err: err}
		}
		c := cf.client()
		run, err := c.CreateRun(g.Ctx, &client.RunRequest{Config: string(src), Filename: name,
			Branch: branch, Event: event, ExtStr: extStr})
		if err != nil {
			return &exitError{code: exitFailed, err: err}
		}
		fmt.Fprintf(g.Stdout, "run %s %s%s\n", run.ID, strings.TrimRight(c.BaseURL(), "/"), run.Href)
		if !follow {
			if run.Phase == "setuperror" {
				for _, e := range run.SetupErrors {
					fmt.Fprintf(g.Stdout, "  %s\n", e.Error())
				}
				return exitFor(exitConfigError)
			}
			return nil
		}
		code, err := followRun(g.Ctx, c, run.ID, g.Stdout, followOptions{colour: useColour(g.Stdout)})
		if err != nil {
			return &exitError{code: max(code, exitFailed), err: err}
		}
		return exitFor(code)
	})
}
