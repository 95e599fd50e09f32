package pipeline

import (
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/oklog/ulid/v2"

	"github.com/errandci/errand"
	"github.com/errandci/errand/tasks"
)

// ExpandOptions describe the run a config is expanded for.
type ExpandOptions struct {
	RunID string
	// Branch and Event are matched against each stage's when.
	Branch string
	Event  string
	// Secrets holds the secrets available to the run, by name. A stage
	// that runs and names a secret missing here makes Expand fail. Only
	// the names are read: the plan names its secrets
	// (errand.SecretNamesField) and holds no value; the manager puts the
	// values into a task when it is leased.
	Secrets map[string]string
	// Env is environment given to every step, under the stage's and the
	// step's own.
	Env map[string]string
	// Source, when set, is what every stage's workspace starts as: a
	// checkout of Commit, a full commit id, which is then required (the
	// manager resolves a ref to it before it expands the run). Its
	// credentials name a secret that Secrets must hold.
	Source *errand.Source
	Commit string
	// NewID returns a new task id; a ULID when nil.
	NewID func() string
}

// executeData is the stored data of an execute task: the step, and the
// names of its secrets in place of their values.
type executeData struct {
	tasks.ExecuteData
	SecretNames []string `json:"secret_names,omitempty"`
}

// Plan is a run's graph of tasks and where each stage's tasks are in it.
type Plan struct {
	RunID string `json:"run_id,omitempty"`
	// Tasks are ready for store.TaskCreate, stage by stage, each stage's
	// initialize first and cleanup last.
	Tasks  []*errand.Task `json:"tasks"`
	Stages []PlanStage    `json:"stages"`
	// Source and Commit are the run's Git source and the commit every
	// stage checks out; empty for a run without a source.
	Source *errand.Source `json:"source,omitempty"`
	Commit string         `json:"commit,omitempty"`
}

// PlanStage names the tasks of one stage. A skipped stage has none.
type PlanStage struct {
	Name         string `json:"name"`
	InitializeID string `json:"initialize_id,omitempty"`
	// Steps are in the order they run.
	Steps []PlanStep `json:"steps,omitempty"`
	// StepIDs maps each step's name to its task id.
	StepIDs   map[string]string `json:"step_ids,omitempty"`
	CleanupID string            `json:"cleanup_id,omitempty"`
	// Approval is the number of distinct approvers the stage waits for
	// before its initialize task may be queued; 0 for none.
	Approval int `json:"approval,omitempty"`
	// GateID is the stage's approval gate (a stage with Approval that
	// runs): the task its initialize task depends on, which takes the
	// stage's dependencies and waits for the approvals.
	GateID string `json:"gate_id,omitempty"`
	// Skipped is set for a stage whose when does not match the run, or
	// that depends on such a stage with a condition a skipped stage does
	// not meet. It has no tasks, and its status is skipped.
	Skipped bool `json:"skipped,omitempty"`
}

// PlanStep is one step of a PlanStage.
type PlanStep struct {
	Name   string `json:"name"`
	TaskID string `json:"task_id"`
	// Reporter is set for a step that also runs after a failure
	// (when.status includes failure): it does not decide its stage's
	// outcome.
	Reporter bool `json:"reporter,omitempty"`
}

// taskIDs returns every task id of the stage, in graph order.
func (ps PlanStage) taskIDs() []string {
	if ps.Skipped {
		return nil
	}
	ids := []string{ps.InitializeID}
	for _, s := range ps.Steps {
		ids = append(ids, s.TaskID)
	}
	return append(ids, ps.CleanupID)
}

