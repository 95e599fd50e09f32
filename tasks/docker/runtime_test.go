package docker_test

import (
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/tasks"
	"github.com/errandci/errand/tasks/docker"
	"github.com/errandci/errand/tasks/runtime"
	"github.com/errandci/errand/tasks/runtime/runtimetest"
)

// The Docker runtime passes the runtime conformance suite.
func TestRuntime(t *testing.T) {
	dc := dockerClient(t)
	runtimetest.Run(t, runtimetest.Runtime{
		New: func(t *testing.T) *runtime.Handlers {
			h, err := docker.New(docker.Config{Group: testGroup, StopGrace: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { h.Close() })
			return h.Runtime()
		},
		Stage:     stageData,
		Workspace: func(tasks.InitializeResult) string { return docker.Workspace },
		Remains: func(t *testing.T, init errand.DependencyResult) []string {
			cs, ns, vs := labelled(t, dc, docker.LabelInitialize+"="+init.Task)
			return append(append(cs, ns...), vs...)
		},
	})
}
