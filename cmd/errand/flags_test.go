package main

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/kingpin/v2"
)

// builtinFlags are kingpin's own flags: help, version and completion.
// They take no environment variable (ERRAND_HELP would make every
// command print its help).
var builtinFlags = []string{"help", "help-long", "help-man", "completion-bash", "completion-script-bash", "completion-script-zsh", "version"}

// awaitingEnvar are flags defined before every flag had a variable, in
// files whose owners give them one; remove a line when its flag has one.
var awaitingEnvar = []string{}

// appFlag is one flag of one command of the application.
type appFlag struct {
	command string // "" for the application's own flags
	flag    *kingpin.FlagModel
}

// appFlags returns every flag of every command, the application's own
// flags included, but for kingpin's built-in ones.
func appFlags(t *testing.T) []appFlag {
	t.Helper()
	g := &globals{Ctx: t.Context(), Stdout: io.Discard, Stderr: io.Discard}
	model := newApp(g).Model()
	var out []appFlag
	add := func(cmd string, flags []*kingpin.FlagModel) {
		for _, f := range flags {
			if !slices.Contains(builtinFlags, f.Name) {
				out = append(out, appFlag{cmd, f})
			}
		}
	}
	add("", model.Flags)
	var walk func(cmds []*kingpin.CmdModel)
	walk = func(cmds []*kingpin.CmdModel) {
		for _, c := range cmds {
			add(c.FullCommand, c.Flags)
			walk(c.Commands)
		}
	}
	walk(model.Commands)
	if len(out) == 0 {
		t.Fatal("the application has no flags")
	}
	return out
}

// TestEveryFlagHasEnvar walks every command of the application and fails
// for each flag without an ERRAND_… environment variable.
func TestEveryFlagHasEnvar(t *testing.T) {
	var missing []string
	for _, f := range appFlags(t) {
		name := strings.TrimSpace("errand " + f.command + " --" + f.flag.Name)
		if !strings.HasPrefix(f.flag.Envar, "ERRAND_") && !slices.Contains(awaitingEnvar, name) {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d flags have no ERRAND_… environment variable (add .Envar(\"ERRAND_…\") where the flag is defined):\n  %s",
			len(missing), strings.Join(missing, "\n  "))
	}
}

// TestEnvarsShownInHelp checks that --help shows each flag's variable.
func TestEnvarsShownInHelp(t *testing.T) {
	for _, f := range appFlags(t) {
		if f.command == "" || f.flag.Envar == "" || f.flag.Hidden {
			continue
		}
		var stdout, stderr bytes.Buffer
		args := append(strings.Fields(f.command), "--help")
		if code := run(args, &stdout, &stderr); code != 0 {
			t.Fatalf("errand %s: exit %d: %s", strings.Join(args, " "), code, stderr.String())
		}
		if !strings.Contains(stdout.String(), "($"+f.flag.Envar+")") {
			t.Errorf("errand %s --help does not show $%s of --%s", f.command, f.flag.Envar, f.flag.Name)
		}
	}
}

// TestEveryFlagIsExercised fails for each flag of any command that no
// test of cmd/errand uses: every flag is to be run at least once through
// the binary, in a script of testdata or in a test file of this package.
func TestEveryFlagIsExercised(t *testing.T) {
	var corpus bytes.Buffer
	err := filepath.WalkDir("testdata", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".txtar") {
			return err
		}
		b, err := os.ReadFile(path)
		corpus.Write(b)
		corpus.WriteByte('\n')
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	tests, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range tests {
		if name == "flags_test.go" { // names every flag it looks for
			continue
		}
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		corpus.Write(b)
		corpus.WriteByte('\n')
	}
	text := corpus.String()
	var missing []string
	seen := map[string]bool{}
	for _, f := range appFlags(t) {
		key := f.command + " --" + f.flag.Name
		if seen[key] {
			continue
		}
		seen[key] = true
		re := regexp.MustCompile(`--` + regexp.QuoteMeta(f.flag.Name) + `([^a-z0-9-]|$)`)
		if !re.MatchString(text) {
			missing = append(missing, strings.TrimSpace("errand "+key))
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d flags are used by no test (add a use through the binary in cmd/errand/testdata/*.txtar or cmd/errand/*_test.go):\n  %s",
			len(missing), strings.Join(missing, "\n  "))
	}
}
