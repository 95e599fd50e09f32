// Package runs is the manager's pipeline run service: it plans a
// submitted config into tasks (the scheduler stores them), shows a run
// with its stages and steps from its plan and its tasks, lists runs,
// cancels them and approves their stages.
package runs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/livelog"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/pipeline"
)

// Approval gates.
//
// A stage that needs approvals has a gate (pipeline.PlanStage.GateID): a
// task no delegate runs, which takes the stage's own dependencies and
// which the stage's initialize task depends on. Once its dependencies are
// met it waits (errand.StateWaiting); each new approver counts on it in
// the same write that records the approval (store.RunStore.RunApprove),
// and the approval that reaches the count succeeds it, which releases the
// stage. Cancelling the run cancels the gate like any other task.
const (
	// TypeApproval is the task type of an approval gate.
	TypeApproval = pipeline.TypeApproval
	// DefaultApprover is who approves when the request does not say.
	DefaultApprover = "admin"
)

// maxRunTasks bounds the tasks read for one run.
const maxRunTasks = 100000

// Defaults of the bounds of one run (Config.MaxRunStages, MaxStageSteps,
// MaxRunTasks), checked when it is submitted: a run past them is refused
// with 400 and never stored.
const (
	DefaultMaxRunStages  = 1000
	DefaultMaxStageSteps = 200
	DefaultMaxRunTasks   = 10000
)

// finishedRunCacheSize bounds the list items of finished runs kept in
// memory.
const finishedRunCacheSize = 4096

// Href is where run id is in the API.
func Href(id string) string { return "/api/v1/runs/" + id }

// runPlan is what a run stores as its plan: the expanded pipeline. Runs
// stored before the plan named its gates list them in Gates, by stage
// name.
type runPlan struct {
	pipeline.Plan
	Gates map[string]string `json:"gates,omitempty"`
	// Kept maps each stage a restart kept to the run whose tasks it
	// shows.
	Kept map[string]string `json:"kept,omitempty"`
}

// runFormats are the config formats a submitted run may use.
var runFormats = []string{".yml", ".yaml", ".json", ".jsonnet"}

// Create plans a submitted config and stores the run with its tasks,
// made by createdBy (who submitted it). A config that does not load or
// validate makes a run with setup errors; a request that is not a
// config, or a config past a bound of a run, is refused
// (errand.CodeInvalid, CodeTooLarge) and makes no run.
func (s *Service) Create(ctx context.Context, req *client.RunRequest, createdBy string) (*client.Run, error) {
	return s.create(ctx, req, createOptions{createdBy: createdBy,
		origin: &store.RunOrigin{Trigger: store.RunTrigger{Kind: TriggerUser, Who: createdBy}}})
}

