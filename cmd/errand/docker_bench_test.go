package main

import (
	"context"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
	"github.com/errandci/errand/pipeline"
)

// benchSteps is the number of `true` steps of the benchmarked stage.
const benchSteps = 20

// BenchmarkDockerStageOverhead runs, in each iteration, a docker stage of
// 20 `true` steps through a manager and a delegate (from the creation of
// its tasks to the end of its last step) and 20 bare `docker run --rm
// IMAGE true` one after the other on the same image. It reports the time
// of each per iteration and their ratio (target: at most 1.1).
func BenchmarkDockerStageOverhead(b *testing.B) {
	img := dockerImage(b)
	group := dockerGroup(b)
	m := testenv.StartManager(b, testenv.Binary(b))
	admin := testenv.Client(b, m.URL, m.AdminToken)
	startDelegate(b, m, "bench-docker", b.TempDir(), "--group", group, "--capacity", "1", "--log-level", "warn")
	waitActive(b, admin, "bench-docker")

	stageCfg := &pipeline.Config{Stages: []*pipeline.Stage{{
		Name:    "bench",
		Runtime: pipeline.Runtime{Type: pipeline.RuntimeDocker, Image: img, Pull: "never"},
	}}}
	for i := range benchSteps {
		stageCfg.Stages[0].Steps = append(stageCfg.Stages[0].Steps, &pipeline.Step{Name: fmt.Sprintf("s%d", i), Commands: []string{"true"}})
	}

	var stage, bare time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		plan := createPlan(b, admin, stageCfg, fmt.Sprintf("bench-%s-%d", group, i))
		st := plan.Stages[0]
		last := pollFast(b, admin, st.Steps[len(st.Steps)-1].TaskID, func(t *client.Task) bool { return t.State.Terminal() })
		stage += time.Since(start)
		if last.State != errand.StateSucceeded {
			b.Fatalf("last step ended %s: %v", last.State, last.Error)
		}
		b.StopTimer()
		if c := pollFast(b, admin, st.CleanupID, func(t *client.Task) bool { return t.State.Terminal() }); c.State != errand.StateSucceeded {
			b.Fatalf("cleanup ended %s: %v", c.State, c.Error)
		}
		b.StartTimer()

		start = time.Now()
		for range benchSteps {
			if out, err := exec.CommandContext(context.Background(), "docker", "run", "--rm", img, "true").CombinedOutput(); err != nil {
				b.Fatalf("docker run: %v\n%s", err, out)
			}
		}
		bare += time.Since(start)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(stage.Milliseconds())/n, "stage-ms/op")
	b.ReportMetric(float64(bare.Milliseconds())/n, "docker-run-ms/op")
	b.ReportMetric(float64(stage)/float64(bare), "ratio")
}
