package main

import (
	"context"
	"fmt"
	"os"

	"github.com/alecthomas/kingpin/v2"

	"github.com/errandci/errand/pipeline"
)

func init() { commands = append(commands, addLintCommand) }

func addLintCommand(app *kingpin.Application, g *globals) {
	cmd := app.Command("lint", "Load and validate a pipeline without running it: every problem as FILE:LINE:COL: path: message. Exit 0 when it is valid, 2 when not.")
	var path string
	ext := map[string]string{}
	cmd.Arg("path", "A directory holding config.jsonnet, config.json or config.yml, or a config file.").Default(".").StringVar(&path)
	cmd.Flag("ext-str", "Jsonnet external variable K=V (repeatable).").Envar("ERRAND_EXT_STR").StringMapVar(&ext)
	cmd.Action(g.action(func(context.Context) error {
		if _, err := os.Stat(path); err != nil {
			return usageErrorf("%s: %s", path, pathProblem(err))
		}
		for _, w := range pipeline.Warnings(path) {
			fmt.Fprintf(g.Stderr, "errand: warning: %s\n", w)
		}
		if _, _, _, err := localConfig(path, pipeline.LoadOptions{ExtStr: ext}); err != nil {
			fmt.Fprintln(g.Stdout, configReport(err))
			return &exitError{code: exitConfigError, err: fmt.Errorf("%s: the config has errors", path)}
		}
		fmt.Fprintf(g.Stdout, "%s: ok\n", path)
		return nil
	}))
}

// configReport is how errand lint and errand run show a config's
// problems: one a line, FILE:LINE:COL: path: message.
func configReport(err error) string {
	return err.Error()
}

// didYouMean suggests the closest of names to s, or returns "".
func didYouMean(s string, names []string) string {
	if best := pipeline.Closest(s, names); best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}