// Expand turns a valid config into the tasks of one run.
//
// Each stage becomes one <runtime>.initialize task (exec for host, docker
// for docker), one <runtime>.execute task per step, in order, and one
// <runtime>.cleanup task. Execute and cleanup tasks have the initialize
// task as affinity, so one delegate runs the whole stage. Within a stage:
//
//   - every step depends on the initialize task (on_success);
//   - an ordinary step (no when, or when.status [success]) depends on every
//     earlier ordinary step with on_success, and waits for earlier
//     reporter steps with always: after a failure the later ordinary
//     steps are skipped, even when a reporter ran in between;
//   - a reporter step (when.status includes failure) waits for every
//     earlier step with always; one with status [failure] alone runs only
//     when an earlier ordinary step failed (its last earlier ordinary step
//     failed or was skipped, and none was cancelled);
//   - cleanup waits for every step with always, and for initialize with
//     on_success|on_failure: it runs whenever initialize ran, and is
//     skipped with a stage that never started.
//
// A stage's outcome is decided by its initialize task and its ordinary
// steps: it succeeded when they all succeeded, failed when initialize or
// one of them failed or timed out (the later ones are then skipped), and
// was skipped when initialize was skipped. Reporter steps and cleanup show
// their own state but change no outcome. A stage's depends become
// dependencies of its initialize task on the tasks that decide the other
// stage's outcome, with the conditions (see errand.AnyOf) that hold
// exactly when that outcome meets one of the depend's conditions; always
// waits for every task of the other stage, cleanup included.
func Expand(cfg *Config, opts ExpandOptions) (*Plan, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	newID := opts.NewID
	if newID == nil {
		newID = func() string { return ulid.Make().String() }
	}
	index := map[string]int{}
	for i, s := range cfg.Stages {
		index[s.Name] = i
	}
	skipped := staticSkips(cfg, index, opts)
	if err := checkSecrets(cfg, skipped, opts.Secrets); err != nil {
		return nil, err
	}
	if err := checkSource(opts); err != nil {
		return nil, err
	}

	plan := &Plan{RunID: opts.RunID, Stages: make([]PlanStage, len(cfg.Stages)), Source: opts.Source}
	if opts.Source != nil {
		plan.Commit = opts.Commit
	}
	for i, s := range cfg.Stages {
		ps := PlanStage{Name: s.Name, Skipped: skipped[i]}
		if s.Approval != nil {
			ps.Approval = s.Approval.Approvers
		}
		if !ps.Skipped {
			ps.InitializeID = newID()
			ps.StepIDs = map[string]string{}
			for _, st := range s.Steps {
				id := newID()
				ps.Steps = append(ps.Steps, PlanStep{Name: st.Name, TaskID: id, Reporter: st.reporter()})
				ps.StepIDs[st.Name] = id
			}
			ps.CleanupID = newID()
			if ps.Approval > 0 {
				ps.GateID = newID()
			}
		}
		plan.Stages[i] = ps
	}
	for i, s := range cfg.Stages {
		if skipped[i] {
			continue
		}
		ts, err := stageTasks(s, plan.Stages[i], opts)
		if err != nil {
			return nil, err
		}
		for _, d := range s.Depends {
			j := index[d.Stage]
			if skipped[j] {
				continue // met: staticSkips skipped this stage otherwise
			}
			ts[0].DependsOn = append(ts[0].DependsOn, outcomeDeps(plan.Stages[j], d.conditions())...)
		}
		ts[0].DependsOn = artifactDeps(ts[0].DependsOn, s, plan, index, skipped)
		if ps := plan.Stages[i]; ps.GateID != "" {
			ts = append([]*errand.Task{gateTask(ps, ts[0], opts.RunID)}, ts...)
		}
		plan.Tasks = append(plan.Tasks, ts...)
	}
	return plan, nil
}

// TypeApproval is the task type of a stage's approval gate.
const TypeApproval = "errand.approval"

// gateTask returns the approval gate of a stage that needs approvals: a
// task no delegate runs (errand.Task.Approvals), which takes the stage's
// own dependencies and which the stage's initialize task init then
// depends on. It waits once those dependencies are met, and succeeds with
// its last approval.
func gateTask(ps PlanStage, init *errand.Task, runID string) *errand.Task {
	gate := &errand.Task{
		ID:          ps.GateID,
		Type:        TypeApproval,
		Data:        json.RawMessage(fmt.Sprintf(`{"stage":%q,"approvers":%d}`, ps.Name, ps.Approval)),
		DependsOn:   init.DependsOn,
		MaxAttempts: 1,
		RunID:       runID,
		Approvals:   ps.Approval,
	}
	init.DependsOn = []errand.Dependency{{Task: gate.ID, Condition: errand.OnSuccess}}
	return gate
}

// staticSkips decides which stages are skipped before anything runs: those
// whose when does not match, then those depending on a skipped stage with
// no condition that a skipped stage meets.
func staticSkips(cfg *Config, index map[string]int, opts ExpandOptions) []bool {
	skipped := make([]bool, len(cfg.Stages))
	for i, s := range cfg.Stages {
		skipped[i] = !s.When.matches(opts.Branch, opts.Event)
	}
	for _, i := range topoOrder(cfg.Stages, index) {
		if skipped[i] {
			continue
		}
		for _, d := range cfg.Stages[i].Depends {
			if j := index[d.Stage]; skipped[j] && !metBySkipped(d.conditions()) {
				skipped[i] = true
			}
		}
	}
	return skipped
}

func metBySkipped(conds []errand.Condition) bool {
	for _, c := range conds {
		if c.Met(errand.StateSkipped) {
			return true
		}
	}
	return false
}

