package pipeline

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/tasks"
)

func TestValidateArtifacts(t *testing.T) {
	const build = "  - name: build\n    artifacts: {paths: [dist]}\n    steps: [{name: s, commands: [x]}]\n"
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"escapes", "stages:\n  - name: a\n    artifacts: {paths: [../x, /etc/passwd, 'a/../../b', ok/**], exclude: ['..']}\n    steps: [{name: s, commands: [x]}]\n",
			[]string{`stages[0].artifacts.paths[0] (line 3): "../x" escapes the workspace`, `stages[0].artifacts.paths[1] (line 3): "/etc/passwd" is absolute`,
				`stages[0].artifacts.paths[2] (line 3): "a/../../b" escapes the workspace`, `stages[0].artifacts.exclude[0] (line 3): ".." escapes`}},
		{"step fields", "stages:\n  - name: a\n    steps:\n      - name: s\n        commands: [x]\n        artifacts: {paths: ['[', ./x], expire_in: 30 days, when: sometimes}\n",
			[]string{`stages[0].steps[0].artifacts.paths[0] (line 6): "[": malformed`, `stages[0].steps[0].artifacts.paths[1] (line 6): "./x" is not a clean path`,
				`stages[0].steps[0].artifacts.expire_in (line 6): "30 days": want a positive duration`, `stages[0].steps[0].artifacts.when (line 6): "sometimes": want on_success`}},
		{"no paths", "stages:\n  - name: a\n    artifacts: {expire_in: 1d}\n    steps: [{name: s, commands: [x]}]\n",
			[]string{"stages[0].artifacts.paths (line 3): at least one path is required"}},
		{"unknown field", "stages:\n  - name: a\n    artifacts: {paths: [x], expires: 1d}\n    steps: [{name: s, commands: [x]}]\n",
			[]string{`stages[0].artifacts.expires (line 3): unknown field`}},
		{"needs", "stages:\n" + build + "  - name: plain\n    steps: [{name: s, commands: [x]}]\n" +
			"  - name: test\n    needs_artifacts: [build, plain, nope, test, build]\n    depends: [plain]\n    steps: [{name: s, commands: [x]}]\n",
			[]string{`stages[2].needs_artifacts[0] (line 8): stage "build" must be among this stage's depends`, `stages[2].needs_artifacts[1] (line 8): stage "plain" declares no artifacts`,
				`stages[2].needs_artifacts[2] (line 8): no stage named "nope"`, `stages[2].needs_artifacts[3] (line 8): a stage cannot need its own artifacts`,
				`stages[2].needs_artifacts[4] (line 8): "build" is named twice`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("c.yml", []byte(tt.yaml), LoadOptions{})
			if err == nil {
				err = cfg.Validate()
			}
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
	// Through another stage is fine.
	ok := "stages:\n" + build + "  - name: mid\n    depends: [build]\n    steps: [{name: s, commands: [x]}]\n" +
		"  - name: test\n    needs_artifacts: [build]\n    depends: [mid]\n    steps: [{name: s, artifacts: {paths: ['**/*.xml'], when: always}, commands: [x]}]\n"
	if err := mustParse(t, ok).Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestExpandArtifacts: the declarations reach the tasks' data, and a
// stage that needs another's artifacts starts after that stage's cleanup
// (which keeps the stage's own artifacts) has ended, however it ended.
func TestExpandArtifacts(t *testing.T) {
	cfg := mustParse(t, `stages:
  - name: build
    artifacts: {paths: [dist], expire_in: 2d}
    steps:
      - name: s
        commands: [x]
        artifacts: {paths: ['out/**/*.bin'], exclude: [out/tmp], when: on_failure, required: true}
  - name: test
    depends: [build]
    needs_artifacts: [build]
    steps: [{name: s, commands: [x]}]
`)
	plan, err := Expand(cfg, ExpandOptions{RunID: "r", NewID: seqIDs()})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]*errand.Task{}
	for _, tk := range plan.Tasks {
		byID[tk.ID] = tk
	}
	build, test := plan.Stages[0], plan.Stages[1]
	var ex tasks.ExecuteData
	if err := json.Unmarshal(byID[build.Steps[0].TaskID].Data, &ex); err != nil {
		t.Fatal(err)
	}
	if a := ex.Artifacts; a == nil || a.Paths[0] != "out/**/*.bin" || a.Exclude[0] != "out/tmp" || a.When != tasks.ArtifactsOnFailure || !a.Required {
		t.Errorf("step artifacts = %+v", ex.Artifacts)
	}
	var cl tasks.CleanupData
	if err := json.Unmarshal(byID[build.CleanupID].Data, &cl); err != nil {
		t.Fatal(err)
	}
	if cl.Artifacts == nil || cl.Artifacts.Paths[0] != "dist" || cl.Artifacts.ExpireIn != "2d" {
		t.Errorf("stage artifacts in cleanup data = %+v", cl.Artifacts)
	}
	var in tasks.InitializeData
	init := byID[test.InitializeID]
	if err := json.Unmarshal(init.Data, &in); err != nil {
		t.Fatal(err)
	}
	if len(in.NeedsArtifacts) != 1 || in.NeedsArtifacts[0] != "build" {
		t.Errorf("needs_artifacts in initialize data = %v", in.NeedsArtifacts)
	}
	found := false
	for _, d := range init.DependsOn {
		if d.Task == build.CleanupID && d.Condition == errand.Always {
			found = true
		}
	}
	if !found {
		t.Errorf("test's initialize depends on %+v, want build's cleanup (always) among them", init.DependsOn)
	}
	// A failed build still skips test (its depends say on_success), and
	// a successful one lets it run once cleanup ended.
	state := simulate(t, plan, map[string]errand.State{"build/s": errand.StateFailed})
	if got := state[test.InitializeID].State; got != errand.StateSkipped {
		t.Errorf("test after a failed build is %s, want skipped", got)
	}
	state = simulate(t, plan, nil)
	if got := state[test.InitializeID].State; got != errand.StateSucceeded {
		t.Errorf("test after a good build is %s, want succeeded", got)
	}
}

func TestArtifactsMatch(t *testing.T) {
	a := &tasks.Artifacts{Paths: []string{"dist", "**/*.xml", "bin/*/app", "logs/"}, Exclude: []string{"dist/tmp", "**/secret.xml"}}
	for name, want := range map[string]bool{
		"dist": true, "dist/a/b.js": true, "dist/tmp/x": false, "distx": false,
		"report.xml": true, "a/b/c/report.xml": true, "a/secret.xml": false, "a/report.xmlx": false,
		"bin/linux/app": true, "bin/app": false, "bin/linux/x/app": false, "logs/1.log": true, "logs": true,
	} {
		if got := a.Match(name); got != want {
			t.Errorf("Match(%q) = %v, want %v", name, got, want)
		}
	}
	if got := strings.Join(a.Prefixes(), " "); got != "dist . bin logs" {
		t.Errorf("Prefixes = %q", got)
	}
	for s, want := range map[string]string{"30d": "720h0m0s", "2w": "336h0m0s", "90m": "1h30m0s"} {
		if d, err := tasks.ParseExpiry(s); err != nil || d.String() != want {
			t.Errorf("ParseExpiry(%q) = %v, %v; want %s", s, d, err, want)
		}
	}
	for _, s := range []string{"", "0d", "-1h", "d", "5000d", "1y"} {
		if _, err := tasks.ParseExpiry(s); err == nil {
			t.Errorf("ParseExpiry(%q) accepted", s)
		}
	}
}
