package runs

import (
	"context"
	"errors"
	"slices"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/pipeline"
)

// Where a restart starts from.
const (
	// RestartFromFailed re-runs the failed and cancelled stages and
	// every stage downstream of them; the stages that succeeded (or were
	// skipped) upstream of them are kept with their tasks, results and
	// logs.
	RestartFromFailed = "failed"
	// RestartFromStart re-runs every stage.
	RestartFromStart = "start"
)

// Restart starts a new run of the config run id ran with, as who: a run
// of the same pipeline (its next number), linked to the original. The
// run's static variables (the environment and Jsonnet variables it was
// given, its branch and event) are the original's; its dynamic
// environment (secrets, run id and number) is taken anew. A run that
// has not ended cannot be restarted (errand.CodeConflict), nor one
// with nothing to re-run from failed.
func (s *Service) Restart(ctx context.Context, id string, req *client.RestartRequest, who string) (*client.Run, error) {
	from := req.From
	if from == "" {
		from = RestartFromFailed
	}
	if from != RestartFromFailed && from != RestartFromStart {
		return nil, errand.Errorf(errand.CodeInvalid, "from: %q is not failed or start", req.From)
	}
	run, err := s.store.RunGet(ctx, id)
	if err != nil {
		return nil, err
	}
	rs, err := s.loadRun(ctx, run)
	if err != nil {
		return nil, err
	}
	view, err := s.runView(ctx, run)
	if err != nil {
		return nil, err
	}
	if view.Phase != string(pipeline.PhaseFinished) && view.Phase != string(pipeline.PhaseSetupError) {
		return nil, errand.Errorf(errand.CodeConflict, "run %s is %s: a run is restarted once it has ended (cancel it first)", id, view.Phase)
	}
	orig := run.Origin
	if orig == nil {
		orig = &store.RunOrigin{}
	}
	t := orig.Trigger
	o := createOptions{createdBy: who, origin: &store.RunOrigin{Pipeline: orig.Pipeline, RestartOf: id, RestartFrom: from,
		Trigger: store.RunTrigger{Kind: TriggerRestart, Who: who, Event: t.Event, Commit: t.Commit, Ref: t.Ref, Author: t.Author, Message: t.Message}}}
	if from == RestartFromFailed && rs.plan != nil {
		keep := &keptStages{from: rs}
		if len(keep.failed()) == 0 {
			return nil, errand.Errorf(errand.CodeConflict, "run %s has no failed or cancelled stage to re-run: restart it from start", id)
		}
		o.keep = keep
	}
	creq := &client.RunRequest{Config: string(run.Config), Filename: run.Filename, Branch: run.Branch, Event: run.Event,
		Env: orig.Variables, ExtStr: orig.ExtStr}
	// The same commit of the same source.
	if rs.plan != nil && rs.plan.Source != nil {
		creq.Source, creq.Commit = rs.plan.Source, rs.plan.Commit
	}
	out, err := s.create(ctx, creq, o)
	if errors.Is(err, errand.ErrNotFound) && orig.Pipeline != "" {
		return nil, errand.Errorf(errand.CodeConflict, "pipeline %s was deleted: its runs cannot be restarted", orig.Pipeline)
	}
	return out, err
}

// keptStages decides which stages of a restart from failed are kept
// from the run it restarts, and puts their tasks in the new plan.
type keptStages struct {
	from *runState
}

// failed names the stages of the original run that failed or were
// cancelled.
func (k *keptStages) failed() map[string]bool {
	out := map[string]bool{}
	for _, ps := range k.from.plan.Stages {
		if st := k.from.stageState(ps); st == pipeline.StageFailed || st == pipeline.StageCancelled {
			out[ps.Name] = true
		}
	}
	return out
}