// create makes a run as Create does, with where it came from and, for a
// restart, the stages it keeps.
func (s *Service) create(ctx context.Context, req *client.RunRequest, o createOptions) (*client.Run, error) {
	if strings.TrimSpace(req.Config) == "" {
		return nil, errand.Errorf(errand.CodeInvalid, `config: required; the body is {"config": "<the pipeline config>", "filename": "config.yml"}`)
	}
	if req.Filename == "" {
		req.Filename = "config.yml"
	}
	// Only the name says the format: nothing is read from disk.
	name := filepath.Base(filepath.Clean("/" + req.Filename))
	if !slices.Contains(runFormats, strings.ToLower(filepath.Ext(name))) {
		return nil, errand.Errorf(errand.CodeInvalid, "filename: %q names no known format (want .yml, .yaml, .json or .jsonnet)", req.Filename)
	}
	if len(req.Config) > store.MaxRunConfig {
		return nil, errand.Errorf(errand.CodeTooLarge, "config: larger than %d bytes", store.MaxRunConfig)
	}
	if err := checkSource(req); err != nil {
		return nil, err
	}
	id := ulid.Make().String()
	run := &store.Run{ID: id, CreatedBy: o.createdBy, Filename: name, Config: []byte(req.Config), Branch: req.Branch, Event: req.Event,
		Origin: o.originOf(req)}
	plan, err := s.planRun(ctx, id, name, req)
	if err != nil && ctx.Err() != nil {
		// The request ended while the source was resolved.
		return nil, context.Cause(ctx)
	}
	if err == nil && o.keep != nil {
		err = o.keep.apply(plan, run.Origin)
	}
	var tooLarge *runTooLarge
	if errors.As(err, &tooLarge) {
		return nil, errand.Errorf(errand.CodeInvalid, "%s", tooLarge.reason)
	}
	var tasks []*errand.Task
	if err != nil {
		run.SetupErrors = setupErrors(err)
	} else {
		if run.Plan, err = json.Marshal(plan); err != nil {
			return nil, fmt.Errorf("encode plan of run %s: %w", id, err)
		}
		run.StageCount = len(plan.Stages)
		tasks = plan.Tasks
	}
	if _, err := s.sched.CreateRun(ctx, run, tasks); err != nil {
		return nil, err
	}
	if len(run.SetupErrors) > 0 {
		s.setupErrorRun()
	}
	fields := logrus.Fields{"run_id": id, "created_by": o.createdBy, "tasks": len(tasks), "setup_errors": len(run.SetupErrors), "trigger": run.Origin.Trigger.Kind}
	if run.Origin.Pipeline != "" {
		fields["pipeline"], fields["number"] = run.Origin.Pipeline, run.Origin.Number
	}
	s.log.WithFields(fields).Info("run created")
	return s.runView(ctx, run)
}

// planRun loads, validates and expands a submitted config, and adds the
// approval gates. Its error lists what is wrong with the config.
func (s *Service) planRun(ctx context.Context, id, filename string, req *client.RunRequest) (*runPlan, error) {
	cfg, err := pipeline.Parse(filename, []byte(req.Config), pipeline.LoadOptions{ExtStr: req.ExtStr,
		Timeout: s.cfg.JsonnetTimeout, Memory: s.cfg.JsonnetMemory})
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(cfg.Stages) > s.cfg.MaxRunStages {
		return nil, &runTooLarge{fmt.Sprintf("config: %d stages, more than the %d a run may have (--max-run-stages)", len(cfg.Stages), s.cfg.MaxRunStages)}
	}
	for i, st := range cfg.Stages {
		if len(st.Steps) > s.cfg.MaxStageSteps {
			return nil, &runTooLarge{fmt.Sprintf("stages[%d].steps: %d steps, more than the %d a stage may have (--max-stage-steps)", i, len(st.Steps), s.cfg.MaxStageSteps)}
		}
	}
	// The values are read to refuse what cannot be masked; the plan
	// holds the names only.
	secrets := map[string]string{}
	for _, st := range cfg.Stages {
		for _, name := range st.Secrets {
			v, ok, err := s.cfg.Secrets.Secret(ctx, name)
			if err != nil {
				return nil, fmt.Errorf("read secret %s: %w", name, err)
			}
			if ok {
				secrets[name] = v
			}
		}
	}
	if err := checkSecretValues(cfg, secrets); err != nil {
		return nil, err
	}
	var commit string
	if req.Source != nil {
		if commit, err = s.resolveSource(ctx, req, secrets); err != nil {
			return nil, err
		}
	}
	plan, err := pipeline.Expand(cfg, pipeline.ExpandOptions{RunID: id, Branch: req.Branch, Event: req.Event,
		Secrets: secrets, Env: req.Env, Source: req.Source, Commit: commit})
	if err != nil {
		return nil, err
	}
	rp := &runPlan{Plan: *plan}
	if len(rp.Tasks) > s.cfg.MaxRunTasks {
		return nil, &runTooLarge{fmt.Sprintf("config: %d tasks, more than the %d a run may have (--max-run-tasks)", len(rp.Tasks), s.cfg.MaxRunTasks)}
	}
	return rp, nil
}

// runTooLarge says that a config is past a bound of a run: the request
// is refused, no run is made.
type runTooLarge struct{ reason string }

func (e *runTooLarge) Error() string { return e.reason }

