package pipeline

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/errandci/errand/httphelper"
)

// fuzzSeeds are configs for both fuzz targets, in YAML; the JSON target
// gets them converted where they convert.
var fuzzSeeds = []string{
	"stages:\n  - name: build\n    steps:\n      - name: compile\n        commands: [echo hi]\n",
	"stages:\n  - name: a\n    runtime: {type: docker, image: busybox:latest, services: [{name: db, image: postgres:15}]}\n" +
		"    secrets: [KEY]\n    environment: {A: b}\n    timeout: 10m\n    steps:\n      - name: s\n        commands: [x]\n" +
		"      - name: r\n        when: {status: [failure]}\n        commands: [y]\n" +
		"  - name: b\n    depends: [a, {stage: a, conditions: [always]}]\n    approval: {approvers: 2}\n" +
		"    when: {branch: [main], event: [push]}\n    selector: {labels: {env: prod}, arch: amd64}\n    steps: [{name: t, commands: [z]}]\n",
	"stages: []\n",
	"stages:\n  - name: a\n    depends: [a]\n    steps: []\n",
	"stages:\n  - &x {name: a, steps: [{name: s, commands: [c]}]}\n  - *x\n",
	"stages: [{name: a, bogus: 1}]\n",
	"{}",
	"- 1\n",
	"stages:\n  - name: a\n    steps: [{name: s, commands: [c]}]\n    selector: {labels: {\"a=b\": \"x\\ny\"}}\n",
}

// checkPipeline loads, validates and expands one config: it may be
// refused with an error, but never panic; a plan it makes is one the
// manager can store and a delegate can read.
func checkPipeline(t *testing.T, filename string, data []byte) {
	cfg, err := Parse(filename, data, LoadOptions{})
	if err != nil {
		if err.Error() == "" {
			t.Fatalf("Parse(%q) failed with an empty message", data)
		}
		return
	}
	if err := cfg.Validate(); err != nil {
		if !strings.Contains(err.Error(), ":") {
			t.Fatalf("Validate(%q) = %q: no path", data, err)
		}
		return
	}
	secrets := map[string]string{}
	for _, s := range cfg.Stages {
		for _, name := range s.Secrets {
			secrets[name] = "value-of-" + name
		}
	}
	n := 0
	plan, err := Expand(cfg, ExpandOptions{RunID: "r", Secrets: secrets, NewID: func() string { n++; return fmt.Sprintf("t%d", n) }})
	if err != nil {
		return
	}
	ids := map[string]bool{}
	for _, task := range plan.Tasks {
		if task.ID == "" || ids[task.ID] {
			t.Fatalf("%q: task id %q empty or used twice", data, task.ID)
		}
		ids[task.ID] = true
		if len(task.Data) > 0 {
			var v any
			if err := httphelper.Unmarshal(task.Data, &v); err != nil {
				t.Fatalf("%q: task %s data cannot be read back: %v", data, task.ID, err)
			}
		}
	}
	for _, task := range plan.Tasks {
		for _, d := range task.DependsOn {
			if !ids[d.Task] {
				t.Fatalf("%q: task %s depends on %s, which is not in the plan", data, task.ID, d.Task)
			}
		}
		if task.Affinity != "" && !ids[task.Affinity] {
			t.Fatalf("%q: task %s follows %s, which is not in the plan", data, task.ID, task.Affinity)
		}
	}
	if len(plan.Stages) != len(cfg.Stages) {
		t.Fatalf("%q: %d stages planned for %d", data, len(plan.Stages), len(cfg.Stages))
	}
	for _, ps := range plan.Stages {
		if ps.Skipped {
			continue
		}
		if !ids[ps.InitializeID] || !ids[ps.CleanupID] {
			t.Fatalf("%q: stage %s names tasks not in the plan", data, ps.Name)
		}
	}
	if _, err := json.Marshal(plan); err != nil {
		t.Fatalf("%q: plan cannot be encoded: %v", data, err)
	}
}

// FuzzPipelineYAML loads, validates and expands arbitrary YAML configs.
func FuzzPipelineYAML(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkPipeline(t, "config.yml", data)
	})
}

// FuzzPipelineJSON loads, validates and expands arbitrary JSON configs.
// What it accepts is exactly one JSON value: nothing may follow it.
func FuzzPipelineJSON(f *testing.F) {
	f.Add([]byte(`{"stages":[{"name":"a","steps":[{"name":"s","commands":["c"]}]}]}`))
	f.Add([]byte(`{"stages":[]}]`))
	f.Add([]byte(`{"stages":[]}}`))
	f.Add([]byte(`{"stages":[{"name":"a","runtime":{"type":"docker","image":"x"},"depends":["b"],"steps":[]}]}`))
	f.Add([]byte(`{"stages":[{"name":"a","steps":[{"name":"s","commands":["c"]}],"approval":{"approvers":1}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := Parse("config.json", data, LoadOptions{}); err == nil && !json.Valid(data) {
			t.Fatalf("Parse accepted %q, which is not one JSON value", data)
		}
		checkPipeline(t, "config.json", data)
	})
}

// A JSON config with data after its object is refused with the position
// of that data, even when the data starts with ']' or '}'.
func TestParseJSONTrailingData(t *testing.T) {
	for s, want := range map[string]string{
		`{"stages":[]}]`:     "1:14: data after the config object",
		`{"stages":[]}}`:     "1:14: data after the config object",
		"{\"stages\":[]}\n]": "2:1: data after the config object",
	} {
		if _, err := Parse("config.json", []byte(s), LoadOptions{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want %q", s, err, want)
		}
	}
	if _, err := Parse("config.json", []byte("{\"stages\":[]} \r\n\t"), LoadOptions{}); err != nil {
		t.Errorf("trailing whitespace: %v", err)
	}
}
