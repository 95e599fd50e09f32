package manager

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/pipelines"
	"github.com/errandci/errand/manager/runs"
	"github.com/errandci/errand/pipeline"
)

const twoStages = `stages:
  - name: build
    steps:
      - name: compile
        commands: [echo built]
  - name: test
    depends: [build]
    steps:
      - name: unit
        commands: ['test "$TARGET" = prod']
`

func (e *env) createPipeline(spec *client.PipelineSpec) *client.Pipeline {
	e.t.Helper()
	var out client.Pipeline
	e.must(http.StatusCreated, "POST", "/api/v1/pipelines", testAdmin, spec, &out)
	return &out
}

func (e *env) startPipelineRun(name string, req *client.PipelineRunRequest) *client.Run {
	e.t.Helper()
	var out client.Run
	e.must(http.StatusCreated, "POST", "/api/v1/pipelines/"+name+"/runs", testAdmin, req, &out)
	return &out
}

// TestPipelinesCRUD: a pipeline is stored once by name, read, listed by
// prefix, replaced and deleted; bad specs are refused naming each field.
func TestPipelinesCRUD(t *testing.T) {
	e := newEnv(t)
	p := e.createPipeline(&client.PipelineSpec{Name: "api", Config: twoStages, Variables: map[string]string{"TARGET": "prod"},
		Triggers: &client.PipelineTriggers{Webhook: &client.WebhookTrigger{Secrets: []string{"HOOK_KEY"}}},
		Notify:   []client.PipelineNotify{{Webhook: &client.NotifyWebhook{URL: "https://example.test/hook", Secret: "SIGN", On: []string{"failed"}}}, {Slack: &client.NotifySlack{URLSecret: "SLACK_URL"}}}})
	if p.Kind != client.KindPipeline || p.ID != "api" || p.Href != "/api/v1/pipelines/api" || p.Filename != "config.yml" ||
		p.CreatedBy != BootstrapAdmin || p.LastNumber != 0 || p.RunsHref != "/api/v1/pipelines/api/runs" {
		t.Fatalf("created %+v", p)
	}
	eb := e.fails(http.StatusConflict, errand.CodeConflict, "POST", "/api/v1/pipelines", testAdmin, &client.PipelineSpec{Name: "api", Config: twoStages})
	if !strings.Contains(eb.Reason, "api exists") {
		t.Errorf("conflict reason %q", eb.Reason)
	}
	eb = e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/pipelines", testAdmin, &client.PipelineSpec{
		Name: "Bad Name", Variables: map[string]string{"ERRAND_X": "1", "a-b": "2"}, Source: []byte(`[1]`),
		Notify: []client.PipelineNotify{{}, {Webhook: &client.NotifyWebhook{URL: "ftp://x", On: []string{"sometimes"}}}}})
	for _, want := range []string{"name:", "config:", "source:", "variables.ERRAND_X:", `variables: "a-b"`, "notify[0]:", "notify[1].webhook.url:", "notify[1].webhook.on[0]:"} {
		if !strings.Contains(eb.Reason, want) {
			t.Errorf("reason %q does not name %s", eb.Reason, want)
		}
	}
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/pipelines", testAdmin, &client.PipelineSpec{Name: "p", ConfigPath: "../../etc/passwd.yml", Source: []byte(`{"git":{"url":"https://x"}}`)})
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/pipelines", testAdmin, `{"name":"p","config":"x","unknown":1}`)
	e.createPipeline(&client.PipelineSpec{Name: "api-v2", Config: twoStages})
	e.createPipeline(&client.PipelineSpec{Name: "web", Config: twoStages, Filename: "config.yaml"})

	var list client.PipelineList
	e.must(http.StatusOK, "GET", "/api/v1/pipelines?prefix=api", testAdmin, nil, &list)
	if list.Kind != client.KindPipelineList || len(list.Items) != 2 || list.Items[0].Name != "api" || list.Items[1].Name != "api-v2" || list.Items[0].Config != "" {
		t.Fatalf("list by prefix = %+v", list)
	}
	e.must(http.StatusOK, "GET", "/api/v1/pipelines?limit=2", testAdmin, nil, &list)
	if len(list.Items) != 2 || list.Next != "api-v2" {
		t.Fatalf("first page = %d items, next %q", len(list.Items), list.Next)
	}
	e.must(http.StatusOK, "GET", "/api/v1/pipelines?limit=2&after=api-v2", testAdmin, nil, &list)
	if len(list.Items) != 1 || list.Items[0].Name != "web" {
		t.Fatalf("second page = %+v", list.Items)
	}
	var got client.Pipeline
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/api", testAdmin, nil, &got)
	if got.Config != twoStages || got.Variables["TARGET"] != "prod" || got.Triggers.Webhook.Secrets[0] != "HOOK_KEY" || len(got.Notify) != 2 {
		t.Fatalf("get = %+v", got)
	}
	e.must(http.StatusOK, "PUT", "/api/v1/pipelines/web", testAdmin, &client.PipelineSpec{Config: twoStages, Variables: map[string]string{"TARGET": "dev"}}, &got)
	if got.Name != "web" || got.Variables["TARGET"] != "dev" || got.Filename != "config.yml" {
		t.Fatalf("put = %+v", got)
	}
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "PUT", "/api/v1/pipelines/web", testAdmin, &client.PipelineSpec{Name: "other", Config: twoStages})
	e.fails(http.StatusNotFound, errand.CodeNotFound, "PUT", "/api/v1/pipelines/nope", testAdmin, &client.PipelineSpec{Config: twoStages})
	e.must(http.StatusNoContent, "DELETE", "/api/v1/pipelines/web", testAdmin, nil, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "GET", "/api/v1/pipelines/web", testAdmin, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "DELETE", "/api/v1/pipelines/web", testAdmin, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "POST", "/api/v1/pipelines/web/runs", testAdmin, nil)
}