// setupErrors lists a config's problems with their paths and lines.
func setupErrors(err error) []store.RunSetupError {
	var fes pipeline.Errors
	if errors.As(err, &fes) {
		out := make([]store.RunSetupError, len(fes))
		for i, fe := range fes {
			out[i] = store.RunSetupError{Path: fe.Path, Line: fe.Line, Message: fe.Message}
		}
		return out
	}
	var fe pipeline.FieldError
	if errors.As(err, &fe) {
		return []store.RunSetupError{{Path: fe.Path, Line: fe.Line, Message: fe.Message}}
	}
	return []store.RunSetupError{{Message: err.Error()}}
}

// Get returns run id with its stages, steps and their tasks.
func (s *Service) Get(ctx context.Context, id string) (*client.Run, error) {
	run, err := s.store.RunGet(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.runView(ctx, run)
}

// List returns a page of runs after the run id after, up to limit,
// without their stages.
func (s *Service) List(ctx context.Context, after string, limit int) (*client.RunList, error) {
	runs, err := s.store.RunList(ctx, store.RunListParams{After: after, Limit: limit, Summary: true})
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	out, err := s.ListItems(ctx, runs)
	if err != nil {
		return nil, err
	}
	if len(runs) == limit {
		out.Next = runs[len(runs)-1].ID
	}
	return out, nil
}

// ListItems returns runs read without their config and plan
// (store.RunListParams.Summary) as a list shows them.
func (s *Service) ListItems(ctx context.Context, runs []*store.Run) (*client.RunList, error) {
	// A finished run never changes: its item is read once.
	items := make([]*client.Run, len(runs))
	var ids []string
	for i, run := range runs {
		if items[i] = s.finishedRuns.get(run.ID); items[i] == nil {
			ids = append(ids, run.ID)
		}
	}
	stats, err := s.store.RunTaskStats(ctx, store.RunTaskStatsParams{RunIDs: ids, TimesIgnoreTypes: []string{TypeApproval}})
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	out := &client.RunList{Kind: client.KindRunList, Items: make([]*client.Run, 0, len(runs))}
	for i, run := range runs {
		item := items[i]
		if item == nil {
			if item, err = s.runListItem(ctx, run, stats[run.ID]); err != nil {
				return nil, err
			}
			if item.Phase == string(pipeline.PhaseFinished) {
				s.finishedRuns.put(item)
			}
		}
		out.Items = append(out.Items, item)
	}
	return out, nil
}

// runListItem is a run as a list shows it: its phase, result, times and
// task counts, without its stages, made from the counts of its tasks by
// state and not from the tasks themselves, so that a page costs one
// grouped query however large its runs.
//
// The counts decide the phase as pipeline.RunStatus does. A finished run
// with no failed, timed out or cancelled task succeeded: only such tasks
// make a stage fail or be cancelled. Any other finished run is read whole
// once (and then kept with its item by listRuns: it can no longer
// change).
func (s *Service) runListItem(ctx context.Context, run *store.Run, st *store.RunTaskStats) (*client.Run, error) {
	out := &client.Run{Kind: client.KindRun, ID: run.ID, Href: Href(run.ID), CreatedAt: run.CreatedAt,
		CreatedBy: run.CreatedBy, Filename: run.Filename, Branch: run.Branch, Event: run.Event,
		CancelledAt: run.CancelledAt, Stages: []*client.RunStage{}}
	originView(out, run.Origin)
	if len(run.SetupErrors) > 0 {
		phase, result := pipeline.SetupError()
		out.Phase, out.Result = string(phase), string(result)
		for _, e := range run.SetupErrors {
			out.SetupErrors = append(out.SetupErrors, client.RunSetupError(e))
		}
		return out, nil
	}
	out.StageCount = run.StageCount
	if st == nil {
		st = &store.RunTaskStats{}
	}
	out.TaskCounts = make(map[string]int, len(st.Tasks))
	started, ended := false, true
	for state, n := range st.Tasks {
		out.TaskCounts[string(state)] = n
		switch state {
		case errand.StatePending, errand.StateWaiting, errand.StateQueued:
			ended = false
		case errand.StateLeased, errand.StateRunning:
			started, ended = true, false
		case errand.StateSucceeded, errand.StateFailed, errand.StateTimedOut:
			started = true
		}
	}
	switch {
	case !ended && started:
		out.Phase, out.Result = string(pipeline.PhaseRunning), string(pipeline.ResultUnknown)
	case !ended:
		out.Phase, out.Result = string(pipeline.PhaseQueued), string(pipeline.ResultUnknown)
	case st.Tasks[errand.StateFailed]+st.Tasks[errand.StateTimedOut]+st.Tasks[errand.StateCancelled] == 0:
		out.Phase, out.Result = string(pipeline.PhaseFinished), string(pipeline.ResultSuccess)
	default:
		whole, err := s.store.RunGet(ctx, run.ID)
		if err != nil {
			return nil, fmt.Errorf("read run %s: %w", run.ID, err)
		}
		view, err := s.runView(ctx, whole)
		if err != nil {
			return nil, err
		}
		out.Phase, out.Result = view.Phase, view.Result
	}
	sp := span{start: st.StartedAt, end: st.FinishedAt}
	out.StartedAt, out.FinishedAt, out.Duration = sp.times(out.Phase == string(pipeline.PhaseFinished), s.now())
	return out, nil
}

// finishedRunItems keeps the list items of finished runs, which never
// change, up to finishedRunCacheSize of them; past that it starts over.
// The zero value is ready. Items are shared: nobody modifies one.
type finishedRunItems struct {
	mu sync.Mutex
	m  map[string]*client.Run
}

func (c *finishedRunItems) get(id string) *client.Run {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[id]
}

func (c *finishedRunItems) put(item *client.Run) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= finishedRunCacheSize {
		c.m = map[string]*client.Run{}
	}
	c.m[item.ID] = item
}

