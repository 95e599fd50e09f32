package pipeline

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/tasks"
)

func mustParse(t *testing.T, yml string) *Config {
	t.Helper()
	cfg, err := Parse("c.yml", []byte(yml), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// seqIDs names tasks t1, t2, … so that tests read.
func seqIDs() func() string {
	n := 0
	return func() string { n++; return fmt.Sprintf("t%d", n) }
}

// simulate runs a plan the way the manager's store would, with errand.Resolve
// deciding each pending task. outcome gives the state a task that runs ends
// in ("stage/step", "stage/initialize", "stage/cleanup"); succeeded when
// absent. It returns every task's final state.
func simulate(t *testing.T, plan *Plan, outcome map[string]errand.State) map[string]*errand.Task {
	t.Helper()
	names := map[string]string{}
	for _, ps := range plan.Stages {
		names[ps.InitializeID] = ps.Name + "/initialize"
		names[ps.CleanupID] = ps.Name + "/cleanup"
		for _, s := range ps.Steps {
			names[s.TaskID] = ps.Name + "/" + s.Name
		}
	}
	state := map[string]*errand.Task{}
	for _, task := range plan.Tasks {
		c := *task
		c.State = errand.StatePending
		state[task.ID] = &c
	}
	for changed := true; changed; {
		changed = false
		for _, task := range plan.Tasks {
			cur := state[task.ID]
			if cur.State != errand.StatePending {
				continue
			}
			deps := make([]errand.DependencyOutcome, len(task.DependsOn))
			for i, d := range task.DependsOn {
				if !d.Condition.Valid() {
					t.Fatalf("task %s: invalid condition %q", names[task.ID], d.Condition)
				}
				deps[i] = errand.DependencyOutcome{Condition: d.Condition, State: state[d.Task].State}
			}
			switch errand.Resolve(deps) {
			case errand.Ready:
				cur.State = errand.StateSucceeded
				if s, ok := outcome[names[task.ID]]; ok {
					cur.State = s
				}
				changed = true
			case errand.Skip:
				cur.State = errand.StateSkipped
				changed = true
			}
		}
	}
	return state
}

func stageStates(plan *Plan, state map[string]*errand.Task) map[string]StageState {
	out := map[string]StageState{}
	for _, ps := range plan.Stages {
		out[ps.Name] = StageStatus(ps, state, 0)
	}
	return out
}

func stepState(plan *Plan, state map[string]*errand.Task, stage, step string) errand.State {
	for _, ps := range plan.Stages {
		if ps.Name == stage {
			if step == "cleanup" {
				return state[ps.CleanupID].State
			}
			return state[ps.StepIDs[step]].State
		}
	}
	return ""
}

const outcomeConfig = `stages:
  - name: a
    steps:
      - {name: one, commands: [x]}
      - {name: notify, when: {status: [success, failure]}, commands: [x]}
      - {name: two, commands: [x]}
      - {name: onfail, when: {status: [failure]}, commands: [x]}
      - {name: three, commands: [x]}
  - {name: succ, depends: [a], steps: [{name: s, commands: [x]}]}
  - {name: fail, depends: [{stage: a, conditions: [on_failure]}], steps: [{name: s, commands: [x]}]}
  - {name: skip, depends: [{stage: a, conditions: [on_skipped]}], steps: [{name: s, commands: [x]}]}
  - {name: alw, depends: [{stage: a, conditions: [always]}], steps: [{name: s, commands: [x]}]}
  - {name: ended, depends: [{stage: a, conditions: [on_success, on_failure]}], steps: [{name: s, commands: [x]}]}
  - {name: notok, depends: [{stage: a, conditions: [on_failure, on_skipped]}], steps: [{name: s, commands: [x]}]}
  - {name: afterskip, depends: [{stage: skip, conditions: [on_skipped]}], steps: [{name: s, commands: [x]}]}
  - {name: afterskipok, depends: [skip], steps: [{name: s, commands: [x]}]}
`

func TestExpandStageOutcomes(t *testing.T) {
	S, F, K, C := errand.StateSucceeded, errand.StateFailed, errand.StateSkipped, errand.StateCancelled
	tests := []struct {
		name    string
		outcome map[string]errand.State
		stages  map[string]StageState
		steps   map[string]errand.State // "step" of stage a
	}{
		{"all succeed", nil,
			map[string]StageState{"a": StageSuccess, "succ": StageSuccess, "fail": StageSkipped, "skip": StageSkipped, "alw": StageSuccess, "ended": StageSuccess, "notok": StageSkipped, "afterskip": StageSuccess, "afterskipok": StageSkipped},
			map[string]errand.State{"one": S, "notify": S, "two": S, "onfail": K, "three": S, "cleanup": S}},
		{"first step fails", map[string]errand.State{"a/one": F},
			map[string]StageState{"a": StageFailed, "succ": StageSkipped, "fail": StageSuccess, "skip": StageSkipped, "alw": StageSuccess, "ended": StageSuccess, "notok": StageSuccess},
			map[string]errand.State{"one": F, "notify": S, "two": K, "onfail": S, "three": K, "cleanup": S}},
		{"middle step times out", map[string]errand.State{"a/two": errand.StateTimedOut},
			map[string]StageState{"a": StageFailed, "succ": StageSkipped, "fail": StageSuccess, "ended": StageSuccess, "notok": StageSuccess},
			map[string]errand.State{"one": S, "notify": S, "two": errand.StateTimedOut, "onfail": S, "three": K}},
		{"last step fails", map[string]errand.State{"a/three": F},
			map[string]StageState{"a": StageFailed, "succ": StageSkipped, "fail": StageSuccess, "skip": StageSkipped, "alw": StageSuccess},
			map[string]errand.State{"onfail": K, "three": F}},
		{"initialize fails", map[string]errand.State{"a/initialize": F},
			map[string]StageState{"a": StageFailed, "succ": StageSkipped, "fail": StageSuccess, "skip": StageSkipped, "alw": StageSuccess, "ended": StageSuccess},
			map[string]errand.State{"one": K, "notify": K, "two": K, "onfail": K, "three": K, "cleanup": S}},
		{"reporter fails, stage still succeeds", map[string]errand.State{"a/notify": F},
			map[string]StageState{"a": StageSuccess, "succ": StageSuccess, "fail": StageSkipped},
			map[string]errand.State{"notify": F, "two": S, "onfail": K, "three": S}},
		{"step cancelled", map[string]errand.State{"a/two": C},
			map[string]StageState{"a": StageCancelled, "succ": StageSkipped, "fail": StageSkipped, "skip": StageSkipped, "alw": StageSuccess, "ended": StageSkipped, "notok": StageSkipped},
			map[string]errand.State{"two": C, "onfail": K, "three": K, "cleanup": S}},
		{"initialize cancelled", map[string]errand.State{"a/initialize": C},
			map[string]StageState{"a": StageCancelled, "fail": StageSkipped, "alw": StageSuccess},
			map[string]errand.State{"one": K, "cleanup": K}},
	}
	cfg := mustParse(t, outcomeConfig)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan, err := Expand(cfg, ExpandOptions{RunID: "r1", NewID: seqIDs()})
			if err != nil {
				t.Fatal(err)
			}
			state := simulate(t, plan, tt.outcome)
			got := stageStates(plan, state)
			for stage, want := range tt.stages {
				if got[stage] != want {
					t.Errorf("stage %s is %s, want %s", stage, got[stage], want)
				}
			}
			for step, want := range tt.steps {
				if got := stepState(plan, state, "a", step); got != want {
					t.Errorf("step a/%s is %s, want %s", step, got, want)
				}
			}
		})
	}
}