// TestPipelineRuns: runs of a pipeline are numbered, keep their trigger
// and variables, run with the pipeline's variables under their own, and
// are listed and addressed by number, stage and step.
func TestPipelineRuns(t *testing.T) {
	e := newEnv(t)
	e.startHostDelegate()
	e.createPipeline(&client.PipelineSpec{Name: "api", Config: twoStages, Variables: map[string]string{"TARGET": "dev", "KEEP": "1"}})
	first := e.startPipelineRun("api", &client.PipelineRunRequest{Ref: "refs/heads/main", Commit: "abc123", Variables: map[string]string{"TARGET": "prod"}})
	if first.Number != 1 || first.Name != "api#1" || first.Pipeline != "api" || first.Branch != "main" {
		t.Fatalf("first run = %+v", first)
	}
	if tr := first.Trigger; tr == nil || tr.Kind != "user" || tr.Who != BootstrapAdmin || tr.Ref != "refs/heads/main" || tr.Commit != "abc123" {
		t.Fatalf("trigger = %+v", first.Trigger)
	}
	if first.Variables["TARGET"] != "prod" || first.Variables["KEEP"] != "1" {
		t.Fatalf("variables = %v", first.Variables)
	}
	done := e.waitRun(first.ID, "finished", func(r *client.Run) bool { return r.Phase == string(pipeline.PhaseFinished) })
	if done.Result != string(pipeline.ResultSuccess) {
		t.Fatalf("first run %s: the step did not see TARGET=prod", summary(done))
	}
	second := e.startPipelineRun("api", nil)
	if second.Number != 2 || second.Trigger.Ref != "" {
		t.Fatalf("second run = %+v", second)
	}
	e.waitRun(second.ID, "failed", func(r *client.Run) bool { return r.Result == string(pipeline.ResultFailed) })

	var byNumber client.Run
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/api/runs/1", testAdmin, nil, &byNumber)
	if byNumber.ID != first.ID || len(byNumber.Stages) != 2 {
		t.Fatalf("run 1 = %+v", byNumber)
	}
	e.fails(http.StatusNotFound, errand.CodeNotFound, "GET", "/api/v1/pipelines/api/runs/9", testAdmin, nil)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "GET", "/api/v1/pipelines/api/runs/x", testAdmin, nil)

	var runs client.RunList
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/api/runs", testAdmin, nil, &runs)
	if len(runs.Items) != 2 || runs.Items[0].Number != 2 || runs.Items[1].Number != 1 {
		t.Fatalf("runs = %+v", runs.Items)
	}
	for q, want := range map[string][]int64{
		"result=success": {1}, "result=failed": {2}, "ref=refs/heads/main": {1}, "commit=nope": {},
		"limit=1": {2}, "before=2": {1}, "trigger=user&phase=finished": {2, 1},
	} {
		e.must(http.StatusOK, "GET", "/api/v1/pipelines/api/runs?"+q, testAdmin, nil, &runs)
		var got []int64
		for _, r := range runs.Items {
			got = append(got, r.Number)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("runs?%s = %v, want %v", q, got, want)
		}
	}
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/api/runs?limit=1", testAdmin, nil, &runs)
	if runs.Next != "2" {
		t.Errorf("next of the first page = %q, want 2", runs.Next)
	}
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "GET", "/api/v1/pipelines/api/runs?result=maybe", testAdmin, nil)

	var stages client.StageList
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/api/runs/2/stages?state=failed", testAdmin, nil, &stages)
	if stages.Kind != client.KindStageList || len(stages.Items) != 1 || stages.Items[0].Name != "test" || stages.Items[0].RunName != "api#2" ||
		stages.Items[0].Href != "/api/v1/pipelines/api/runs/2/stages/test" {
		t.Fatalf("failed stages of run 2 = %+v", stages.Items)
	}
	var stage client.Stage
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/api/runs/2/stages/build", testAdmin, nil, &stage)
	if stage.Kind != client.KindStage || stage.ID != "build" || stage.State != string(pipeline.StageSuccess) {
		t.Fatalf("stage build = %+v", stage)
	}
	var steps client.StepList
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/api/runs/2/stages/test/steps?state=failed", testAdmin, nil, &steps)
	if len(steps.Items) != 1 || steps.Items[0].Name != "unit" || steps.Items[0].Stage != "test" {
		t.Fatalf("failed steps = %+v", steps.Items)
	}
	var step client.Step
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/api/runs/1/stages/build/steps/compile", testAdmin, nil, &step)
	if step.Kind != client.KindStep || step.State != errand.StateSucceeded || step.Href != "/api/v1/pipelines/api/runs/1/stages/build/steps/compile" {
		t.Fatalf("step = %+v", step)
	}
	e.fails(http.StatusNotFound, errand.CodeNotFound, "GET", "/api/v1/pipelines/api/runs/1/stages/nope", testAdmin, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "GET", "/api/v1/pipelines/api/runs/1/stages/build/steps/nope", testAdmin, nil)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "GET", "/api/v1/pipelines/api/runs/1/stages?state=sleepy", testAdmin, nil)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/pipelines/api/runs", testAdmin, &client.PipelineRunRequest{Variables: map[string]string{"ERRAND_RUN_ID": "x"}})

	// Deleting the pipeline keeps its runs; made again, it goes on.
	e.must(http.StatusNoContent, "DELETE", "/api/v1/pipelines/api", testAdmin, nil, nil)
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/api/runs/2", testAdmin, nil, &byNumber)
	e.createPipeline(&client.PipelineSpec{Name: "api", Config: twoStages})
	if third := e.startPipelineRun("api", nil); third.Number != 3 {
		t.Fatalf("first run of api made again is number %d, want 3", third.Number)
	}
}

