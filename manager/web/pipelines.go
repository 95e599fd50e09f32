package web

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/errandci/errand/client"
)

type pipelinesData struct {
	Prefix    string
	Pipelines []*client.Pipeline
	Next      string
}

func (h *Handler) pipelinesPage(w http.ResponseWriter, r *http.Request, s *session) error {
	q := r.URL.Query()
	d := &pipelinesData{Prefix: q.Get("prefix")}
	list, err := h.api(s).ListPipelines(r.Context(), &client.PipelineFilter{Prefix: d.Prefix, After: q.Get("after"), Limit: 100})
	if err != nil {
		return fmt.Errorf("list pipelines: %w", err)
	}
	d.Pipelines, d.Next = list.Items, list.Next
	h.renderView(w, r, "pipelines", http.StatusOK, &view{Title: "Pipelines", Session: s, Data: d})
	return nil
}

type pipelineData struct {
	Pipeline *client.Pipeline
	Runs     []*client.Run
	Next     string
}

// pipelinePage shows a pipeline and its runs by number, newest first.
func (h *Handler) pipelinePage(w http.ResponseWriter, r *http.Request, s *session) error {
	name := r.PathValue("name")
	api := h.api(s)
	p, err := api.GetPipeline(r.Context(), name)
	if err != nil {
		return notFoundAs(err, "pipeline", name)
	}
	before, _ := strconv.ParseInt(r.URL.Query().Get("before"), 10, 64)
	runs, err := api.ListPipelineRuns(r.Context(), name, &client.PipelineRunFilter{Before: max(before, 0), Limit: 50})
	if err != nil {
		return fmt.Errorf("list runs of pipeline %s: %w", name, err)
	}
	d := &pipelineData{Pipeline: p, Runs: runs.Items, Next: runs.Next}
	h.renderView(w, r, "pipeline", http.StatusOK, &view{Title: "Pipeline " + name, Session: s, Data: d, Refresh: true})
	return nil
}

// restartRun restarts a run from failed (the form's default) or from
// start, and shows the new run.
func (h *Handler) restartRun(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	from := r.PostFormValue("from")
	run, err := h.api(s).RestartRun(r.Context(), id, &client.RestartRequest{From: from})
	if err != nil {
		return notFoundAs(err, "run", id)
	}
	return redirect(w, r, Prefix+"runs/"+url.PathEscape(run.ID))
}
