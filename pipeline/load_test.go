package pipeline

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/errandci/errand"
)

const sampleYAML = `stages:
  - name: build
    environment: {GOFLAGS: -mod=mod, PORT: 5432}
    secrets: [DEPLOY_KEY]
    timeout: 10m
    steps:
      - name: compile
        commands: [echo building]
      - name: report
        when: {status: [success, failure]}
        commands: [echo done]
  - name: test
    runtime:
      type: docker
      image: busybox:latest
      pull: if-not-present
      services:
        - name: db
          image: postgres:15
          environment: {POSTGRES_PASSWORD: x}
    depends:
      - stage: build
        conditions: [on_success]
    steps:
      - name: unit
        commands: [go test ./...]
  - name: deploy
    depends: [test]
    when: {branch: [main], event: [push]}
    approval: {approvers: 1}
    selector: {labels: {env: prod}, arch: amd64}
    resources: {memory: 512m, cpus: 1.5}
    steps:
      - name: ship
        commands: [./deploy.sh]
`

const sampleJSON = `{
  "stages": [
    {"name": "build", "environment": {"GOFLAGS": "-mod=mod", "PORT": "5432"}, "secrets": ["DEPLOY_KEY"], "timeout": "10m",
     "steps": [
       {"name": "compile", "commands": ["echo building"]},
       {"name": "report", "when": {"status": ["success", "failure"]}, "commands": ["echo done"]}]},
    {"name": "test",
     "runtime": {"type": "docker", "image": "busybox:latest", "pull": "if-not-present",
                 "services": [{"name": "db", "image": "postgres:15", "environment": {"POSTGRES_PASSWORD": "x"}}]},
     "depends": [{"stage": "build", "conditions": ["on_success"]}],
     "steps": [{"name": "unit", "commands": ["go test ./..."]}]},
    {"name": "deploy", "depends": ["test"], "when": {"branch": ["main"], "event": ["push"]},
     "approval": {"approvers": 1}, "selector": {"labels": {"env": "prod"}, "arch": "amd64"},
     "resources": {"memory": "512m", "cpus": 1.5},
     "steps": [{"name": "ship", "commands": ["./deploy.sh"]}]}
  ]
}`

// sampleJsonnet writes the same config, part of it imported and the
// deploy branch taken from an external variable.
const sampleJsonnet = `local lib = import 'lib/steps.libsonnet';
{
  stages: [
    {name: 'build', environment: {GOFLAGS: '-mod=mod', PORT: '5432'}, secrets: ['DEPLOY_KEY'], timeout: '10m',
     steps: [lib.step('compile', 'echo building'), lib.step('report', 'echo done') + {when: {status: ['success', 'failure']}}]},
    {name: 'test',
     runtime: {type: 'docker', image: 'busybox:latest', pull: 'if-not-present',
               services: [{name: 'db', image: 'postgres:15', environment: {POSTGRES_PASSWORD: 'x'}}]},
     depends: [{stage: 'build', conditions: ['on_success']}],
     steps: [lib.step('unit', 'go test ./...')]},
    {name: 'deploy', depends: ['test'], when: {branch: [std.extVar('branch')], event: ['push']},
     approval: {approvers: 1}, selector: {labels: {env: 'prod'}, arch: 'amd64'},
     resources: {memory: '512m', cpus: 1.5},
     steps: [lib.step('ship', './deploy.sh')]},
  ],
}
`

const sampleLib = `{ step(name, command):: {name: name, commands: [command]} }`

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadFormatsAgree(t *testing.T) {
	opts := LoadOptions{ExtStr: map[string]string{"branch": "main"}}
	dirs := map[string]string{
		"yml":     writeFiles(t, map[string]string{"config.yml": sampleYAML}),
		"yaml":    writeFiles(t, map[string]string{"config.yaml": sampleYAML}),
		"json":    writeFiles(t, map[string]string{"config.json": sampleJSON}),
		"jsonnet": writeFiles(t, map[string]string{"config.jsonnet": sampleJsonnet, "lib/steps.libsonnet": sampleLib}),
	}
	var want string
	for _, format := range []string{"yml", "yaml", "json", "jsonnet"} {
		cfg, err := Load(dirs[format], opts)
		if err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%s: validate: %v", format, err)
		}
		b, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if want == "" {
			want = string(b)
			// Spot-check the decoded model once.
			s := cfg.Stages[0]
			if s.Timeout != errand.Duration(10*time.Minute) || s.Environment["PORT"] != "5432" ||
				cfg.Stages[1].Depends[0].Conditions[0] != errand.OnSuccess || cfg.Stages[2].Depends[0].Stage != "test" ||
				cfg.Stages[2].Selector.Labels["env"] != "prod" || !cfg.Stages[0].Steps[1].reporter() {
				t.Fatalf("decoded %s", b)
			}
			continue
		}
		if string(b) != want {
			t.Errorf("%s decodes to\n%s\nwant (as yml)\n%s", format, b, want)
		}
	}
}