// flakyStages: build succeeds; test fails until the file ok exists in
// dir; deploy follows test; notify runs only when build fails.
func flakyStages(dir string) string {
	return fmt.Sprintf(`stages:
  - name: build
    steps:
      - name: compile
        commands: ['echo built | tee -a %[1]s/builds']
  - name: test
    depends: [build]
    steps:
      - name: unit
        commands: [test -f %[1]s/ok]
  - name: deploy
    depends: [test]
    steps:
      - name: ship
        commands: [echo shipped]
  - name: notify
    depends:
      - stage: build
        conditions: [on_failure]
    steps:
      - name: page
        commands: [echo paged]
`, dir)
}

// TestRestartFromFailed: a restart from failed is a new number linked to
// the original; it keeps the stages that succeeded (their tasks are not
// run again: the new run shows the original's tasks) and re-runs the
// failed stage and what is downstream of it.
func TestRestartFromFailed(t *testing.T) {
	e := newEnv(t)
	e.startHostDelegate()
	dir := t.TempDir()
	e.createPipeline(&client.PipelineSpec{Name: "api", Config: flakyStages(dir), Variables: map[string]string{"TARGET": "prod"}})
	first := e.startPipelineRun("api", &client.PipelineRunRequest{Ref: "main", Commit: "abc"})
	first = e.waitRun(first.ID, "failed", func(r *client.Run) bool { return r.Phase == string(pipeline.PhaseFinished) })
	if first.Result != string(pipeline.ResultFailed) {
		t.Fatalf("first run: %s", summary(first))
	}
	if err := os.WriteFile(filepath.Join(dir, "ok"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/runs/"+first.ID+"/restart", testAdmin, &client.RestartRequest{From: "middle"})
	var again client.Run
	e.must(http.StatusCreated, "POST", "/api/v1/runs/"+first.ID+"/restart", testAdmin, &client.RestartRequest{From: "failed"}, &again)
	if again.Number != 2 || again.RestartOf != first.ID || again.RestartFrom != "failed" || again.Trigger.Kind != "restart" ||
		again.Trigger.Who != BootstrapAdmin || again.Trigger.Commit != "abc" || again.Variables["TARGET"] != "prod" || again.Branch != "main" {
		t.Fatalf("restart = %+v, trigger %+v", again, again.Trigger)
	}
	again = *e.waitRun(again.ID, "finished", func(r *client.Run) bool { return r.Phase == string(pipeline.PhaseFinished) })
	if again.Result != string(pipeline.ResultSuccess) {
		t.Fatalf("restart: %s", summary(&again))
	}
	stage := func(r *client.Run, name string) *client.RunStage {
		for _, s := range r.Stages {
			if s.Name == name {
				return s
			}
		}
		t.Fatalf("run %s has no stage %s", r.ID, name)
		return nil
	}
	oldBuild, newBuild := stage(first, "build"), stage(&again, "build")
	if newBuild.State != string(pipeline.StageSuccess) || newBuild.KeptFrom != first.ID ||
		newBuild.InitializeTask != oldBuild.InitializeTask || newBuild.Steps[0].TaskID != oldBuild.Steps[0].TaskID {
		t.Fatalf("build of the restart = %+v, want the original's tasks (%s)", newBuild, oldBuild.Steps[0].TaskID)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "builds")); string(b) != "built\n" {
		t.Fatalf("build ran %q: a kept stage ran again", b)
	}
	if task := e.getTask(oldBuild.Steps[0].TaskID); task.RunID != first.ID || task.Attempt != 1 {
		t.Fatalf("kept task %+v", task)
	}
	for _, name := range []string{"test", "deploy"} {
		if s := stage(&again, name); s.State != string(pipeline.StageSuccess) || s.KeptFrom != "" || s.Steps[0].TaskID == stage(first, name).Steps[0].TaskID {
			t.Fatalf("%s of the restart = %+v, want it run again", name, s)
		}
	}
	if s := stage(&again, "notify"); s.State != string(pipeline.StageSkipped) || s.KeptFrom != first.ID {
		t.Fatalf("notify of the restart = %+v, want skipped and kept", s)
	}
	if again.StartedAt == nil || again.StartedAt.Before(*first.FinishedAt) {
		t.Errorf("the restart started at %v, before the original finished (%v): a kept stage counted", again.StartedAt, first.FinishedAt)
	}
	// The kept stage's step log is the original's.
	code, body := e.do("GET", "/api/v1/tasks/"+newBuild.Steps[0].TaskID+"/logs", testAdmin, nil)
	if code != http.StatusOK || !strings.Contains(string(body), "built") {
		t.Errorf("log of the kept step = %d %s, want the original's output", code, body)
	}
	// Nothing failed any more: from failed has nothing to do.
	e.fails(http.StatusConflict, errand.CodeConflict, "POST", "/api/v1/runs/"+again.ID+"/restart", testAdmin, &client.RestartRequest{})
	// A restart of the restart from start runs every stage again.
	var fresh client.Run
	e.must(http.StatusCreated, "POST", "/api/v1/runs/"+again.ID+"/restart", testAdmin, &client.RestartRequest{From: "start"}, &fresh)
	if fresh.Number != 3 || fresh.RestartOf != again.ID {
		t.Fatalf("restart from start = %+v", fresh)
	}
	fresh = *e.waitRun(fresh.ID, "finished", func(r *client.Run) bool { return r.Phase == string(pipeline.PhaseFinished) })
	if s := stage(&fresh, "build"); s.KeptFrom != "" || s.Steps[0].TaskID == oldBuild.Steps[0].TaskID {
		t.Fatalf("build of the restart from start = %+v", s)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "builds")); string(b) != "built\nbuilt\n" {
		t.Fatalf("builds = %q, want two", b)
	}
}

