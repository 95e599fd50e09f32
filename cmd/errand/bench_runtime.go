package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/pipeline"
	"github.com/errandci/errand/tasks"
)

// waitTask polls a task every millisecond until it has ended.
func waitTask(ctx context.Context, c client.UserClient, id string, within time.Duration) (*client.Task, error) {
	deadline := time.Now().Add(within)
	for {
		t, err := c.GetTask(ctx, id)
		if err == nil && t.State.Terminal() {
			return t, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("task %s has not ended after %s", id, within)
		}
		if err := sleepCtx(ctx, time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// dockerBench is `errand bench docker`.
type dockerBench struct {
	*benchOpts
	image string
	steps int
}

func addDockerBench(cmd *kingpin.CmdClause, g *globals) {
	c := cmd.Command("docker", "Run a Docker stage of `true` steps through a manager and a real `errand delegate`, "+
		"and as many bare `docker run --rm IMAGE true`; report both and their ratio. -n counts stages.")
	b := &dockerBench{benchOpts: newBenchOpts(c, "docker", benchDefaults{count: 3, duration: time.Minute, noStore: true})}
	c.Flag("image", "Image of the steps; it must be there already (the stage does not pull).").Envar("ERRAND_BENCH_IMAGE").
		Default("busybox:latest").StringVar(&b.image)
	c.Flag("steps", "Steps of the stage.").Envar("ERRAND_BENCH_STEPS").Default("20").IntVar(&b.steps)
	c.Action(b.action(g, func() error {
		if b.steps < 1 {
			return usageErrorf("--steps must be positive")
		}
		return nil
	}, func(ctx context.Context, out *benchOut) ([]benchValue, error) { return b.run(ctx, out, g) }))
}

func (b *dockerBench) run(ctx context.Context, out *benchOut, g *globals) ([]benchValue, error) {
	if out, err := exec.CommandContext(ctx, "docker", "image", "inspect", b.image).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("the image %s is needed (docker pull it, or name another with --image): %v: %s", b.image, err, out)
	}
	env, err := b.startEnv(ctx, g.Stderr)
	if err != nil {
		return nil, err
	}
	defer env.close()
	group := "bench-" + randomHex(4)
	d, err := env.startDelegateProc(ctx, 0, group, "--group", group, "--capacity", "1")
	if err != nil {
		return nil, err
	}
	defer d.stop()
	if err := env.waitDelegate(ctx, group); err != nil {
		return nil, err
	}
	cfg := &pipeline.Config{Stages: []*pipeline.Stage{{
		Name:     "bench",
		Runtime:  pipeline.Runtime{Type: pipeline.RuntimeDocker, Image: b.image, Pull: "never"},
		Selector: errand.Selector{Group: group},
	}}}
	for i := range b.steps {
		cfg.Stages[0].Steps = append(cfg.Stages[0].Steps, &pipeline.Step{Name: fmt.Sprintf("s%d", i), Commands: []string{"true"}})
	}
	user := env.user(0)
	var stage, bare time.Duration
	n := 0
	t0 := time.Now()
	stop := out.progress(b.interval, func() []benchValue { return []benchValue{num("elapsed_s", time.Since(t0).Seconds(), 1)} })
	defer stop()
	for b.count > 0 && n < b.count || b.count == 0 && time.Since(t0) < b.duration {
		start := time.Now()
		plan, err := createStagePlan(ctx, user, cfg, fmt.Sprintf("%s-%d", group, n))
		if err != nil {
			return nil, err
		}
		st := plan.Stages[0]
		last, err := waitTask(ctx, user, st.Steps[len(st.Steps)-1].TaskID, 10*time.Minute)
		if err != nil {
			return nil, err
		}
		took := time.Since(start)
		if last.State != errand.StateSucceeded {
			return nil, fmt.Errorf("the last step ended %s: %v", last.State, last.Error)
		}
		if c, err := waitTask(ctx, user, st.CleanupID, 5*time.Minute); err != nil || c.State != errand.StateSucceeded {
			return nil, fmt.Errorf("the stage's cleanup: %v %v", c, err)
		}
		start = time.Now()
		for range b.steps {
			if o, err := exec.CommandContext(ctx, "docker", "run", "--rm", b.image, "true").CombinedOutput(); err != nil {
				return nil, fmt.Errorf("docker run: %v: %s", err, o)
			}
		}
		bare += time.Since(start)
		stage += took
		n++
		out.line("stage", num("stage", float64(n), 0), ms("stage_ms", took), ms("docker_run_ms", bare/time.Duration(n)))
	}
	stop()
	return []benchValue{num("stages", float64(n), 0), num("steps", float64(b.steps), 0),
		ms("stage_ms", stage/time.Duration(n)), ms("docker_run_ms", bare/time.Duration(n)),
		ms("step_overhead_ms", (stage-bare)/time.Duration(n*b.steps)), num("ratio", float64(stage)/float64(bare), 3)}, nil
}

// createStagePlan expands cfg and creates its tasks, as a run does.
func createStagePlan(ctx context.Context, user client.UserClient, cfg *pipeline.Config, runID string) (*pipeline.Plan, error) {
	plan, err := pipeline.Expand(cfg, pipeline.ExpandOptions{RunID: runID})
	if err != nil {
		return nil, fmt.Errorf("expand: %w", err)
	}
	specs := make([]*client.TaskSpec, 0, len(plan.Tasks))
	for _, x := range plan.Tasks {
		specs = append(specs, &client.TaskSpec{ID: x.ID, Type: x.Type, Data: x.Data, Selector: x.Selector,
			DependsOn: x.DependsOn, Affinity: x.Affinity, Priority: x.Priority, Timeout: x.Timeout, MaxAttempts: x.MaxAttempts})
	}
	if _, err := user.CreateTasks(ctx, specs); err != nil {
		return nil, fmt.Errorf("create the tasks of %s: %w", runID, err)
	}
	return plan, nil
}

// stepBench is `errand bench step`.
type stepBench struct{ *benchOpts }

func addStepBench(cmd *kingpin.CmdClause, g *globals) {
	c := cmd.Command("step", "Run host steps of `true` through a manager and a real `errand delegate`, one after the other, "+
		"against `sh -c true` run directly; report the time each adds (p50). -n counts steps.")
	b := &stepBench{newBenchOpts(c, "step", benchDefaults{count: 100, duration: 30 * time.Second, noStore: true})}
	c.Action(b.action(g, nil, func(ctx context.Context, out *benchOut) ([]benchValue, error) { return b.run(ctx, out, g) }))
}

func (b *stepBench) run(ctx context.Context, out *benchOut, g *globals) ([]benchValue, error) {
	env, err := b.startEnv(ctx, g.Stderr)
	if err != nil {
		return nil, err
	}
	defer env.close()
	name := "bench-" + randomHex(4)
	d, err := env.startDelegateProc(ctx, 0, name, "--group", name, "--capacity", "4")
	if err != nil {
		return nil, err
	}
	defer d.stop()
	if err := env.waitDelegate(ctx, name); err != nil {
		return nil, err
	}
	user := env.user(0)
	stage := tasks.Stage{RunID: name, Stage: "s"}
	data := func(v any) json.RawMessage {
		b, _ := json.Marshal(v)
		return b
	}
	sel := errand.Selector{Group: name}
	created, err := user.CreateTasks(ctx, []*client.TaskSpec{{Type: errand.TypeExecInitialize, Data: data(tasks.InitializeData{Stage: stage}), Selector: sel}})
	if err != nil {
		return nil, err
	}
	initID := created[0].ID
	if t, err := waitTask(ctx, user, initID, time.Minute); err != nil || t.State != errand.StateSucceeded {
		return nil, fmt.Errorf("the stage's initialize: %v %v", t, err)
	}
	var step, direct []time.Duration
	t0 := time.Now()
	stop := out.progress(b.interval, func() []benchValue {
		return []benchValue{num("elapsed_s", time.Since(t0).Seconds(), 1), num("steps", float64(len(step)), 0)}
	})
	defer stop()
	for b.count > 0 && len(step) < b.count || b.count == 0 && time.Since(t0) < b.duration {
		start := time.Now()
		c, err := user.CreateTasks(ctx, []*client.TaskSpec{{Type: errand.TypeExecExecute, Selector: sel, Affinity: initID,
			Data:      data(tasks.ExecuteData{Stage: stage, Step: "x", Commands: []string{"true"}}),
			DependsOn: []errand.Dependency{{Task: initID}}}})
		if err != nil {
			return nil, err
		}
		t, err := waitTask(ctx, user, c[0].ID, time.Minute)
		if err != nil {
			return nil, err
		}
		step = append(step, time.Since(start))
		if t.State != errand.StateSucceeded {
			return nil, fmt.Errorf("a step ended %s: %v", t.State, t.Error)
		}
		start = time.Now()
		if err := exec.CommandContext(ctx, "sh", "-c", "true").Run(); err != nil {
			return nil, err
		}
		direct = append(direct, time.Since(start))
	}
	stop()
	s, dd := percentileOf(step, 0.5), percentileOf(direct, 0.5)
	return []benchValue{num("steps", float64(len(step)), 0), ms("step_p50_ms", s), ms("sh_p50_ms", dd), ms("added_p50_ms", s-dd),
		ms("step_p99_ms", percentileOf(step, 0.99))}, nil
}