func TestExpandUpstreamSkipped(t *testing.T) {
	// a fails, so b (on_success) is skipped at run time: c (on_skipped of
	// b) runs, d (on_success of b) does not, e (on_failure of b) does not.
	cfg := mustParse(t, `stages:
  - {name: a, steps: [{name: s, commands: [x]}]}
  - {name: b, depends: [a], steps: [{name: s, commands: [x]}, {name: t, commands: [x]}]}
  - {name: c, depends: [{stage: b, conditions: [on_skipped]}], steps: [{name: s, commands: [x]}]}
  - {name: d, depends: [b], steps: [{name: s, commands: [x]}]}
  - {name: e, depends: [{stage: b, conditions: [on_failure]}], steps: [{name: s, commands: [x]}]}
`)
	plan, err := Expand(cfg, ExpandOptions{NewID: seqIDs()})
	if err != nil {
		t.Fatal(err)
	}
	got := stageStates(plan, simulate(t, plan, map[string]errand.State{"a/s": errand.StateFailed}))
	want := map[string]StageState{"a": StageFailed, "b": StageSkipped, "c": StageSuccess, "d": StageSkipped, "e": StageSkipped}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stages %v, want %v", got, want)
	}
}

func TestExpandWhen(t *testing.T) {
	cfg := mustParse(t, `stages:
  - {name: build, steps: [{name: s, commands: [x]}]}
  - {name: deploy, depends: [build], when: {branch: [main, 'release/*'], event: [push]}, steps: [{name: s, commands: [x]}]}
  - {name: announce, depends: [deploy], steps: [{name: s, commands: [x]}]}
  - {name: explain, depends: [{stage: deploy, conditions: [on_skipped]}], steps: [{name: s, commands: [x]}]}
  - {name: finally, depends: [{stage: deploy, conditions: [always]}, build], steps: [{name: s, commands: [x]}]}
`)
	tests := []struct {
		branch, event string
		skipped       []string // before the run
	}{
		{"main", "push", nil},
		{"release/1.2", "push", nil},
		{"main", "pull_request", []string{"deploy", "announce"}},
		{"feature", "push", []string{"deploy", "announce"}},
		{"", "", []string{"deploy", "announce"}},
	}
	for _, tt := range tests {
		t.Run(tt.branch+"/"+tt.event, func(t *testing.T) {
			plan, err := Expand(cfg, ExpandOptions{Branch: tt.branch, Event: tt.event, NewID: seqIDs()})
			if err != nil {
				t.Fatal(err)
			}
			var skipped []string
			ids := map[string]bool{}
			for _, ps := range plan.Stages {
				if ps.Skipped {
					skipped = append(skipped, ps.Name)
					if ps.InitializeID != "" || len(ps.Steps) > 0 {
						t.Errorf("skipped stage %s has tasks", ps.Name)
					}
				}
			}
			for _, task := range plan.Tasks {
				ids[task.ID] = true
			}
			for _, task := range plan.Tasks {
				for _, d := range task.DependsOn {
					if !ids[d.Task] {
						t.Errorf("task %s depends on %s, not in the plan", task.ID, d.Task)
					}
				}
			}
			if !reflect.DeepEqual(skipped, tt.skipped) {
				t.Errorf("skipped %v, want %v", skipped, tt.skipped)
			}
			states := stageStates(plan, simulate(t, plan, nil))
			for _, ps := range plan.Stages {
				want := StageSuccess
				if ps.Skipped || ps.Name == "explain" && tt.skipped == nil {
					want = StageSkipped
				}
				if states[ps.Name] != want {
					t.Errorf("stage %s is %s, want %s", ps.Name, states[ps.Name], want)
				}
			}
			if ph, res := RunStatus(plan, simulate(t, plan, nil), nil); ph != PhaseFinished || res != ResultSuccess {
				t.Errorf("run %s %s", ph, res)
			}
		})
	}
}

