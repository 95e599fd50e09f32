// Command errand is Errand's one binary: the manager, the delegate, a
// local runner and the client commands of the manager's API.
//
// Each command lives in a file of its own and adds itself to the
// application from that file's init function through the commands
// registry, so main.go never changes when a command is added.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"text/template"

	"github.com/alecthomas/kingpin/v2"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/jsonnetbox"
)

// Set with -ldflags "-X main.version=v1.2.3 -X main.commit=abc123".
var (
	version = "dev"
	commit  = ""
)

// commands is the registry: each command file appends the function that
// adds its command to the application.
var commands []func(app *kingpin.Application, g *globals)

// globals is what every command shares: where to write, and the context
// that SIGINT and SIGTERM cancel.
type globals struct {
	// Ctx is cancelled when the process is asked to stop.
	Ctx    context.Context
	Stdout io.Writer
	Stderr io.Writer
}

// exitError carries the exit code a command's failure ends with.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // the command failed: an API error, a file not found
	exitUsage  = 2 // the command line is wrong
)

// action wraps a command's body as a kingpin action. Its error ends the
// process with exit code 1 (2 for usage errors made with usageErrorf),
// where kingpin's own parse errors end it with 2.
func (g *globals) action(fn func(ctx context.Context) error) kingpin.Action {
	return func(*kingpin.ParseContext) error {
		if err := fn(g.Ctx); err != nil {
			var ee *exitError
			if errors.As(err, &ee) {
				return err
			}
			return &exitError{code: exitFailed, err: err}
		}
		return nil
	}
}

// usageErrorf returns an error that ends the process with exit code 2.
func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// terminated is raised by kingpin's terminate hook (after --help or
// --version) and recovered by run.
type terminated int

func main() {
	// First thing: this process may be the child that evaluates a Jsonnet
	// program under limits, started by this program itself.
	jsonnetbox.ServeIfChild()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// newApp returns the application with every command of the registry.
func newApp(g *globals) *kingpin.Application {
	app := kingpin.New("errand", "Errand runs typed tasks on build hosts: a manager queues them, delegates run them.\n\n"+
		"Every flag can also be set by the ERRAND_… environment variable shown beside it.")
	app.Writer(g.Stdout).UsageWriter(g.Stdout).ErrorWriter(g.Stderr)
	app.HelpFlag.Short('h')
	app.Version(versionText())
	app.VersionFlag.Short('V')
	app.Terminate(func(c int) { panic(terminated(c)) })
	app.UsageTemplate(usageTemplate).UsageFuncs(template.FuncMap{
		"ConnectionFlags": func(f []*kingpin.FlagModel) []*kingpin.FlagModel { return splitFlags(f, true) },
		"OtherFlags":      func(f []*kingpin.FlagModel) []*kingpin.FlagModel { return splitFlags(f, false) },
	})
	for _, add := range commands {
		add(app, g)
	}
	nameFlagErrors(app)
	return app
}

// connectionFlags are the flags that say how to reach the manager, shown
// apart in the help of the commands that have --manager.
var connectionFlags = []string{"manager", "token", "data-dir", "timeout", "retry"}

// splitFlags returns the connection flags of a command's flags
// (connection true), or the others.
func splitFlags(flags []*kingpin.FlagModel, connection bool) []*kingpin.FlagModel {
	client := slices.ContainsFunc(flags, func(f *kingpin.FlagModel) bool { return f.Name == "manager" })
	var out []*kingpin.FlagModel
	for _, f := range flags {
		if (client && slices.Contains(connectionFlags, f.Name)) == connection {
			out = append(out, f)
		}
	}
	return out
}

// usageTemplate is kingpin's default help with the connection flags in a
// section of their own.
var usageTemplate = strings.Replace(kingpin.DefaultUsageTemplate, `{{if .Context.Flags -}}
Flags:
{{.Context.Flags|FlagsToTwoColumns|FormatTwoColumns}}
{{end -}}`, `{{if .Context.Flags -}}
Flags:
{{.Context.Flags|OtherFlags|FlagsToTwoColumns|FormatTwoColumns}}
{{end -}}
{{if .Context.Flags|ConnectionFlags -}}
Connection flags (shared by every command that talks to a manager):
{{.Context.Flags|ConnectionFlags|FlagsToTwoColumns|FormatTwoColumns}}
{{end -}}`, 1)

// nameFlagErrors makes the error of a bad flag value (from the command
// line or its environment variable) name the flag and its variable:
// kingpin reports only what the value's parser said.
func nameFlagErrors(app *kingpin.Application) {
	wrap := func(f *kingpin.FlagClause, m *kingpin.FlagModel) {
		if f != nil && m.Value != nil {
			f.SetValue(&namedValue{Value: m.Value, name: m.Name, envar: m.Envar})
		}
	}
	var walk func(c *kingpin.CmdClause, m *kingpin.CmdModel)
	walk = func(c *kingpin.CmdClause, m *kingpin.CmdModel) {
		for _, fm := range m.Flags {
			wrap(c.GetFlag(fm.Name), fm)
		}
		for _, sub := range m.Commands {
			walk(c.GetCommand(sub.Name), sub)
		}
	}
	model := app.Model()
	for _, fm := range model.Flags {
		wrap(app.GetFlag(fm.Name), fm)
	}
	for _, cm := range model.Commands {
		walk(app.GetCommand(cm.Name), cm)
	}
}

// namedValue is a flag's value whose errors name the flag.
type namedValue struct {
	kingpin.Value
	name, envar string
}

func (v *namedValue) Set(s string) error {
	if err := v.Value.Set(s); err != nil {
		if v.envar != "" {
			return fmt.Errorf("--%s (or %s): %w", v.name, v.envar, err)
		}
		return fmt.Errorf("--%s: %w", v.name, err)
	}
	return nil
}

// IsBoolFlag keeps a bool flag one that takes no value.
func (v *namedValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// IsCumulative keeps a repeatable flag repeatable.
func (v *namedValue) IsCumulative() bool {
	c, ok := v.Value.(interface{ IsCumulative() bool })
	return ok && c.IsCumulative()
}

// Get returns what the wrapped value holds.
func (v *namedValue) Get() any {
	if g, ok := v.Value.(kingpin.Getter); ok {
		return g.Get()
	}
	return v.Value.String()
}

// run runs the command line args and returns the exit code.
func run(args []string, stdout, stderr io.Writer) (code int) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	g := &globals{Ctx: ctx, Stdout: stdout, Stderr: stderr}

	app := newApp(g)

	defer func() {
		if r := recover(); r != nil {
			t, ok := r.(terminated)
			if !ok {
				panic(r)
			}
			code = int(t)
		}
	}()
	if len(args) == 0 {
		fmt.Fprintln(stderr, "errand: expected command; try --help")
		return exitUsage
	}
	_, err := app.Parse(args)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		fmt.Fprintf(stderr, "errand: %v\n", err)
		fmt.Fprintln(stderr, "errand: try --help")
		return exitUsage
	}
	fmt.Fprintf(stderr, "errand: %s\n", describe(ee.err))
	return ee.code
}

