package docker

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	dockerclient "github.com/docker/docker/client"
)

// Kinds of Resource, in the order they must be removed.
const (
	KindContainer = "container"
	KindNetwork   = "network"
	KindVolume    = "volume"
)

// Resource is a container, network or volume that Errand created: one
// carrying errand.managed=true.
type Resource struct {
	Kind string
	// ID is a container's or network's id, a volume's name.
	ID string
	// Name is what people know it by: a short container id, a network's
	// or a volume's name.
	Name   string
	Labels map[string]string
}

// Managed lists every resource on the daemon that carries
// errand.managed=true: containers first, then networks, then volumes, the
// order in which they can be removed.
func Managed(ctx context.Context, c *dockerclient.Client) ([]Resource, error) {
	f := labelFilter(LabelManaged + "=true")
	var out []Resource
	cs, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, failure("list containers", err)
	}
	for _, x := range cs {
		out = append(out, Resource{Kind: KindContainer, ID: x.ID, Name: shortID(x.ID), Labels: x.Labels})
	}
	ns, err := c.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		return nil, failure("list networks", err)
	}
	for _, x := range ns {
		out = append(out, Resource{Kind: KindNetwork, ID: x.ID, Name: x.Name, Labels: x.Labels})
	}
	vs, err := c.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		return nil, failure("list volumes", err)
	}
	for _, x := range vs.Volumes {
		out = append(out, Resource{Kind: KindVolume, ID: x.Name, Name: x.Name, Labels: x.Labels})
	}
	rank := map[string]int{KindContainer: 0, KindNetwork: 1, KindVolume: 2}
	sort.SliceStable(out, func(i, j int) bool { return rank[out[i].Kind] < rank[out[j].Kind] })
	return out, nil
}

// Remove removes r (a running container is killed); one already gone is
// not an error.
func Remove(ctx context.Context, c *dockerclient.Client, r Resource) error {
	var err error
	switch r.Kind {
	case KindContainer:
		err = c.ContainerRemove(ctx, r.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && strings.Contains(err.Error(), "already in progress") {
			err = nil
		}
	case KindNetwork:
		err = c.NetworkRemove(ctx, r.ID)
	case KindVolume:
		err = c.VolumeRemove(ctx, r.ID, true)
	default:
		return fmt.Errorf("remove %s %s: unknown kind", r.Kind, r.Name)
	}
	if err != nil && !dockerclient.IsErrNotFound(err) {
		return fmt.Errorf("remove %s %s: %w", r.Kind, r.Name, err)
	}
	return nil
}