func TestExpandTasks(t *testing.T) {
	cfg := mustParse(t, `stages:
  - name: test
    runtime:
      type: docker
      image: golang:1.26
      services: [{name: db, image: postgres:15, environment: {POSTGRES_PASSWORD: x}}]
    environment: {A: stage, B: stage}
    secrets: [TOKEN]
    timeout: 10m
    privileged: true
    resources: {memory: 1g, cpus: 2}
    selector: {labels: {env: ci}, arch: arm64, group: g}
    approval: {approvers: 2}
    steps:
      - {name: unit, environment: {B: step}, working_dir: src, shell: bash -e, commands: [go test ./...]}
      - {name: lint, image: golangci, timeout: 1m, commands: [lint]}
`)
	plan, err := Expand(cfg, ExpandOptions{RunID: "run1", Branch: "main", Secrets: map[string]string{"TOKEN": "s3cret", "OTHER": "x"},
		Env: map[string]string{"A": "run", "C": "run"}, NewID: seqIDs()})
	if err != nil {
		t.Fatal(err)
	}
	wantStage := PlanStage{Name: "test", InitializeID: "t1", CleanupID: "t4", Approval: 2, GateID: "t5",
		Steps:   []PlanStep{{Name: "unit", TaskID: "t2"}, {Name: "lint", TaskID: "t3"}},
		StepIDs: map[string]string{"unit": "t2", "lint": "t3"}}
	if !reflect.DeepEqual(plan.Stages, []PlanStage{wantStage}) {
		t.Errorf("stages %+v", plan.Stages)
	}
	// The stage needs approvals: its gate comes first, waits for two
	// approvers and holds the initialize task.
	gate := plan.Tasks[0]
	if gate.ID != "t5" || gate.Type != TypeApproval || gate.Approvals != 2 || gate.MaxAttempts != 1 || gate.RunID != "run1" ||
		len(gate.DependsOn) != 0 || fmt.Sprint(plan.Tasks[1].DependsOn) != fmt.Sprint([]errand.Dependency{{Task: "t5", Condition: errand.OnSuccess}}) {
		t.Errorf("gate %+v, initialize depends on %v", gate, plan.Tasks[1].DependsOn)
	}
	plan.Tasks = plan.Tasks[1:]
	types := []string{errand.TypeDockerInitialize, errand.TypeDockerExecute, errand.TypeDockerExecute, errand.TypeDockerCleanup}
	attempts := []int{errand.DefaultMaxAttempts, 1, 1, errand.DefaultMaxAttempts}
	timeouts := []string{"10m0s", "10m0s", "1m0s", "10m0s"}
	for i, task := range plan.Tasks {
		if task.Type != types[i] || task.MaxAttempts != attempts[i] || task.Timeout.String() != timeouts[i] || task.RunID != "run1" {
			t.Errorf("task %d: %s attempts %d timeout %s run %q", i, task.Type, task.MaxAttempts, task.Timeout, task.RunID)
		}
		if want := map[bool]string{true: "", false: "t1"}[i == 0]; task.Affinity != want {
			t.Errorf("task %d affinity %q, want %q", i, task.Affinity, want)
		}
		if task.Selector.Arch != "arm64" || task.Selector.Group != "g" || task.Selector.Labels["env"] != "ci" {
			t.Errorf("task %d selector %+v", i, task.Selector)
		}
	}
	var init tasks.InitializeData
	if err := json.Unmarshal(plan.Tasks[0].Data, &init); err != nil {
		t.Fatal(err)
	}
	if init.Image != "golang:1.26" || init.Pull != PullIfNotPresent || !init.Privileged || init.Resources.MemoryBytes != 1<<30 ||
		init.Resources.CPUs != 2 || len(init.Services) != 1 || init.Services[0].Environment["POSTGRES_PASSWORD"] != "x" || init.Stage.RunID != "run1" {
		t.Errorf("initialize data %+v", init)
	}
	var unit, lint tasks.ExecuteData
	if err := json.Unmarshal(plan.Tasks[1].Data, &unit); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(plan.Tasks[2].Data, &lint); err != nil {
		t.Fatal(err)
	}
	wantEnv := map[string]string{"A": "stage", "B": "step", "C": "run", "ERRAND_STAGE": "test", "ERRAND_STEP": "unit",
		"ERRAND_RUN_ID": "run1", "ERRAND_BRANCH": "main"}
	if !reflect.DeepEqual(unit.Environment, wantEnv) {
		t.Errorf("unit environment %v, want %v", unit.Environment, wantEnv)
	}
	// The plan names the stage's secrets and holds no value: the
	// manager puts the values into a task's leased copy.
	if names, err := errand.SecretNames(plan.Tasks[1].Data); err != nil || !reflect.DeepEqual(names, []string{"TOKEN"}) ||
		strings.Contains(string(plan.Tasks[1].Data), "s3cret") {
		t.Errorf("execute data %s names secrets %v (%v)", plan.Tasks[1].Data, names, err)
	}
	if unit.Secrets != nil || unit.WorkingDir != "src" || unit.Shell != "bash -e" ||
		unit.Image != "" || lint.Image != "golangci" || unit.Step != "unit" || unit.Commands[0] != "go test ./..." || !unit.Privileged {
		t.Errorf("execute data %+v / %+v", unit, lint)
	}
	if lint.Environment["B"] != "stage" {
		t.Errorf("step environment leaked into another step: %v", lint.Environment)
	}
	var cleanup tasks.CleanupData
	if err := json.Unmarshal(plan.Tasks[3].Data, &cleanup); err != nil || cleanup.Stage.Stage != "test" {
		t.Errorf("cleanup data %s: %v", plan.Tasks[3].Data, err)
	}
	wantDeps := [][]errand.Dependency{
		{{Task: "t5", Condition: errand.OnSuccess}}, // the gate
		{{Task: "t1", Condition: errand.OnSuccess}},
		{{Task: "t1", Condition: errand.OnSuccess}, {Task: "t2", Condition: errand.OnSuccess}},
		{{Task: "t1", Condition: "on_success|on_failure"}, {Task: "t2", Condition: errand.Always}, {Task: "t3", Condition: errand.Always}},
	}
	for i, task := range plan.Tasks {
		if !reflect.DeepEqual(task.DependsOn, wantDeps[i]) {
			t.Errorf("task %d depends on %v, want %v", i, task.DependsOn, wantDeps[i])
		}
	}
}

