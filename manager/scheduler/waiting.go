package scheduler

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// FleetMaxAge is how long one read of the registered delegates explains
// the queued tasks shown: a follower polling a run reads them once a
// second at most.
const FleetMaxAge = time.Second

// fleetSnapshot is the list of registered delegates, read at most once
// per FleetMaxAge, that explains why queued tasks wait.
type fleetSnapshot struct {
	mu   sync.Mutex
	at   time.Time
	list []*errand.Delegate
}

// delegates returns the registered delegates, from a read no older than
// FleetMaxAge.
func (s *Scheduler) delegatesSnapshot(ctx context.Context) ([]*errand.Delegate, error) {
	f := &s.fleet
	f.mu.Lock()
	defer f.mu.Unlock()
	now := s.now()
	if f.list != nil && now.Sub(f.at) < FleetMaxAge && !now.Before(f.at) {
		return f.list, nil
	}
	list, err := s.store.DelegateList(ctx, store.DelegateListParams{})
	if err != nil {
		return nil, fmt.Errorf("list delegates: %w", err)
	}
	if list == nil {
		list = []*errand.Delegate{}
	}
	f.list, f.at = list, now
	return list, nil
}

// ExplainWaiting sets the WaitingReason of the queued tasks in tasks
// that no active delegate may run. It costs one read of the delegates
// (shared for a second) when some task is queued, none otherwise; a
// failed read leaves the reasons empty.
func (s *Scheduler) ExplainWaiting(ctx context.Context, tasks []*errand.Task) {
	queued := false
	for _, t := range tasks {
		queued = queued || t.State == errand.StateQueued
	}
	if !queued {
		return
	}
	fleet, err := s.delegatesSnapshot(ctx)
	if err != nil {
		s.log.WithError(err).Warn("cannot explain why queued tasks wait")
		return
	}
	for _, t := range tasks {
		if t.State == errand.StateQueued {
			t.WaitingReason = WaitingReason(t, fleet)
		}
	}
}

// WaitingReason says why no delegate of fleet may run the queued task t,
// or "" when an active one may.
func WaitingReason(t *errand.Task, fleet []*errand.Delegate) string {
	var serving, matching []*errand.Delegate
	for _, d := range fleet {
		if len(d.TaskTypes) > 0 && !slices.Contains(d.TaskTypes, t.Type) {
			continue
		}
		serving = append(serving, d)
		if d.Matches(t) {
			matching = append(matching, d)
		}
	}
	switch {
	case len(fleet) == 0:
		return "no delegate is registered"
	case len(serving) == 0:
		return fmt.Sprintf("no registered delegate serves task type %s", t.Type)
	case len(matching) == 0:
		return fmt.Sprintf("no registered delegate serving %s matches the selector %s", t.Type, describeSelector(t.Selector))
	}
	var lost, draining int
	for _, d := range matching {
		switch {
		case d.State == errand.DelegateActive && !d.DrainRequested:
			return ""
		case d.State == errand.DelegateLost:
			lost++
		default:
			draining++
		}
	}
	return fmt.Sprintf("the delegates that may run it are lost (%d) or draining (%d)", lost, draining)
}

// describeSelector writes a selector as labels, arch and group.
func describeSelector(sel errand.Selector) string {
	var parts []string
	keys := make([]string, 0, len(sel.Labels))
	for k := range sel.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = append(parts, "label "+k+"="+sel.Labels[k])
	}
	if sel.Arch != "" {
		parts = append(parts, "arch "+sel.Arch)
	}
	if sel.Group != "" {
		parts = append(parts, "group "+sel.Group)
	}
	if len(parts) == 0 {
		return "(none)"
	}
	return strings.Join(parts, ", ")
}