// apply keeps, in a new plan of the same config, every stage of the
// original run that succeeded or was skipped and that no re-run stage
// is upstream of: its tasks are dropped from the plan, the stage names
// the original's tasks, and the tasks that depended on them depend on
// the original's, which have ended. It sets the runs the new run uses.
func (k *keptStages) apply(plan *runPlan, origin *store.RunOrigin) error {
	old := map[string]pipeline.PlanStage{}
	for _, ps := range k.from.plan.Stages {
		old[ps.Name] = ps
	}
	stageOf := (&runState{plan: plan}).stageOfTask()
	for _, ps := range plan.Stages {
		if ps.GateID != "" {
			stageOf[ps.GateID] = ps.Name
		}
	}
	upstream := map[string][]string{}
	byID := map[string]*errand.Task{}
	for _, t := range plan.Tasks {
		byID[t.ID] = t
	}
	for _, ps := range plan.Stages {
		first := ps.InitializeID
		if ps.GateID != "" {
			first = ps.GateID
		}
		if t := byID[first]; t != nil {
			for _, d := range t.DependsOn {
				if name := stageOf[d.Task]; name != "" && name != ps.Name {
					upstream[ps.Name] = append(upstream[ps.Name], name)
				}
			}
		}
	}
	rerun := k.failed()
	for changed := true; changed; {
		changed = false
		for _, ps := range plan.Stages {
			if rerun[ps.Name] {
				continue
			}
			if !k.keepable(ps, old) || slices.ContainsFunc(upstream[ps.Name], func(u string) bool { return rerun[u] }) {
				rerun[ps.Name], changed = true, true
			}
		}
	}
	ids := map[string]string{}
	kept := map[string]string{}
	for i, ps := range plan.Stages {
		if rerun[ps.Name] || ps.Skipped {
			continue
		}
		was := old[ps.Name]
		ids[ps.InitializeID], ids[ps.CleanupID] = was.InitializeID, was.CleanupID
		if ps.GateID != "" {
			ids[ps.GateID] = was.GateID
		}
		for j, st := range ps.Steps {
			ids[st.TaskID] = was.Steps[j].TaskID
		}
		if t := k.from.tasks[was.InitializeID]; t != nil {
			kept[ps.Name] = t.RunID
			if !slices.Contains(origin.Uses, t.RunID) {
				origin.Uses = append(origin.Uses, t.RunID)
			}
		}
		plan.Stages[i] = was
	}
	tasks := plan.Tasks[:0]
	for _, t := range plan.Tasks {
		if _, gone := ids[t.ID]; gone {
			continue
		}
		for j, d := range t.DependsOn {
			if was, ok := ids[d.Task]; ok {
				t.DependsOn[j].Task = was
			}
		}
		tasks = append(tasks, t)
	}
	plan.Tasks = tasks
	plan.Kept = kept
	return nil
}

// keepable says whether stage ps of the new plan may be kept from the
// original run: it ran there the same way (same steps, same gate) and
// succeeded, or was skipped by its dependencies. A stage the new plan
// skips (its when) has no tasks to keep and is skipped again.
func (k *keptStages) keepable(ps pipeline.PlanStage, old map[string]pipeline.PlanStage) bool {
	if ps.Skipped {
		return true
	}
	was, ok := old[ps.Name]
	if !ok || was.Skipped || len(was.Steps) != len(ps.Steps) || (was.GateID == "") != (ps.GateID == "") {
		return false
	}
	for j, st := range ps.Steps {
		if was.Steps[j].Name != st.Name {
			return false
		}
	}
	for _, id := range append([]string{was.InitializeID, was.CleanupID}, stepTaskIDs(was)...) {
		if t := k.from.tasks[id]; t == nil || !t.State.Terminal() {
			return false
		}
	}
	st := k.from.stageState(was)
	return st == pipeline.StageSuccess || st == pipeline.StageSkipped
}

func stepTaskIDs(ps pipeline.PlanStage) []string {
	out := make([]string, len(ps.Steps))
	for i, st := range ps.Steps {
		out[i] = st.TaskID
	}
	return out
}