// runState is a run read with its tasks: what its view and its actions
// need.
type runState struct {
	run   *store.Run
	plan  *runPlan
	tasks map[string]*errand.Task
}

// loadRun reads a run's plan and tasks.
func (s *Service) loadRun(ctx context.Context, run *store.Run) (*runState, error) {
	rs := &runState{run: run, tasks: map[string]*errand.Task{}}
	if len(run.SetupErrors) > 0 || len(run.Plan) == 0 {
		return rs, nil
	}
	rs.plan = &runPlan{}
	if err := json.Unmarshal(run.Plan, rs.plan); err != nil {
		return nil, fmt.Errorf("decode plan of run %s: %w", run.ID, err)
	}
	// A restart shows the stages it kept with the tasks of the runs it
	// uses.
	for _, id := range append([]string{run.ID}, run.Origin.UsedRuns()...) {
		if err := s.loadTasks(ctx, id, rs.tasks); err != nil {
			return nil, err
		}
	}
	// Queued tasks say why they may wait for ever (no delegate serves
	// their type or selector); copies carry the reason.
	var queued []*errand.Task
	for id, t := range rs.tasks {
		if t.State == errand.StateQueued {
			c := *t
			rs.tasks[id] = &c
			queued = append(queued, &c)
		}
	}
	s.cfg.ExplainWaiting(ctx, queued)
	for i, ps := range rs.plan.Stages {
		if gid, ok := rs.plan.Gates[ps.Name]; ok && ps.GateID == "" {
			rs.plan.Stages[i].GateID = gid
		}
	}
	return rs, nil
}

// loadTasks reads the tasks of run id into tasks.
func (s *Service) loadTasks(ctx context.Context, id string, tasks map[string]*errand.Task) error {
	after, n := "", 0
	for {
		page, err := s.store.TaskList(ctx, store.TaskListParams{RunID: id, After: after, Limit: 1000})
		if err != nil {
			return fmt.Errorf("tasks of run %s: %w", id, err)
		}
		for _, t := range page {
			tasks[t.ID] = t
		}
		n += len(page)
		if len(page) < 1000 || n >= maxRunTasks {
			return nil
		}
		after = page[len(page)-1].ID
	}
}