func TestExpandHostTypesAndULIDs(t *testing.T) {
	plan, err := Expand(mustParse(t, "stages:\n  - {name: a, steps: [{name: s, commands: [x]}]}\n"), ExpandOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{errand.TypeExecInitialize, errand.TypeExecExecute, errand.TypeExecCleanup}
	for i, task := range plan.Tasks {
		if task.Type != want[i] || len(task.ID) != 26 {
			t.Errorf("task %d: %s %q", i, task.Type, task.ID)
		}
		if i > 0 && task.ID <= plan.Tasks[i-1].ID {
			t.Errorf("ids not increasing: %s after %s", task.ID, plan.Tasks[i-1].ID)
		}
	}
	var init tasks.InitializeData
	if err := json.Unmarshal(plan.Tasks[0].Data, &init); err != nil || init.Pull != "" {
		t.Errorf("host initialize data %s: %v", plan.Tasks[0].Data, err)
	}
}

func TestExpandErrors(t *testing.T) {
	secrets := `stages:
  - {name: a, secrets: [B_KEY, A_KEY], steps: [{name: s, commands: [x]}]}
  - {name: b, secrets: [C_KEY], when: {branch: [main]}, steps: [{name: s, commands: [x]}]}
`
	_, err := Expand(mustParse(t, secrets), ExpandOptions{Branch: "dev", Secrets: map[string]string{}})
	if err == nil || err.Error() != "invalid: missing secrets: A_KEY, B_KEY" || errand.ErrorCode(err) != errand.CodeInvalid {
		t.Errorf("missing secrets: %v", err)
	}
	if _, err := Expand(mustParse(t, secrets), ExpandOptions{Branch: "dev", Secrets: map[string]string{"A_KEY": "", "B_KEY": "b"}}); err != nil {
		t.Errorf("secrets of a skipped stage required: %v", err)
	}
	_, err = Expand(&Config{}, ExpandOptions{})
	if err == nil || !strings.Contains(err.Error(), "at least one stage") {
		t.Errorf("invalid config expanded: %v", err)
	}
}

func TestExamples(t *testing.T) {
	tests := []struct {
		dir    string
		opts   LoadOptions
		stages []string
		result Result
	}{
		{"hello", LoadOptions{}, []string{"build", "test", "package"}, ResultSuccess},
		{"matrix", LoadOptions{}, []string{"go-1_25", "go-1_26", "summary"}, ResultSuccess},
		{"matrix", LoadOptions{ExtStr: map[string]string{"go_versions": "1.24,1.25,1.26"}}, []string{"go-1_24", "go-1_25", "go-1_26", "summary"}, ResultSuccess},
		{"failure", LoadOptions{}, []string{"flaky", "recover", "report", "publish"}, ResultFailed},
		{"approval", LoadOptions{}, []string{"build", "deploy"}, ResultSuccess},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			cfg, err := Load("../examples/"+tt.dir, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, s := range cfg.Stages {
				names = append(names, s.Name)
			}
			if !reflect.DeepEqual(names, tt.stages) {
				t.Errorf("stages %v, want %v", names, tt.stages)
			}
			plan, err := Expand(cfg, ExpandOptions{RunID: "r", NewID: seqIDs()})
			if err != nil {
				t.Fatal(err)
			}
			// The failure example fails for real: its break step exits 3.
			state := simulate(t, plan, map[string]errand.State{"flaky/break": errand.StateFailed})
			approvals := map[string]int{"deploy": 1}
			if ph, res := RunStatus(plan, state, approvals); ph != PhaseFinished || res != tt.result {
				t.Errorf("run %s %s, want finished %s", ph, res, tt.result)
			}
			if tt.dir == "failure" {
				got := stageStates(plan, state)
				want := map[string]StageState{"flaky": StageFailed, "recover": StageSuccess, "report": StageSuccess, "publish": StageSkipped}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("failure stages %v, want %v", got, want)
				}
			}
			if tt.dir == "approval" && plan.Stages[1].Approval != 1 {
				t.Errorf("deploy approval %d", plan.Stages[1].Approval)
			}
		})
	}
}