// TestRestartRefused: a run that has not ended is not restarted; an
// unknown run is not found; a submitted config restarts as a run of no
// pipeline.
func TestRestartRefused(t *testing.T) {
	e := newEnv(t)
	run := e.submit(`stages:
  - name: gated
    approval: {approvers: 1}
    steps:
      - name: s
        commands: [echo hi]
`)
	eb := e.fails(http.StatusConflict, errand.CodeConflict, "POST", "/api/v1/runs/"+run.ID+"/restart", testAdmin, &client.RestartRequest{From: "start"})
	if !strings.Contains(eb.Reason, "ended") {
		t.Errorf("reason %q", eb.Reason)
	}
	e.fails(http.StatusNotFound, errand.CodeNotFound, "POST", "/api/v1/runs/nope/restart", testAdmin, nil)
	e.must(http.StatusNoContent, "POST", "/api/v1/runs/"+run.ID+"/cancel", testAdmin, nil, nil)
	e.waitRun(run.ID, "cancelled", func(r *client.Run) bool { return r.Phase == string(pipeline.PhaseFinished) })
	var again client.Run
	e.must(http.StatusCreated, "POST", "/api/v1/runs/"+run.ID+"/restart", testAdmin, nil, &again)
	if again.Pipeline != "" || again.Number != 0 || again.RestartOf != run.ID || again.RestartFrom != "failed" || len(again.Stages) != 1 || again.Stages[0].KeptFrom != "" {
		t.Fatalf("restart of a cancelled submitted run = %+v", again)
	}
}

