package docker

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
)

// DefaultSiblingInterval is how often Siblings looks for resources left by
// lost dynamic delegates of its group.
const DefaultSiblingInterval = 30 * time.Second

// Siblings removes, on a shared Docker host, what dynamic delegates of the
// same group left behind when they vanished: every managed resource
// labelled with the group and with a delegate that the manager reports
// lost and dynamic. A delegate the manager no longer knows at all is gone
// for good, and its resources are removed too.
type Siblings struct {
	// Handlers gives the Docker client and the group.
	Handlers *Handlers
	// Self returns this delegate's id ("" until registered); its own
	// resources are never swept.
	Self func() string
	// Delegates lists the delegates the manager knows.
	Delegates func(ctx context.Context) ([]*errand.Delegate, error)
	// Interval between two sweeps; DefaultSiblingInterval when zero.
	Interval time.Duration
	// Log receives what was removed and what failed.
	Log logrus.FieldLogger
}

// Run sweeps at once and then every Interval until ctx ends. Errors are
// logged and the next sweep tries again; Run returns ctx's error.
func (s *Siblings) Run(ctx context.Context) error {
	interval := s.Interval
	if interval <= 0 {
		interval = DefaultSiblingInterval
	}
	log := s.Log
	if log == nil {
		log = s.Handlers.cfg.Log
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		removed, err := s.Sweep(ctx)
		if err != nil && ctx.Err() == nil {
			log.WithError(err).Warn("sibling cleanup")
		}
		if len(removed) > 0 {
			log.WithField("removed", removed).Info("removed what lost dynamic delegates left behind")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Sweep removes once what lost dynamic delegates of the group left and
// returns what it removed.
func (s *Siblings) Sweep(ctx context.Context) ([]string, error) {
	self := ""
	if s.Self != nil {
		self = s.Self()
	}
	if self == "" {
		return nil, nil // not registered yet: the list cannot be trusted to name us
	}
	h := s.Handlers
	owners, err := h.owners(ctx)
	if err != nil {
		return nil, err
	}
	delete(owners, self)
	delete(owners, "")
	if len(owners) == 0 {
		return nil, nil
	}
	ds, err := s.Delegates(ctx)
	if err != nil {
		return nil, fmt.Errorf("list delegates: %w", err)
	}
	known := make(map[string]*errand.Delegate, len(ds))
	for _, d := range ds {
		known[d.ID] = d
	}
	ids := make([]string, 0, len(owners))
	for id := range owners {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var removed []string
	for _, id := range ids {
		d, ok := known[id]
		if ok && !(d.Dynamic && d.State == errand.DelegateLost) {
			continue
		}
		r, err := h.removeLabelled(ctx, LabelGroup+"="+h.cfg.Group, LabelDelegate+"="+id)
		removed = append(removed, r...)
		if err != nil {
			return removed, fmt.Errorf("remove resources of delegate %s: %w", id, err)
		}
	}
	return removed, nil
}

// owners returns the delegates that own managed resources of the group on
// this Docker host.
func (h *Handlers) owners(ctx context.Context) (map[string]bool, error) {
	f := labelFilter(LabelManaged+"=true", LabelGroup+"="+h.cfg.Group)
	owners := map[string]bool{}
	add := func(labels map[string]string) {
		// The filter on an empty group matches any value; check it.
		if labels[LabelGroup] == h.cfg.Group {
			owners[labels[LabelDelegate]] = true
		}
	}
	actx, cancel := h.api(ctx)
	defer cancel()
	cs, err := h.docker.ContainerList(actx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	for _, c := range cs {
		add(c.Labels)
	}
	ns, err := h.docker.NetworkList(actx, network.ListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	for _, n := range ns {
		add(n.Labels)
	}
	vs, err := h.docker.VolumeList(actx, volume.ListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	for _, v := range vs.Volumes {
		add(v.Labels)
	}
	return owners, nil
}