func (rs *runState) approvals() map[string]int {
	out := map[string]int{}
	for stage, who := range rs.run.Approvals {
		out[stage] = len(who)
	}
	return out
}

func (rs *runState) stageState(ps pipeline.PlanStage) pipeline.StageState {
	return pipeline.StageStatus(ps, rs.tasks, len(rs.run.Approvals[ps.Name]))
}

// runView builds the API's view of a run.
func (s *Service) runView(ctx context.Context, run *store.Run) (*client.Run, error) {
	rs, err := s.loadRun(ctx, run)
	if err != nil {
		return nil, err
	}
	out := &client.Run{Kind: client.KindRun, ID: run.ID, Href: Href(run.ID), CreatedAt: run.CreatedAt,
		CreatedBy: run.CreatedBy, Filename: run.Filename, Branch: run.Branch, Event: run.Event,
		CancelledAt: run.CancelledAt, Stages: []*client.RunStage{}}
	if rs.plan != nil {
		out.Source, out.Commit = rs.plan.Source, rs.plan.Commit
	}
	originView(out, run.Origin)
	if rs.plan == nil {
		phase, result := pipeline.SetupError()
		out.Phase, out.Result = string(phase), string(result)
		for _, e := range run.SetupErrors {
			out.SetupErrors = append(out.SetupErrors, client.RunSetupError(e))
		}
		return out, nil
	}
	phase, result := pipeline.RunStatus(&rs.plan.Plan, rs.tasks, rs.approvals())
	out.Phase, out.Result = string(phase), string(result)
	out.StageCount = len(rs.plan.Stages)
	now := s.now()
	stageOf := rs.stageOfTask()
	var runSpan span
	for _, ps := range rs.plan.Stages {
		state := rs.stageState(ps)
		st := &client.RunStage{Name: ps.Name, State: string(state), Approval: ps.Approval,
			Approvals: run.Approvals[ps.Name], InitializeTask: ps.InitializeID, CleanupTask: ps.CleanupID,
			Depends: rs.stageDepends(ps, stageOf), Steps: []*client.RunStep{},
			Setup: stageTaskView(ps.InitializeID, rs.tasks[ps.InitializeID]), Cleanup: stageTaskView(ps.CleanupID, rs.tasks[ps.CleanupID])}
		var sp span
		sp.add(rs.tasks[ps.InitializeID])
		sp.add(rs.tasks[ps.CleanupID])
		for _, step := range ps.Steps {
			st.Steps = append(st.Steps, stepView(step, rs.tasks[step.TaskID], now))
			sp.add(rs.tasks[step.TaskID])
		}
		ended := state == pipeline.StageSuccess || state == pipeline.StageFailed || state == pipeline.StageSkipped || state == pipeline.StageCancelled
		st.StartedAt, st.FinishedAt, st.Duration = sp.times(ended, now)
		// A kept stage ran before the run did.
		if st.KeptFrom = rs.plan.Kept[ps.Name]; st.KeptFrom == "" {
			runSpan.merge(sp)
		}
		out.Stages = append(out.Stages, st)
	}
	out.StartedAt, out.FinishedAt, out.Duration = runSpan.times(phase == pipeline.PhaseFinished, now)
	return out, nil
}

// span is the time from the first start to the last end of some tasks.
type span struct{ start, end *time.Time }

func (sp *span) add(t *errand.Task) {
	if t == nil {
		return
	}
	if t.StartedAt != nil && (sp.start == nil || t.StartedAt.Before(*sp.start)) {
		sp.start = t.StartedAt
	}
	if t.FinishedAt != nil && (sp.end == nil || t.FinishedAt.After(*sp.end)) {
		sp.end = t.FinishedAt
	}
}

func (sp *span) merge(o span) {
	sp.add(&errand.Task{StartedAt: o.start, FinishedAt: o.end})
}

// times returns the span's start, its end once ended, and the duration
// between them (up to now while not ended). Nothing before a start.
func (sp span) times(ended bool, now time.Time) (start, end *time.Time, d errand.Duration) {
	if sp.start == nil {
		return nil, nil, 0
	}
	stop := now
	if ended && sp.end != nil {
		end, stop = sp.end, *sp.end
	}
	return sp.start, end, errand.Duration(stop.Sub(*sp.start))
}