// TestStartRunWithTrigger: the Go method a webhook starts runs with
// records its trigger, takes the branch it names over the ref's, cuts a
// long message and refuses bad variables.
func TestStartRunWithTrigger(t *testing.T) {
	e := newEnv(t)
	e.createPipeline(&client.PipelineSpec{Name: "api", Config: twoStages})
	ctx := t.Context()
	run, err := e.s.pipelines.StartRun(ctx, "api", pipelines.TriggerParams{Kind: runs.TriggerWebhook, Who: "github", Event: "pull_request",
		Ref: "refs/pull/7/head", Branch: "main", Commit: "abc", Author: "Ann", Message: strings.Repeat("é", 3000), Variables: map[string]string{"PR": "7"}})
	if err != nil {
		t.Fatal(err)
	}
	tr := run.Trigger
	if run.Name != "api#1" || run.Branch != "main" || run.Event != "pull_request" || tr.Kind != "webhook" || tr.Who != "github" ||
		tr.Ref != "refs/pull/7/head" || tr.Author != "Ann" || len(tr.Message) > pipelines.MaxCommitMessage || !utf8.ValidString(tr.Message) ||
		run.Variables["PR"] != "7" || run.CreatedBy != "github" {
		t.Fatalf("run = %+v, trigger %+v", run, tr)
	}
	if _, err := e.s.pipelines.StartRun(ctx, "api", pipelines.TriggerParams{Kind: "webhook", Variables: map[string]string{"1x": "y"}}); errand.ErrorCode(err) != errand.CodeInvalid {
		t.Errorf("bad variable: %v", err)
	}
	if _, err := e.s.pipelines.StartRun(ctx, "nope", pipelines.TriggerParams{Kind: "webhook"}); errand.ErrorCode(err) != errand.CodeNotFound {
		t.Errorf("unknown pipeline: %v", err)
	}
	if _, err := e.s.pipelines.StartRun(ctx, "api", pipelines.TriggerParams{}); errand.ErrorCode(err) != errand.CodeInvalid {
		t.Errorf("no kind: %v", err)
	}
}
