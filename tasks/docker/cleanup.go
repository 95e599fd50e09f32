package docker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	dockerclient "github.com/docker/docker/client"

	"github.com/errandci/errand/tasks"
	"github.com/errandci/errand/tasks/runtime"
)

// Cleanup removes the stage's containers, network and volume: everything
// labelled with the stage's initialize task, whether initialize succeeded,
// failed half-way, or ran on this delegate before it restarted.
func (d driver) Cleanup(ctx context.Context, s *runtime.Cleanup) (*tasks.CleanupResult, error) {
	h := d.h
	// Steps of the stage that ran here may still be being removed.
	h.removals.Wait()
	removed, err := h.removeLabelled(ctx, LabelInitialize+"="+s.Init.Task)
	for _, name := range removed {
		fmt.Fprintf(s.Log, "removed %s\n", name)
	}
	if err != nil {
		return nil, failure("cleanup", err)
	}
	return &tasks.CleanupResult{Removed: removed}, nil
}

// removeLabelled removes the containers, then the networks and volumes,
// that carry every one of the labels (key=value) and errand.managed=true.
// It returns what it removed as "container ID", "network NAME", "volume
// NAME"; objects already gone are not errors.
func (h *Handlers) removeLabelled(ctx context.Context, labels ...string) ([]string, error) {
	return h.removeWhere(ctx, func(map[string]string) bool { return true }, labels...)
}

// removeWhere is removeLabelled of the objects whose labels also satisfy
// match.
func (h *Handlers) removeWhere(ctx context.Context, match func(map[string]string) bool, labels ...string) ([]string, error) {
	f := labelFilter(append([]string{LabelManaged + "=true"}, labels...)...)
	var removed []string
	var errs []error
	gone := func(kind, name string, err error) {
		if err == nil || dockerclient.IsErrNotFound(err) {
			removed = append(removed, kind+" "+name)
			return
		}
		errs = append(errs, fmt.Errorf("remove %s %s: %w", kind, name, err))
	}

	actx, cancel := h.api(ctx)
	cs, err := h.docker.ContainerList(actx, container.ListOptions{All: true, Filters: f})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	for _, c := range cs {
		if !match(c.Labels) {
			continue
		}
		actx, cancel := h.api(ctx)
		err := h.docker.ContainerRemove(actx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && strings.Contains(err.Error(), "already in progress") {
			err = h.waitGone(actx, c.ID)
		}
		cancel()
		gone("container", shortID(c.ID), err)
	}

	actx, cancel = h.api(ctx)
	ns, err := h.docker.NetworkList(actx, network.ListOptions{Filters: f})
	cancel()
	if err != nil {
		errs = append(errs, fmt.Errorf("list networks: %w", err))
	}
	for _, n := range ns {
		if !match(n.Labels) {
			continue
		}
		actx, cancel := h.api(ctx)
		err := h.docker.NetworkRemove(actx, n.ID)
		cancel()
		gone("network", n.Name, err)
	}

	actx, cancel = h.api(ctx)
	vs, err := h.docker.VolumeList(actx, volume.ListOptions{Filters: f})
	cancel()
	if err != nil {
		errs = append(errs, fmt.Errorf("list volumes: %w", err))
	}
	for _, v := range vs.Volumes {
		if !match(v.Labels) {
			continue
		}
		actx, cancel := h.api(ctx)
		err := h.docker.VolumeRemove(actx, v.Name, true)
		cancel()
		gone("volume", v.Name, err)
	}
	return removed, errors.Join(errs...)
}

// waitGone waits until a container whose removal is under way is gone.
func (h *Handlers) waitGone(ctx context.Context, id string) error {
	for {
		_, err := h.docker.ContainerInspect(ctx, id)
		if dockerclient.IsErrNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the removal of container %s: %w", shortID(id), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
