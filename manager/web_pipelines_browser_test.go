package manager

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/web/webtest"
	"github.com/errandci/errand/pipeline"
)

// TestWebUIRestartInBrowser: the Pipelines page lists a pipeline and its
// runs by number; a run page shows name#number and its trigger; the
// Restart button restarts a failed run from failed (the succeeded stage
// is kept) and the r key restarts a run from start.
func TestWebUIRestartInBrowser(t *testing.T) {
	e := newEnv(t)
	e.startHostDelegate()
	browser := webtest.New(t)
	base := e.ts.URL
	dir := t.TempDir()
	e.createPipeline(&client.PipelineSpec{Name: "api", Config: flakyStages(dir)})
	first := e.startPipelineRun("api", &client.PipelineRunRequest{Ref: "refs/heads/main", Commit: "abc123"})
	first = e.waitRun(first.ID, "finished", func(r *client.Run) bool { return r.Phase == string(pipeline.PhaseFinished) })
	if first.Result != string(pipeline.ResultFailed) {
		t.Fatalf("first run: %s", summary(first))
	}
	if err := os.WriteFile(filepath.Join(dir, "ok"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b := browser.For(t)
	b.Do(browserWait,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), testAdmin),
		chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS("#runs")),
		chromedp.Click(chromedp.CSS("#nav-pipelines")),
		chromedp.WaitVisible(chromedp.CSS(`#pipelines a[href="/ui/pipelines/api"]`)),
		chromedp.Click(chromedp.CSS(`#pipelines a[href="/ui/pipelines/api"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#pipeline-runs a[href="/ui/runs/`+first.ID+`"]`)),
		chromedp.Click(chromedp.CSS(`#pipeline-runs a[href="/ui/runs/`+first.ID+`"]`)),
		chromedp.WaitVisible(chromedp.CSS("#restart-run")),
	)
	if h := webtest.Eval[string](b, `document.querySelector("h1 .run-name").textContent`); h != "api#1" {
		t.Errorf("the run page is titled %q, want api#1", h)
	}
	if tr := webtest.Eval[string](b, `document.querySelector("#run-trigger").textContent`); !strings.Contains(tr, "user admin") ||
		!strings.Contains(tr, "refs/heads/main") || !strings.Contains(tr, "abc123") {
		t.Errorf("trigger reads %q", tr)
	}

	// The button: from failed, a new number, build kept.
	b.Do(browserWait, chromedp.Click(chromedp.CSS("#restart-run")), chromedp.WaitVisible(chromedp.CSS("#restart-of")))
	webtest.WaitTrue(b, browserWait, `document.querySelector("h1 .run-name").textContent === "api#2"`)
	loc := webtest.Get(b, browserWait, chromedp.Location())
	second := e.waitRun(loc[strings.LastIndex(loc, "/")+1:], "finished", func(r *client.Run) bool { return r.Phase == string(pipeline.PhaseFinished) })
	if second.Number != 2 || second.RestartOf != first.ID || second.RestartFrom != "failed" || second.Result != string(pipeline.ResultSuccess) {
		t.Fatalf("restart by the button = %+v: %s", second, summary(second))
	}
	for _, s := range second.Stages {
		if s.Name == "build" && s.KeptFrom != first.ID {
			t.Errorf("build of the restart = %+v, want kept from %s", s, first.ID)
		}
	}
	webtest.WaitTrue(b, browserWait, `!!document.querySelector("#stage-build .kept") && !!document.querySelector("#restart-run")`)
	if b, _ := os.ReadFile(filepath.Join(dir, "builds")); string(b) != "built\n" {
		t.Errorf("builds = %q: the kept stage ran again", b)
	}

	// The r key: a run that succeeded restarts from start.
	b.Do(browserWait, chromedp.KeyEvent("r"))
	webtest.WaitTrue(b, browserWait, `!!document.querySelector("h1 .run-name") && document.querySelector("h1 .run-name").textContent === "api#3"`)
	loc = webtest.Get(b, browserWait, chromedp.Location())
	third := e.getRun(loc[strings.LastIndex(loc, "/")+1:])
	if third.RestartOf != second.ID || third.RestartFrom != "start" {
		t.Fatalf("restart by r = %+v", third)
	}
	// r typed into a field is the field's.
	b.Do(browserWait, chromedp.Navigate(base+"/ui/pipelines"), chromedp.WaitVisible(chromedp.CSS(`input[name="prefix"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="prefix"]`), "r"))
	if n := len(e.pipelineRuns("api")); n != 3 {
		t.Errorf("pipeline api has %d runs after typing r into a field, want 3", n)
	}
}

func (e *env) pipelineRuns(name string) []*client.Run {
	e.t.Helper()
	var out client.RunList
	e.must(200, "GET", "/api/v1/pipelines/"+name+"/runs", testAdmin, nil, &out)
	return out.Items
}
