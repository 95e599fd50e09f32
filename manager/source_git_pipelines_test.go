package manager

import (
	"net/http"
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
