package manager

import (
	"context"
	"net/http"
	"slices"
	"strconv"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/manager/pipelines"
	"github.com/errandci/errand/manager/runs"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/pipeline"
)

// Bounds of the pipelines API.
const (
	maxPipelineListLimit     = 100
	defaultPipelineListLimit = 50
	// maxRunScan bounds the runs read for one page of a pipeline's runs
	// filtered by phase or result, which are not stored.
	maxRunScan = 1000
)

func (s *Server) registerPipelineRoutes() {
	h := s.handle
	h("POST", "/api/v1/pipelines", authOperator, s.createPipeline)
	h("GET", "/api/v1/pipelines", authViewer, s.listPipelines)
	h("GET", "/api/v1/pipelines/{name}", authViewer, s.getPipeline)
	h("PUT", "/api/v1/pipelines/{name}", authOperator, s.updatePipeline)
	h("DELETE", "/api/v1/pipelines/{name}", authOperator, s.deletePipeline)
	h("POST", "/api/v1/pipelines/{name}/runs", authOperator, s.startPipelineRun)
	h("GET", "/api/v1/pipelines/{name}/runs", authViewer, s.listPipelineRuns)
	h("GET", "/api/v1/pipelines/{name}/runs/{number}", authViewer, s.getPipelineRun)
	h("GET", "/api/v1/pipelines/{name}/runs/{number}/stages", authViewer, s.listRunStages)
	h("GET", "/api/v1/pipelines/{name}/runs/{number}/stages/{stage}", authViewer, s.getRunStage)
	h("GET", "/api/v1/pipelines/{name}/runs/{number}/stages/{stage}/steps", authViewer, s.listStageSteps)
	h("GET", "/api/v1/pipelines/{name}/runs/{number}/stages/{stage}/steps/{step}", authViewer, s.getStageStep)
	h("POST", "/api/v1/runs/{id}/restart", authOperator, s.restartRun)
}

func (s *Server) createPipeline(w http.ResponseWriter, r *http.Request, p principal) error {
	var req client.PipelineSpec
	if err := httphelper.DecodeJSON(r, &req, s.cfg.MaxBodyBytes); err != nil {
		return err
	}
	out, err := s.pipelines.Create(r.Context(), &req, p.user)
	if err != nil {
		return err
	}
	s.audit(r.Context(), p, "pipeline.create", req.Name, "")
	httphelper.WriteJSON(w, out, http.StatusCreated)
	return nil
}

func (s *Server) listPipelines(w http.ResponseWriter, r *http.Request, _ principal) error {
	q := r.URL.Query()
	limit, err := pageLimit(q.Get("limit"), defaultPipelineListLimit, maxPipelineListLimit)
	if err != nil {
		return err
	}
	out, err := s.pipelines.List(r.Context(), client.PipelineFilter{Prefix: q.Get("prefix"), After: q.Get("after"), Limit: limit})
	if err != nil {
		return err
	}
	httphelper.WriteJSON(w, out, http.StatusOK)
	return nil
}

func (s *Server) getPipeline(w http.ResponseWriter, r *http.Request, _ principal) error {
	out, err := s.pipelines.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	httphelper.WriteJSON(w, out, http.StatusOK)
	return nil
}

func (s *Server) updatePipeline(w http.ResponseWriter, r *http.Request, p principal) error {
	var req client.PipelineSpec
	if err := httphelper.DecodeJSON(r, &req, s.cfg.MaxBodyBytes); err != nil {
		return err
	}
	out, err := s.pipelines.Update(r.Context(), r.PathValue("name"), &req)
	if err != nil {
		return err
	}
	s.audit(r.Context(), p, "pipeline.update", out.Name, "")
	httphelper.WriteJSON(w, out, http.StatusOK)
	return nil
}