// describe says what went wrong, with the API error's code and reason
// when there is one.
func describe(err error) string {
	var e *errand.Error
	if errors.As(err, &e) && errors.Is(err, errand.ErrUnauthorized) {
		return err.Error() + " (pass --token or ERRAND_TOKEN, or run where --data-dir holds the manager's admin.token)"
	}
	return err.Error()
}

// logFlags are the logging flags of a long-running command.
type logFlags struct {
	level  string
	format string
}

// addLogFlags adds --log-level and --log-format to cmd.
func addLogFlags(cmd *kingpin.CmdClause) *logFlags {
	f := &logFlags{}
	cmd.Flag("log-level", "Log level: debug, info, warn or error.").Envar("ERRAND_LOG_LEVEL").
		Default("info").EnumVar(&f.level, "debug", "info", "warn", "warning", "error")
	cmd.Flag("log-format", "Log format: text or json.").Envar("ERRAND_LOG_FORMAT").
		Default("text").EnumVar(&f.format, "text", "json")
	return f
}

// logger returns a logger writing to w as the flags say.
func (f *logFlags) logger(w io.Writer) *logrus.Logger {
	log := logrus.New()
	log.SetOutput(w)
	if lvl, err := logrus.ParseLevel(f.level); err == nil {
		log.SetLevel(lvl)
	}
	if f.format == "json" {
		log.SetFormatter(&logrus.JSONFormatter{})
	} else {
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	}
	return log
}

func init() {
	commands = append(commands, func(app *kingpin.Application, g *globals) {
		cmd := app.Command("version", "Print the version, commit and Go version (also: errand --version).")
		var output string
		addOutputFlag(cmd, &output)
		cmd.Action(g.action(func(context.Context) error {
			if output == "json" {
				return printJSON(g.Stdout, map[string]string{"kind": "version", "version": version, "commit": buildCommit(),
					"go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH})
			}
			fmt.Fprintln(g.Stdout, versionText())
			return nil
		}))
	})
}

// versionText is what `errand version` and `errand --version` print.
func versionText() string {
	return fmt.Sprintf("errand %s\ncommit %s\n%s %s/%s", version, buildCommit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// buildCommit is the commit set at link time, else the one the Go
// toolchain recorded, else "unknown".
func buildCommit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}
