package docker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
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
// same group and the same manager left behind when they vanished. A
// resource is removed only when every one of these holds:
//
//   - it carries errand.managed=true, this delegate's group and this
//     delegate's manager (errand.manager), and no errand.local label (so
//     errand run's resources are never touched);
//   - the manager lists its owner (errand.delegate) as a delegate of the
//     group that is dynamic and lost.
//
// An owner the manager does not know, a static or live delegate, another
// manager's delegate and a resource of an older version with no manager
// label are left alone (errand prune removes what is over).
type Siblings struct {
	// Handlers gives the Docker client, the group and the manager's
	// identity (Config.ManagerID): without one nothing is removed.
	Handlers *Handlers
	// Self returns this delegate's id ("" until registered); its own
	// resources are never swept.
	Self func() string
	// Delegates lists the delegates of the group that the manager knows.
	Delegates func(ctx context.Context) ([]*errand.Delegate, error)
	// Interval between two sweeps; DefaultSiblingInterval when zero.
	Interval time.Duration
	// Log receives what was removed and what failed.
	Log logrus.FieldLogger

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// Start sweeps at once and then every Interval, in the background, until
// Stop is called or ctx ends.
func (s *Siblings) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		return errors.New("sibling cleanup: already started")
	}
	ctx, s.cancel = context.WithCancel(ctx)
	done := make(chan struct{})
	s.done = done
	go func() {
		defer close(done)
		_ = s.Run(ctx)
	}()
	return nil
}

// Stop ends the sweeps and waits for the one under way to end, or for
// ctx.
func (s *Siblings) Stop(ctx context.Context) error {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if done == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop sibling cleanup: %w", ctx.Err())
	}
}

// Done is closed once the sweeps started by Start have ended; nil before
// Start.
func (s *Siblings) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

// Run sweeps at once and then every Interval until ctx ends, blocking:
// Start is the same in the background. Errors are
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
		log.WithField("removed", len(removed)).Debug("sibling cleanup sweep done")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Sweep removes once what lost dynamic delegates of the group and the
// manager left and returns what it removed.
func (s *Siblings) Sweep(ctx context.Context) ([]string, error) {
	self := ""
	if s.Self != nil {
		self = s.Self()
	}
	if self == "" {
		return nil, nil // not registered yet: the list cannot be trusted to name us
	}
	h := s.Handlers
	if h.local != "" {
		return nil, nil // errand run's handlers own nothing of the manager's
	}
	manager, err := h.managerID(ctx)
	if err != nil {
		return nil, err
	}
	if manager == "" {
		return nil, nil // whose resources are whose cannot be told
	}
	owners, err := h.owners(ctx, manager)
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
	lost := map[string]bool{}
	for _, d := range ds {
		if d.Dynamic && d.State == errand.DelegateLost && d.Group == h.cfg.Group {
			lost[d.ID] = true
		}
	}
	ids := make([]string, 0, len(owners))
	for id := range owners {
		if lost[id] {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	var removed []string
	for _, id := range ids {
		r, err := h.removeWhere(ctx, func(l map[string]string) bool {
			return siblingOf(l, h.cfg.Group, manager) && l[LabelDelegate] == id
		}, LabelGroup+"="+h.cfg.Group, LabelManager+"="+manager, LabelDelegate+"="+id)
		removed = append(removed, r...)
		if err != nil {
			return removed, fmt.Errorf("remove resources of delegate %s: %w", id, err)
		}
	}
	return removed, nil
}

// siblingOf reports whether labels are those of a delegate's resource of
// this group and manager. The daemon's filter on an empty value matches
// any value, and a filter cannot say "without errand.local": both are
// checked here.
func siblingOf(labels map[string]string, group, manager string) bool {
	_, local := labels[LabelLocal]
	return !local && labels[LabelManaged] == "true" && labels[LabelGroup] == group &&
		manager != "" && labels[LabelManager] == manager
}

// owners returns the delegates that own managed resources of the group
// and the manager on this Docker host.
func (h *Handlers) owners(ctx context.Context, manager string) (map[string]bool, error) {
	f := labelFilter(LabelManaged+"=true", LabelGroup+"="+h.cfg.Group, LabelManager+"="+manager)
	owners := map[string]bool{}
	add := func(labels map[string]string) {
		if siblingOf(labels, h.cfg.Group, manager) {
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
