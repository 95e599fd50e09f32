package manager

import (
	"net/http"
	"strings"
	"testing"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/gitsource/gittest"
)

// TestPipelineSourceReachesRuns: a pipeline's source is checked when it
// is stored, and its runs check out the commit of the ref they are
// started for; a restart checks out the same commit.
func TestPipelineSourceReachesRuns(t *testing.T) {
	repo := gittest.NewRepo(t)
	url := repo.Daemon(t)
	e := newEnv(t)
	e.fails(http.StatusBadRequest, "invalid", "POST", "/api/v1/pipelines", testAdmin,
		&client.PipelineSpec{Name: "bad", Config: sourceConfig, Source: []byte(`{"git":{"url":"ftp://x"}}`)})
	e.fails(http.StatusBadRequest, "invalid", "POST", "/api/v1/pipelines", testAdmin,
		&client.PipelineSpec{Name: "bad", Config: sourceConfig, Source: []byte(`{"git":{"url":"` + url + `","bogus":1}}`)})
	e.createPipeline(&client.PipelineSpec{Name: "src", Config: sourceConfig, Source: []byte(`{"git":{"url":"` + url + `","ref":"main"}}`)})
	first := e.startPipelineRun("src", &client.PipelineRunRequest{Ref: "first"})
	if first.Commit != repo.First || first.Source == nil || first.Source.Git.Ref != "first" || first.Trigger.Ref != "first" {
		t.Fatalf("run for ref first: source %+v commit %q, want %s", first.Source, first.Commit, repo.First)
	}
	if main := e.startPipelineRun("src", nil); main.Commit != repo.Second || main.Source.Git.Ref != "main" {
		t.Fatalf("run of the pipeline's ref: source %+v commit %q, want %s", main.Source, main.Commit, repo.Second)
	}
	if given := e.startPipelineRun("src", &client.PipelineRunRequest{Commit: repo.First}); given.Commit != repo.First {
		t.Fatalf("a given commit became %q", given.Commit)
	}
	e.must(http.StatusNoContent, "POST", "/api/v1/runs/"+first.ID+"/cancel", testAdmin, nil, nil)
	e.waitRun(first.ID, "ended", func(r *client.Run) bool { return r.Phase == "finished" })
	var again client.Run
	e.must(http.StatusCreated, "POST", "/api/v1/runs/"+first.ID+"/restart", testAdmin, &client.RestartRequest{From: "start"}, &again)
	if again.Commit != repo.First || again.Number != 4 {
		t.Fatalf("restart: commit %q number %d, want %s and 4", again.Commit, again.Number, repo.First)
	}
}

// TestPipelineConfigFromSource: a pipeline whose config is at
// config_path in its source runs the config of the commit it checks
// out: the ref's commit now, a trigger's ref's, or a given commit. A
// path the commit does not have fails the start with the path named,
// and nothing is started.
func TestPipelineConfigFromSource(t *testing.T) {
	repo := gittest.NewRepo(t)
	url := repo.Daemon(t)
	e := newEnv(t)
	e.createPipeline(&client.PipelineSpec{Name: "inrepo", ConfigPath: "ci/errand.yml",
		Source: []byte(`{"git":{"url":"` + url + `","ref":"main"}}`)})
	for _, c := range []struct {
		req          *client.PipelineRunRequest
		commit, name string
	}{
		{nil, repo.Second, "second"},
		{&client.PipelineRunRequest{Ref: "first"}, repo.First, "first"},
		{&client.PipelineRunRequest{Commit: repo.First}, repo.First, "first"},
	} {
		run := e.startPipelineRun("inrepo", c.req)
		if run.Commit != c.commit || len(run.Stages) != 1 || run.Stages[0].Name != c.name || run.Filename != "errand.yml" {
			t.Fatalf("run %+v: commit %s, %d stages, filename %q; want %s with the one stage %q", c.req, run.Commit, len(run.Stages), run.Filename, c.commit, c.name)
		}
	}
	e.createPipeline(&client.PipelineSpec{Name: "missing", ConfigPath: "ci/none.yml",
		Source: []byte(`{"git":{"url":"` + url + `","ref":"main"}}`)})
	eb := e.fails(http.StatusBadRequest, "invalid", "POST", "/api/v1/pipelines/missing/runs", testAdmin, &client.PipelineRunRequest{})
	if !strings.Contains(eb.Reason, "ci/none.yml") {
		t.Errorf("a missing config: %q does not name the path", eb.Reason)
	}
	var runs client.RunList
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/missing/runs", testAdmin, nil, &runs)
	if len(runs.Items) != 0 {
		t.Errorf("a start that failed left %d runs", len(runs.Items))
	}
}
