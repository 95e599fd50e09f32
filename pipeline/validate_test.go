package pipeline

import (
	"errors"
	"strings"
	"testing"
)

// stageYAML is a valid stage to build broken configs from.
const okStage = `  - name: ok
    steps:
      - name: s
        commands: [echo]
`

func TestValidateErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		// want lists "path (line N): message prefix" entries, in order.
		want []string
	}{
		{"no stages", "stages: []\n", []string{"stages (line 1): at least one stage"}},
		{"duplicate stage", "stages:\n" + okStage + okStage, []string{`stages[1].name (line 6): "ok": already the name of stages[0]`}},
		{"bad stage name", "stages:\n  - name: Build\n    steps: [{name: s, commands: [x]}]\n", []string{`stages[0].name (line 2): "Build": must match`}},
		{"missing stage name", "stages:\n  - steps: [{name: s, commands: [x]}]\n", []string{"stages[0].name (line 2): required"}},
		{"no steps", "stages:\n  - name: a\n", []string{"stages[0].steps (line 2): at least one step"}},
		{"duplicate step", "stages:\n  - name: a\n    steps:\n      - {name: s, commands: [x]}\n      - {name: s, commands: [z]}\n",
			[]string{`stages[0].steps[1].name (line 5): "s": already the name of steps[0]`}},
		{"bad step name and no commands", "stages:\n  - name: a\n    steps:\n      - {name: 'x y'}\n",
			[]string{`stages[0].steps[0].name (line 4): "x y": must match`, "stages[0].steps[0].commands (line 4): at least one command"}},
		{"unknown dependency", "stages:\n" + okStage + "    depends: [nope]\n", []string{`stages[0].depends[0].stage (line 6): no stage named "nope"`}},
		{"self dependency", "stages:\n" + okStage + "    depends: [ok]\n", []string{"stages[0].depends[0].stage (line 6): a stage cannot depend on itself"}},
		{"cycle", "stages:\n  - {name: a, depends: [c], steps: [{name: s, commands: [x]}]}\n  - {name: b, depends: [a], steps: [{name: s, commands: [x]}]}\n  - {name: c, depends: [b], steps: [{name: s, commands: [x]}]}\n",
			[]string{"stages[0].depends (line 2): dependency cycle: a -> c -> b -> a"}},
		{"invalid condition", "stages:\n" + okStage + "  - name: b\n    depends: [{stage: ok, conditions: [on_succes, 'on_success|always']}]\n    steps: [{name: s, commands: [x]}]\n",
			[]string{`stages[1].depends[0].conditions[0] (line 7): "on_succes": want`, `stages[1].depends[0].conditions[1] (line 7): "on_success|always": want`}},
		{"docker without image", "stages:\n  - name: a\n    runtime: {type: docker}\n    steps:\n      - {name: s, commands: [x]}\n      - {name: t, image: alpine, commands: [x]}\n",
			[]string{"stages[0].steps[0].image (line 5): required for a docker stage"}},
		{"unknown runtime", "stages:\n  - name: a\n    runtime: {type: vm}\n    steps: [{name: s, commands: [x]}]\n", []string{`stages[0].runtime.type (line 3): "vm": want host or docker`}},
		{"host with image", "stages:\n  - name: a\n    runtime: {image: x}\n    steps: [{name: s, image: img, commands: [x]}]\n",
			[]string{"stages[0].runtime.image (line 3): a host stage has no image", "stages[0].steps[0].image (line 4): a host stage has no image"}},
		{"bad pull", "stages:\n  - name: a\n    runtime: {type: docker, image: x, pull: sometimes}\n    steps: [{name: s, commands: [x]}]\n", []string{`stages[0].runtime.pull (line 3): "sometimes": want always`}},
		{"bad services", "stages:\n  - name: a\n    runtime:\n      type: docker\n      image: x\n      services:\n        - {name: DB_1, image: pg}\n        - {name: db}\n        - {name: db, image: pg}\n    steps: [{name: s, commands: [x]}]\n",
			[]string{`stages[0].runtime.services[0].name (line 7): "DB_1": must be a host name`, "stages[0].runtime.services[1].image (line 8): required", `stages[0].runtime.services[2].name (line 9): "db": two services`}},
		{"negative timeouts", "stages:\n  - name: a\n    timeout: -1s\n    steps: [{name: s, timeout: -5m, commands: [x]}]\n",
			[]string{"stages[0].timeout (line 3): must not be negative", "stages[0].steps[0].timeout (line 4): must not be negative"}},
		{"approvers", "stages:\n" + okStage + "    approval: {approvers: 0}\n", []string{"stages[0].approval.approvers (line 6): must be at least 1"}},
		{"secret and env names", "stages:\n" + okStage + "    secrets: [GOOD, 9BAD]\n    environment: {A-B: x}\n",
			[]string{`stages[0].secrets[1] (line 6): "9BAD": must match`, `stages[0].environment.A-B (line 7): "A-B": must match`}},
		{"step when status", "stages:\n  - name: a\n    steps:\n      - {name: s, commands: [x]}\n      - {name: t, when: {status: [always]}, commands: [x]}\n",
			[]string{`stages[0].steps[1].when.status[0] (line 5): "always": want success or failure`}},
		{"failure-only first step", "stages:\n  - name: a\n    steps:\n      - {name: s, when: {status: [failure]}, commands: [x]}\n",
			[]string{"stages[0].steps[0].when.status (line 4): a step that runs only on failure needs an earlier step"}},
		{"working dir escapes", "stages:\n  - name: a\n    steps: [{name: s, working_dir: ../x, commands: [x]}]\n", []string{`stages[0].steps[0].working_dir (line 3): "../x": must be relative`}},
		{"resources", "stages:\n" + okStage + "    resources: {memory: 12 parsecs, cpus: -1}\n",
			[]string{`stages[0].resources.memory (line 6): "12 parsecs": unknown unit`, "stages[0].resources.cpus (line 6): must not be negative"}},
		{"when branch pattern", "stages:\n" + okStage + "    when: {branch: ['[']}\n", []string{`stages[0].when.branch[0] (line 6): "[": not a branch`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("c.yml", []byte(tt.yaml), LoadOptions{})
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			err = cfg.Validate()
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Validate() = %v, want Errors", err)
			}
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(tt.want), errs)
			}
			for i, w := range tt.want {
				if got := errs[i].Error(); !strings.HasPrefix(got, w) {
					t.Errorf("error %d = %q, want prefix %q", i, got, w)
				}
			}
		})
	}
}

func TestValidateJSONLines(t *testing.T) {
	cfg, err := Parse("c.json", []byte(`{
  "stages": [
    {"name": "a", "steps": [{"name": "s", "commands": ["x"]}]},
    {"name": "b",
     "runtime": {"type": "docker"},
     "steps": [
       {"name": "s", "commands": ["x"]}
     ]}
  ]
}`), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.Validate()
	want := "stages[1].steps[0].image (line 7): required for a docker stage"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Validate() = %v, want %q", err, want)
	}
}

func TestValidateAcceptsDesignExample(t *testing.T) {
	cfg, err := Parse("c.yml", []byte(sampleYAML), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
	// A config built in Go has no source: problems have no lines.
	c := &Config{Stages: []*Stage{{Name: "a"}}}
	err = c.Validate()
	if err == nil || err.Error() != "stages[0].steps: at least one step is required" {
		t.Errorf("Validate() = %v", err)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true}, {"512", 512, true}, {"512m", 512 << 20, true}, {"2GiB", 2 << 30, true},
		{"1.5g", 3 << 29, true}, {"64 kb", 64 << 10, true}, {"-1m", 0, false}, {"m", 0, false}, {"1x", 0, false},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