func (s *Server) deletePipeline(w http.ResponseWriter, r *http.Request, p principal) error {
	if err := s.pipelines.Delete(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	s.audit(r.Context(), p, "pipeline.delete", r.PathValue("name"), "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// startPipelineRun starts a run of a pipeline as the caller.
func (s *Server) startPipelineRun(w http.ResponseWriter, r *http.Request, p principal) error {
	var req client.PipelineRunRequest
	if err := s.decodeOptional(r, &req); err != nil {
		return err
	}
	name := r.PathValue("name")
	run, err := s.pipelines.StartRun(r.Context(), name, pipelines.TriggerParams{Kind: runs.TriggerUser, Who: p.user,
		Event: req.Event, Ref: req.Ref, Commit: req.Commit, Variables: req.Variables})
	if err != nil {
		return err
	}
	s.audit(r.Context(), p, "pipeline.run", name, run.Name)
	httphelper.WriteJSON(w, run, http.StatusCreated)
	return nil
}

// listPipelineRuns lists a pipeline's runs, highest number first. The
// trigger filters are the store's; phase and result, which come from the
// runs' tasks, are applied to at most maxRunScan runs a page.
func (s *Server) listPipelineRuns(w http.ResponseWriter, r *http.Request, _ principal) error {
	q := r.URL.Query()
	limit, err := pageLimit(q.Get("limit"), defaultRunListLimit, maxRunListLimit)
	if err != nil {
		return err
	}
	var before int64
	if v := q.Get("before"); v != "" {
		if before, err = strconv.ParseInt(v, 10, 64); err != nil || before < 1 {
			return errand.Errorf(errand.CodeInvalid, "before: must be a run number")
		}
	}
	phase, result := q.Get("phase"), q.Get("result")
	if phase != "" && !slices.Contains([]string{string(pipeline.PhaseQueued), string(pipeline.PhaseRunning), string(pipeline.PhaseFinished), string(pipeline.PhaseSetupError)}, phase) {
		return errand.Errorf(errand.CodeInvalid, "phase: %q is not queued, running, finished or setuperror", phase)
	}
	if result != "" && !slices.Contains([]string{string(pipeline.ResultUnknown), string(pipeline.ResultSuccess), string(pipeline.ResultFailed), string(pipeline.ResultCancelled)}, result) {
		return errand.Errorf(errand.CodeInvalid, "result: %q is not unknown, success, failed or cancelled", result)
	}
	name := r.PathValue("name")
	if _, err := s.store.PipelineGet(r.Context(), name); err != nil {
		return err
	}
	out := &client.RunList{Kind: client.KindRunList, Items: []*client.Run{}}
	for scanned := 0; len(out.Items) < limit && scanned < maxRunScan; {
		page, err := s.store.PipelineRunList(r.Context(), store.PipelineRunListParams{Pipeline: name, Before: before,
			TriggerKind: q.Get("trigger"), Ref: q.Get("ref"), Commit: q.Get("commit"), Limit: limit})
		if err != nil {
			return err
		}
		items, err := s.runs.ListItems(r.Context(), page)
		if err != nil {
			return err
		}
		rest := len(items.Items)
		for _, it := range items.Items {
			scanned, rest = scanned+1, rest-1
			before = it.Number
			if (phase == "" || it.Phase == phase) && (result == "" || it.Result == result) {
				out.Items = append(out.Items, it)
				if len(out.Items) == limit {
					break
				}
			}
		}
		if len(page) < limit && rest == 0 {
			before = 0
			break
		}
	}
	if before > 1 {
		out.Next = strconv.FormatInt(before, 10)
	}
	httphelper.WriteJSON(w, out, http.StatusOK)
	return nil
}

// pipelineRun reads the run a path names by pipeline and number.
func (s *Server) pipelineRun(ctx context.Context, r *http.Request) (*client.Run, error) {
	n, err := strconv.ParseInt(r.PathValue("number"), 10, 64)
	if err != nil || n < 1 {
		return nil, errand.Errorf(errand.CodeInvalid, "number: %q is not a run number", r.PathValue("number"))
	}
	return s.pipelines.GetRun(ctx, r.PathValue("name"), n)
}

func (s *Server) getPipelineRun(w http.ResponseWriter, r *http.Request, _ principal) error {
	run, err := s.pipelineRun(r.Context(), r)
	if err != nil {
		return err
	}
	httphelper.WriteJSON(w, run, http.StatusOK)
	return nil
}

func runHref(r *http.Request) string {
	return pipelines.Href(r.PathValue("name")) + "/runs/" + r.PathValue("number")
}

func stageView(r *http.Request, run *client.Run, st *client.RunStage) *client.Stage {
	return &client.Stage{Kind: client.KindStage, ID: st.Name, Href: runHref(r) + "/stages/" + st.Name, RunID: run.ID, RunName: run.Name, RunStage: st}
}

// queryState checks a state filter against what it may be.
func queryState(r *http.Request, known []string) (string, error) {
	v := r.URL.Query().Get("state")
	if v != "" && !slices.Contains(known, v) {
		return "", errand.Errorf(errand.CodeInvalid, "state: %q is not one of %v", v, known)
	}
	return v, nil
}

var stageStates = []string{string(pipeline.StagePending), string(pipeline.StageWaiting), string(pipeline.StageRunning),
	string(pipeline.StageSuccess), string(pipeline.StageFailed), string(pipeline.StageSkipped), string(pipeline.StageCancelled)}

func (s *Server) listRunStages(w http.ResponseWriter, r *http.Request, _ principal) error {
	state, err := queryState(r, stageStates)
	if err != nil {
		return err
	}
	run, err := s.pipelineRun(r.Context(), r)
	if err != nil {
		return err
	}
	out := &client.StageList{Kind: client.KindStageList, Items: []*client.Stage{}}
	for _, st := range run.Stages {
		if state == "" || st.State == state {
			out.Items = append(out.Items, stageView(r, run, st))
		}
	}
	httphelper.WriteJSON(w, out, http.StatusOK)
	return nil
}

// runStage reads the run and stage a path names.
func (s *Server) runStage(r *http.Request) (*client.Run, *client.RunStage, error) {
	run, err := s.pipelineRun(r.Context(), r)
	if err != nil {
		return nil, nil, err
	}
	name := r.PathValue("stage")
	i := slices.IndexFunc(run.Stages, func(st *client.RunStage) bool { return st.Name == name })
	if i < 0 {
		return nil, nil, errand.Errorf(errand.CodeNotFound, "run %s has no stage %s", run.Name, name)
	}
	return run, run.Stages[i], nil
}

func (s *Server) getRunStage(w http.ResponseWriter, r *http.Request, _ principal) error {
	run, st, err := s.runStage(r)
	if err != nil {
		return err
	}
	httphelper.WriteJSON(w, stageView(r, run, st), http.StatusOK)
	return nil
}

var stepStates = []string{string(errand.StatePending), string(errand.StateWaiting), string(errand.StateQueued), string(errand.StateLeased),
	string(errand.StateRunning), string(errand.StateSucceeded), string(errand.StateFailed), string(errand.StateCancelled),
	string(errand.StateSkipped), string(errand.StateTimedOut)}

func stepView(r *http.Request, run *client.Run, st *client.RunStage, step *client.RunStep) *client.Step {
	return &client.Step{Kind: client.KindStep, ID: step.Name, Href: runHref(r) + "/stages/" + st.Name + "/steps/" + step.Name,
		RunID: run.ID, RunName: run.Name, Stage: st.Name, RunStep: step}
}

func (s *Server) listStageSteps(w http.ResponseWriter, r *http.Request, _ principal) error {
	state, err := queryState(r, stepStates)
	if err != nil {
		return err
	}
	run, st, err := s.runStage(r)
	if err != nil {
		return err
	}
	out := &client.StepList{Kind: client.KindStepList, Items: []*client.Step{}}
	for _, step := range st.Steps {
		if state == "" || string(step.State) == state {
			out.Items = append(out.Items, stepView(r, run, st, step))
		}
	}
	httphelper.WriteJSON(w, out, http.StatusOK)
	return nil
}

func (s *Server) getStageStep(w http.ResponseWriter, r *http.Request, _ principal) error {
	run, st, err := s.runStage(r)
	if err != nil {
		return err
	}
	name := r.PathValue("step")
	i := slices.IndexFunc(st.Steps, func(step *client.RunStep) bool { return step.Name == name })
	if i < 0 {
		return errand.Errorf(errand.CodeNotFound, "stage %s of run %s has no step %s", st.Name, run.Name, name)
	}
	httphelper.WriteJSON(w, stepView(r, run, st, st.Steps[i]), http.StatusOK)
	return nil
}

// restartRun starts a new run of what run id ran, as the caller.
func (s *Server) restartRun(w http.ResponseWriter, r *http.Request, p principal) error {
	var req client.RestartRequest
	if err := s.decodeOptional(r, &req); err != nil {
		return err
	}
	id := r.PathValue("id")
	run, err := s.runs.Restart(r.Context(), id, &req, p.user)
	if err != nil {
		return err
	}
	s.audit(r.Context(), p, "run.restart", id, "from "+run.RestartFrom+" as "+run.ID)
	httphelper.WriteJSON(w, run, http.StatusCreated)
	return nil
}

// pageLimit is queryLimit with def for an empty limit.
func pageLimit(v string, def, max int) (int, error) {
	n, err := queryLimit(v, max)
	if n == 0 && err == nil {
		n = def
	}
	return n, err
}
