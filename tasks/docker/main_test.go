package docker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	dockerclient "github.com/docker/docker/client"
	"go.uber.org/goleak"

	"github.com/errandci/errand/tasks/docker"
)

// testImage is the local image the tests run; scripts/test builds it.
var testImage = "errand-test/busybox:latest"

// testGroup labels everything this test binary creates, so that the final
// sweep finds exactly that, whatever else runs on the daemon.
var testGroup string

func TestMain(m *testing.M) {
	if v := os.Getenv("ERRAND_TEST_DOCKER_IMAGE"); v != "" {
		testImage = v
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	testGroup = "test-" + hex.EncodeToString(b)
	if err := requireDocker(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if left := leftovers(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "the tests left Docker resources behind: %s\n", strings.Join(left, ", "))
		code = 1
	}
	if err := goleak.Find(); err != nil {
		fmt.Fprintf(os.Stderr, "the tests left goroutines running: %v\n", err)
		code = 1
	}
	os.Exit(code)
}

// requireDocker checks that a daemon answers and the test image is there.
func requireDocker() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := docker.Available(ctx); err != nil {
		return fmt.Errorf("these tests need a Docker daemon: run scripts/test (it installs docker.io and starts dockerd), or start one with `dockerd >/tmp/dockerd.log 2>&1 &`: %w", err)
	}
	c, err := docker.NewClient()
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.ImageInspect(ctx, testImage); err != nil {
		return fmt.Errorf("these tests need the image %s: run scripts/test, or `. scripts/setup.d/docker.sh` to build it: %w", testImage, err)
	}
	return nil
}

// leftovers lists, then removes, what this test binary left on the
// daemon.
func leftovers() []string {
	c, err := docker.NewClient()
	if err != nil {
		return []string{err.Error()}
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := filters.NewArgs(filters.Arg("label", docker.LabelGroup+"="+testGroup))
	var left []string
	cs, _ := c.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	for _, x := range cs {
		left = append(left, "container "+x.ID[:12])
		_ = c.ContainerRemove(ctx, x.ID, container.RemoveOptions{Force: true})
	}
	ns, _ := c.NetworkList(ctx, network.ListOptions{Filters: f})
	for _, x := range ns {
		left = append(left, "network "+x.Name)
		_ = c.NetworkRemove(ctx, x.ID)
	}
	vs, _ := c.VolumeList(ctx, volume.ListOptions{Filters: f})
	for _, x := range vs.Volumes {
		left = append(left, "volume "+x.Name)
		_ = c.VolumeRemove(ctx, x.Name, true)
	}
	return left
}

// dockerClient returns a client closed when the test ends.
func dockerClient(t testing.TB) *dockerclient.Client {
	t.Helper()
	c, err := docker.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