// matches reports whether a run on branch for event passes w.
func (w *When) matches(branch, event string) bool {
	if w == nil {
		return true
	}
	if len(w.Branch) > 0 && !slices.ContainsFunc(w.Branch, func(p string) bool {
		ok, _ := path.Match(p, branch)
		return branch != "" && ok
	}) {
		return false
	}
	if len(w.Event) > 0 && !slices.Contains(w.Event, event) {
		return false
	}
	return true
}

// topoOrder returns stage indexes with every stage after those it depends
// on. The config is valid: there is no cycle.
func topoOrder(stages []*Stage, index map[string]int) []int {
	var order []int
	seen := make([]bool, len(stages))
	var visit func(i int)
	visit = func(i int) {
		if seen[i] {
			return
		}
		seen[i] = true
		for _, d := range stages[i].Depends {
			visit(index[d.Stage])
		}
		order = append(order, i)
	}
	for i := range stages {
		visit(i)
	}
	return order
}

func checkSecrets(cfg *Config, skipped []bool, values map[string]string) error {
	missing := map[string]bool{}
	for i, s := range cfg.Stages {
		if skipped[i] {
			continue
		}
		for _, name := range s.Secrets {
			if _, ok := values[name]; !ok {
				missing[name] = true
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return errand.Errorf(errand.CodeInvalid, "missing secrets: %s", strings.Join(sortedKeys(missing), ", "))
}

// Outcome bits: the states of one task that a stage dependency accepts.
const (
	bitSuccess = 1 << iota // succeeded
	bitFailure             // failed or timed out
	bitSkipped             // skipped
	bitAlways              // any end
)

func conditionOf(bits int) errand.Condition {
	if bits&bitAlways != 0 {
		return errand.Always
	}
	var cs []errand.Condition
	for _, b := range []struct {
		bit  int
		cond errand.Condition
	}{{bitSuccess, errand.OnSuccess}, {bitFailure, errand.OnFailure}, {bitSkipped, errand.OnSkipped}} {
		if bits&b.bit != 0 {
			cs = append(cs, b.cond)
		}
	}
	return errand.AnyOf(cs...)
}

// outcomeDeps returns the dependencies that hold exactly when the outcome
// of stage ps meets one of conds. Each condition is a set of accepted
// states per deciding task; their union per task is exact because the
// ordinary steps form a chain (a step runs only if all before it
// succeeded).
func outcomeDeps(ps PlanStage, conds []errand.Condition) []errand.Dependency {
	deciding := []string{ps.InitializeID}
	for _, s := range ps.Steps {
		if !s.Reporter {
			deciding = append(deciding, s.TaskID)
		}
	}
	last := len(deciding) - 1
	bits := map[string]int{}
	for _, c := range conds {
		switch c {
		case errand.OnSuccess, "":
			for _, id := range deciding {
				bits[id] |= bitSuccess
			}
		case errand.OnFailure:
			if last == 0 {
				bits[deciding[0]] |= bitFailure
				break
			}
			bits[deciding[0]] |= bitSuccess | bitFailure
			for _, id := range deciding[1:last] {
				bits[id] |= bitSuccess | bitFailure | bitSkipped
			}
			bits[deciding[last]] |= bitFailure | bitSkipped
		case errand.OnSkipped:
			for _, id := range deciding {
				bits[id] |= bitSkipped
			}
		case errand.Always:
			for _, id := range ps.taskIDs() {
				bits[id] |= bitAlways
			}
		}
	}
	var deps []errand.Dependency
	for _, id := range ps.taskIDs() {
		if b, ok := bits[id]; ok {
			deps = append(deps, errand.Dependency{Task: id, Condition: conditionOf(b)})
		}
	}
	return deps
}

// stageTasks builds the tasks of one stage that runs, initialize first.
func stageTasks(s *Stage, ps PlanStage, opts ExpandOptions) ([]*errand.Task, error) {
	prefix := "exec"
	if s.runtimeType() == RuntimeDocker {
		prefix = "docker"
	}
	stage := tasks.Stage{RunID: opts.RunID, Stage: s.Name}
	mem, _ := parseSize(s.Resources.Memory) // validated
	res := tasks.Resources{MemoryBytes: mem, CPUs: s.Resources.CPUs}
	newTask := func(id, kind string, data any, timeout errand.Duration, attempts int) (*errand.Task, error) {
		b, err := json.Marshal(data)
		if err != nil {
			return nil, fmt.Errorf("stage %s: %s data: %w", s.Name, kind, err)
		}
		t := &errand.Task{
			ID:          id,
			Type:        prefix + "." + kind,
			Data:        b,
			Selector:    s.Selector,
			Timeout:     timeout,
			MaxAttempts: attempts,
			RunID:       opts.RunID,
		}
		t.Selector.Labels = maps.Clone(s.Selector.Labels)
		if id != ps.InitializeID {
			t.Affinity = ps.InitializeID
		}
		return t, nil
	}

	init := initializeData{InitializeData: tasks.InitializeData{Stage: stage, Image: s.Runtime.Image, Pull: s.Runtime.Pull,
		Privileged: s.Privileged, Resources: res, NeedsArtifacts: slices.Clone(s.NeedsArtifacts), Checkout: checkoutOf(opts)}}
	if c := init.Checkout; c != nil && c.Credentials != "" {
		init.SecretNames = []string{c.Credentials}
	}
	if s.runtimeType() == RuntimeDocker && init.Pull == "" {
		init.Pull = PullIfNotPresent
	}
	for _, svc := range s.Runtime.Services {
		init.Services = append(init.Services, tasks.Service(svc))
	}
	it, err := newTask(ps.InitializeID, "initialize", init, s.Timeout, errand.DefaultMaxAttempts)
	if err != nil {
		return nil, err
	}
	out := []*errand.Task{it}

	var cleanupDeps []errand.Dependency
	for k, st := range s.Steps {
		data := executeData{ExecuteData: tasks.ExecuteData{
			Stage: stage, Step: st.Name, Image: st.Image, Commands: st.Commands, Shell: st.Shell,
			Environment: stepEnv(s, st, opts), WorkingDir: st.WorkingDir,
			Privileged: s.Privileged, Resources: res, Artifacts: st.Artifacts,
		}, SecretNames: slices.Clone(s.Secrets)}
		timeout := st.Timeout
		if timeout == 0 {
			timeout = s.Timeout
		}
		// A step is not retried blindly: it may have had effects.
		et, err := newTask(ps.Steps[k].TaskID, "execute", data, timeout, 1)
		if err != nil {
			return nil, err
		}
		et.DependsOn = stepDeps(s.Steps, ps, k)
		out = append(out, et)
		cleanupDeps = append(cleanupDeps, errand.Dependency{Task: et.ID, Condition: errand.Always})
	}
	ct, err := newTask(ps.CleanupID, "cleanup", tasks.CleanupData{Stage: stage, Artifacts: s.Artifacts}, s.Timeout, errand.DefaultMaxAttempts)
	if err != nil {
		return nil, err
	}
	ct.DependsOn = append([]errand.Dependency{{Task: ps.InitializeID, Condition: errand.AnyOf(errand.OnSuccess, errand.OnFailure)}}, cleanupDeps...)
	return append(out, ct), nil
}

// stepDeps returns the dependencies of step k (see Expand).
func stepDeps(steps []*Step, ps PlanStage, k int) []errand.Dependency {
	deps := []errand.Dependency{{Task: ps.InitializeID, Condition: errand.OnSuccess}}
	st := steps[k]
	lastOrdinary := -1
	for j := range k {
		if !steps[j].reporter() {
			lastOrdinary = j
		}
	}
	failureOnly := st.runsOn(StatusFailure) && !st.runsOn(StatusSuccess)
	for j := range k {
		cond := errand.Always
		switch {
		case steps[j].reporter():
		case !st.reporter():
			cond = errand.OnSuccess
		case failureOnly && j == lastOrdinary:
			cond = errand.AnyOf(errand.OnFailure, errand.OnSkipped)
		case failureOnly:
			cond = errand.AnyOf(errand.OnSuccess, errand.OnFailure, errand.OnSkipped)
		}
		deps = append(deps, errand.Dependency{Task: ps.Steps[j].TaskID, Condition: cond})
	}
	return deps
}

// stepEnv merges a step's environment: the run's, then the stage's, then
// the step's own, then Errand's variables naming where it runs.
func stepEnv(s *Stage, st *Step, opts ExpandOptions) map[string]string {
	env := map[string]string{}
	maps.Copy(env, opts.Env)
	maps.Copy(env, s.Environment)
	maps.Copy(env, st.Environment)
	env["ERRAND_STAGE"] = s.Name
	env["ERRAND_STEP"] = st.Name
	for k, v := range map[string]string{"ERRAND_RUN_ID": opts.RunID, "ERRAND_BRANCH": opts.Branch, "ERRAND_EVENT": opts.Event, "ERRAND_COMMIT": commitOf(opts)} {
		if v != "" {
			env[k] = v
		}
	}
	return env
}
