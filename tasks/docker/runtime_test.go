package docker_test

import (
	"context"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"

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
			ctx := context.Background()
			f := filters.NewArgs(filters.Arg("label", docker.LabelInitialize+"="+init.Task))
			var left []string
			cs, err := dc.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range cs {
				left = append(left, "container "+c.ID[:12])
			}
			ns, err := dc.NetworkList(ctx, network.ListOptions{Filters: f})
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range ns {
				left = append(left, "network "+n.Name)
			}
			vs, err := dc.VolumeList(ctx, volume.ListOptions{Filters: f})
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range vs.Volumes {
				left = append(left, "volume "+v.Name)
			}
			return left
		},
	})
}