// stageOfTask maps the id of every task of the run's stages to its stage.
func (rs *runState) stageOfTask() map[string]string {
	out := map[string]string{}
	for _, ps := range rs.plan.Stages {
		out[ps.InitializeID] = ps.Name
		out[ps.CleanupID] = ps.Name
		for _, step := range ps.Steps {
			out[step.TaskID] = ps.Name
		}
	}
	delete(out, "")
	return out
}

// stageDepends names the stages a stage's initialize task waits for.
func (rs *runState) stageDepends(ps pipeline.PlanStage, stageOf map[string]string) []string {
	// A gate holds the stage's own dependencies.
	first := rs.tasks[ps.InitializeID]
	if ps.GateID != "" {
		first = rs.tasks[ps.GateID]
	}
	if first == nil {
		return nil
	}
	var out []string
	for _, d := range first.DependsOn {
		if name, ok := stageOf[d.Task]; ok && name != ps.Name && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// stageTaskView shows a stage's initialize or cleanup task.
func stageTaskView(id string, t *errand.Task) *client.RunStageTask {
	if id == "" {
		return nil
	}
	v := &client.RunStageTask{State: errand.StatePending, TaskID: id}
	if t != nil {
		v.State, v.Error, v.StartedAt, v.FinishedAt = t.State, t.Error, t.StartedAt, t.FinishedAt
		v.WaitingReason = t.WaitingReason
	}
	return v
}

func stepView(step pipeline.PlanStep, t *errand.Task, now time.Time) *client.RunStep {
	v := &client.RunStep{Name: step.Name, State: errand.StatePending, TaskID: step.TaskID,
		TaskHref: "/api/v1/tasks/" + step.TaskID, Reporter: step.Reporter}
	if t == nil {
		return v
	}
	v.State, v.Error, v.StartedAt, v.FinishedAt = t.State, t.Error, t.StartedAt, t.FinishedAt
	v.WaitingReason = t.WaitingReason
	if t.StartedAt != nil {
		end := now
		if t.FinishedAt != nil {
			end = *t.FinishedAt
		}
		v.Duration = errand.Duration(end.Sub(*t.StartedAt))
	}
	var res struct {
		ExitCode *int `json:"exit_code"`
	}
	if len(t.Result) > 0 && json.Unmarshal(t.Result, &res) == nil {
		v.ExitCode = res.ExitCode
	}
	return v
}

// Cancel cancels a run that has not ended: every task of it that has
// not ended, but its cleanups (see cancelRunTasks).
func (s *Service) Cancel(ctx context.Context, id string) error {
	before, err := s.store.RunGet(ctx, id)
	if err != nil {
		return err
	}
	if view, err := s.runView(ctx, before); err != nil {
		return err
	} else if view.Phase == string(pipeline.PhaseFinished) || view.Phase == string(pipeline.PhaseSetupError) {
		return errand.Errorf(errand.CodeConflict, "run %s has ended (%s, %s): there is nothing to cancel", before.ID, view.Phase, view.Result)
	}
	run, err := s.store.RunCancel(ctx, store.RunCancelParams{RunID: id, Now: s.now()})
	if err != nil {
		return err
	}
	rs, err := s.loadRun(ctx, run)
	if err != nil {
		return err
	}
	if rs.plan != nil {
		if err := s.cancelRunTasks(ctx, rs); err != nil {
			return err
		}
	}
	s.log.WithField("run_id", run.ID).Info("run cancelled")
	return nil
}

// cancelRunTasks cancels every task of a run that has not ended, but its
// cleanups: those run after what they clean up, as always. Later tasks
// go first, so that no stage waiting on an earlier one with on_failure or
// always is released by the cancel.
func (s *Service) cancelRunTasks(ctx context.Context, rs *runState) error {
	for i := len(rs.plan.Tasks) - 1; i >= 0; i-- {
		t := rs.plan.Tasks[i]
		if strings.HasSuffix(t.Type, ".cleanup") {
			continue
		}
		if cur, ok := rs.tasks[t.ID]; ok && cur.State.Terminal() {
			continue
		}
		_, err := s.store.TaskCancel(ctx, store.TaskCancelParams{TaskID: t.ID, Now: s.now()})
		if err != nil && !errors.Is(err, errand.ErrIllegalTransition) {
			return fmt.Errorf("cancel task %s of run %s: %w", t.ID, rs.run.ID, err)
		}
	}
	return nil
}

// Approve records that approver approved stage name of run id, which
// must be waiting for approval; the stage is released once it has as
// many distinct approvers as it needs. An empty approver is
// DefaultApprover. Approving twice as the same approver counts once.
func (s *Service) Approve(ctx context.Context, id, name, approver string) error {
	return s.approve(ctx, id, name, approver, false)
}

// ApproveOnce approves as Approve does, for a user who approves in
// person: approving a stage twice is refused (errand.CodeConflict), so
// that a stage needing N approvals needs N distinct users.
func (s *Service) ApproveOnce(ctx context.Context, id, name, approver string) error {
	return s.approve(ctx, id, name, approver, true)
}

func (s *Service) approve(ctx context.Context, id, name, approver string, once bool) error {
	if approver == "" {
		approver = DefaultApprover
	}
	if len(approver) > store.MaxRunApprover {
		return errand.Errorf(errand.CodeInvalid, "approver: longer than %d characters", store.MaxRunApprover)
	}
	run, err := s.store.RunGet(ctx, id)
	if err != nil {
		return err
	}
	rs, err := s.loadRun(ctx, run)
	if err != nil {
		return err
	}
	if rs.plan == nil {
		return errand.Errorf(errand.CodeNotFound, "run %s has no stage %s: its config did not load", run.ID, name)
	}
	i := slices.IndexFunc(rs.plan.Stages, func(ps pipeline.PlanStage) bool { return ps.Name == name })
	if i < 0 {
		return errand.Errorf(errand.CodeNotFound, "run %s has no stage %s", run.ID, name)
	}
	ps := rs.plan.Stages[i]
	if once && slices.Contains(run.Approvals[name], approver) {
		return errand.Errorf(errand.CodeConflict, "%s has already approved stage %s of run %s; it needs %d distinct approvers, %d so far",
			approver, name, run.ID, ps.Approval, len(run.Approvals[name]))
	}
	gate := rs.tasks[ps.GateID]
	if gate == nil || gate.State != errand.StateWaiting {
		return errand.Errorf(errand.CodeConflict, "stage %s of run %s is %s, not waiting for approval", name, run.ID, rs.stageState(ps))
	}
	n, err := s.store.RunApprove(ctx, store.RunApproveParams{RunID: run.ID, Stage: name, Approver: approver, TaskID: gate.ID, Now: s.now()})
	if err != nil {
		return fmt.Errorf("approve stage %s of run %s: %w", name, run.ID, err)
	}
	log := s.log.WithFields(logrus.Fields{"run_id": run.ID, "stage": name, "approver": approver, "approvals": n, "required": ps.Approval})
	log.Info("stage approved")
	if n >= ps.Approval {
		log.Info("stage released")
	}
	return nil
}

// checkSecretValues refuses secret values that cannot be masked safely:
// a value, or a line of it, shorter than livelog.MinSecretLen bytes. The
// error names each secret, never its value.
func checkSecretValues(cfg *pipeline.Config, values map[string]string) error {
	var errs pipeline.Errors
	for i, st := range cfg.Stages {
		for j, name := range st.Secrets {
			v, ok := values[name]
			if !ok || v == "" {
				continue
			}
			if _, short := livelog.SecretParts(v); short > 0 {
				errs = append(errs, pipeline.FieldError{
					Path:    fmt.Sprintf("stages[%d].secrets[%d]", i, j),
					Message: fmt.Sprintf("secret %s: its value (or a line of it) is shorter than %d bytes and cannot be masked in logs; use a longer value", name, livelog.MinSecretLen),
				})
			}
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}