func TestLoadPicksFirstConfigFound(t *testing.T) {
	one := func(name string) string {
		return `{"stages": [{"name": "` + name + `", "steps": [{"name": "s", "commands": ["true"]}]}]}`
	}
	tests := []struct {
		files map[string]string
		want  string
	}{
		{map[string]string{"config.jsonnet": one("jsonnet"), "config.json": one("json"), "config.yml": one("yml")}, "jsonnet"},
		{map[string]string{"config.json": one("json"), "config.yml": one("yml"), "config.yaml": one("yaml")}, "json"},
		{map[string]string{"config.yml": one("yml"), "config.yaml": one("yaml")}, "yml"},
		{map[string]string{"config.yaml": one("yaml")}, "yaml"},
	}
	for _, tt := range tests {
		cfg, err := Load(writeFiles(t, tt.files), LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Stages[0].Name; got != tt.want {
			t.Errorf("loaded %s, want %s", got, tt.want)
		}
	}
	if _, err := Load(t.TempDir(), LoadOptions{}); err == nil || !strings.Contains(err.Error(), "no config.jsonnet") {
		t.Errorf("empty dir: %v", err)
	}
	dir := writeFiles(t, map[string]string{"pipeline.yml": one("file")})
	cfg, err := Load(filepath.Join(dir, "pipeline.yml"), LoadOptions{})
	if err != nil || cfg.Stages[0].Name != "file" {
		t.Errorf("load a file by name: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, file, data string
		want             []string // substrings of the error
	}{
		{"json syntax", "c.json", "{\n  \"stages\": [\n    }\n", []string{"c.json:3:5:", "invalid character"}},
		{"json truncated", "c.json", "{\"stages\": [", []string{"c.json:1:13:"}},
		{"json trailing data", "c.json", `{"stages": []} {}`, []string{"c.json:", "data after"}},
		{"json not an object", "c.json", `[1]`, []string{"want an object with stages"}},
		{"yaml syntax", "c.yml", "stages:\n  - name: a\n    steps: [\n", []string{"c.yml:", "line 3"}},
		{"yaml tab", "c.yml", "stages:\n\t- name: a\n", []string{"c.yml:", "line 2"}},
		{"jsonnet syntax", "c.jsonnet", "{\n  stages: [ ,\n}\n", []string{"c.jsonnet:2:"}},
		{"jsonnet runtime error", "c.jsonnet", "{ stages: error 'no stages here' }", []string{"c.jsonnet", "no stages here"}},
		{"jsonnet missing ext var", "c.jsonnet", "{ stages: std.extVar('nope') }", []string{"nope"}},
		{"jsonnet import refused", "c.jsonnet", "import 'other.jsonnet'", []string{"imports are not allowed"}},
		{"unknown extension", "c.toml", "stages = []", []string{"unknown config format"}},
		{"unknown field json", "c.json", "{\"stages\": [\n  {\"name\": \"a\", \"bogus\": 1,\n   \"steps\": []}]}",
			[]string{"stages[0].bogus (line 2): unknown field"}},
		{"unknown field yaml", "c.yml", "stages:\n  - name: a\n    steps:\n      - name: s\n        comands: [x]\n",
			[]string{"stages[0].steps[0].comands (line 5): unknown field"}},
		{"unknown field jsonnet", "c.jsonnet", "{stages: [{name: 'a', steps: [{name: 's', commands: ['x'], image_: 'y'}]}]}",
			[]string{"stages[0].steps[0].image_: unknown field"}},
		{"unknown top-level field", "c.yml", "stagez: []\n", []string{"stagez (line 1): unknown field"}},
		{"unknown runtime field", "c.yml", "stages:\n  - name: a\n    runtime: {type: host, img: x}\n",
			[]string{"stages[0].runtime.img (line 3): unknown field"}},
		{"unknown step type", "c.yml", "stages:\n  - name: a\n    steps:\n      - name: s\n        type: plugin\n",
			[]string{"stages[0].steps[0].type (line 5): unknown step type \"plugin\""}},
		{"unknown depend field", "c.yml", "stages:\n  - name: a\n    depends: [{stage: b, when: x}]\n",
			[]string{"stages[0].depends[0].when (line 3): unknown field"}},
		{"wrong type", "c.yml", "stages:\n  - name: a\n    timeout: true\n    steps: x\n",
			[]string{"stages[0].timeout (line 3): invalid duration", "stages[0].steps (line 4): want a list, got a string"}},
		{"bad duration", "c.json", `{"stages": [{"name": "a", "timeout": "10 minutes"}]}`, []string{"stages[0].timeout (line 1): invalid duration"}},
		{"duplicate key json", "c.json", "{\"stages\": [{\"name\": \"a\",\n \"name\": \"b\"}]}",
			[]string{"stages[0].name (line 2): duplicate key"}},
		{"duplicate key yaml", "c.yml", "stages:\n  - name: a\n    name: b\n", []string{"c.yml:", "line 3", "already"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.file, []byte(tt.data), LoadOptions{})
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseErrorsListEveryProblem(t *testing.T) {
	_, err := Parse("c.yml", []byte("stages:\n  - name: a\n    bogus: 1\n    steps:\n      - name: s\n        type: nope\n  - nome: b\n"), LoadOptions{})
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error %v is not Errors", err)
	}
	want := Errors{
		{Path: "stages[0].bogus", Line: 3, Message: "unknown field"},
		{Path: "stages[0].steps[0].type", Line: 6, Message: "unknown step type"},
		{Path: "stages[1].nome", Line: 7, Message: "unknown field"},
	}
	if len(errs) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(want), errs)
	}
	for i, w := range want {
		if errs[i].Path != w.Path || errs[i].Line != w.Line || !strings.HasPrefix(errs[i].Message, w.Message) {
			t.Errorf("error %d = %+v, want %+v", i, errs[i], w)
		}
	}
}

func TestJsonnetExternalVariables(t *testing.T) {
	prog := `local v = std.native('extVarOr')('who', 'nobody');
{stages: [{name: v, steps: [{name: 's', commands: [std.extVar('cmd')]}]}]}`
	cfg, err := Parse("c.jsonnet", []byte(prog), LoadOptions{ExtStr: map[string]string{"cmd": "make", "who": "alice"}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Stages[0].Name != "alice" || cfg.Stages[0].Steps[0].Commands[0] != "make" {
		t.Errorf("ext vars not applied: %+v", cfg.Stages[0])
	}
	cfg, err = Parse("c.jsonnet", []byte(prog), LoadOptions{ExtStr: map[string]string{"cmd": "make"}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Stages[0].Name != "nobody" {
		t.Errorf("default not applied: %q", cfg.Stages[0].Name)
	}
}

func TestJsonnetImportsStayInsideImportDir(t *testing.T) {
	outside := writeFiles(t, map[string]string{"secret.libsonnet": `{stages: []}`})
	dir := writeFiles(t, map[string]string{
		"ok/config.jsonnet":     `(import 'sub/lib.libsonnet') + (import '../shared.libsonnet')`,
		"ok/sub/lib.libsonnet":  `{stages: [{name: 'a', steps: [{name: 's', commands: [importstr 'cmd.txt']}]}]}`,
		"ok/sub/cmd.txt":        `echo hi`,
		"shared.libsonnet":      `{}`,
		"up/config.jsonnet":     `import '../../` + filepath.Base(outside) + `/secret.libsonnet'`,
		"abs/config.jsonnet":    `import '` + filepath.Join(outside, "secret.libsonnet") + `'`,
		"link/config.jsonnet":   `import 'l/secret.libsonnet'`,
		"parent/config.jsonnet": `import '../shared.libsonnet'`,
	})
	if err := os.Symlink(outside, filepath.Join(dir, "link", "l")); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(filepath.Join(dir, "ok"), LoadOptions{ImportDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Stages[0].Steps[0].Commands[0]; got != "echo hi" {
		t.Errorf("importstr relative to the importing file: %q", got)
	}
	for _, name := range []string{"up", "abs", "link", "parent"} {
		if _, err := Load(filepath.Join(dir, name), LoadOptions{}); err == nil {
			t.Errorf("%s: import outside the config directory allowed", name)
		}
	}
}

func TestJsonnetTimeLimit(t *testing.T) {
	// A tail-strict loop never grows the stack, so only the time limit
	// stops waiting for it.
	start := time.Now()
	_, err := Parse("loop.jsonnet", []byte("local f(n) = f(n + 1) tailstrict; f(0)"), LoadOptions{Timeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("error %v, want ErrTimeout", err)
	}
	if !strings.Contains(err.Error(), "loop.jsonnet") {
		t.Errorf("error %q does not name the file", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("returned after %s", d)
	}
	// Deep recursion is stopped by the stack limit, not the clock.
	_, err = Parse("deep.jsonnet", []byte("local f(n) = 1 + f(n + 1); f(0)"), LoadOptions{Timeout: time.Minute})
	if err == nil || errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "stack") {
		t.Errorf("deep recursion: %v", err)
	}
}
