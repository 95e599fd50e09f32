package scheduler

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/manager/store"
)

// heartbeats records which delegates were heard from since the last
// flush. Writing every heartbeat would cost one write per delegate per
// interval; one DelegateTouch a second for all of them costs one, and it
// names only the delegates whose stored heartbeat is getting old (see
// touchAfter), so a delegate costs one row written every few intervals.
//
// It also keeps, for each delegate, the tasks its latest heartbeat named:
// the write that records the delegate's heartbeat renews their leases,
// and only theirs (errand.LeaseCheck). The list is kept until it is
// written, so that a delegate whose stored heartbeat is still fresh has
// its latest list renewed with its next write.
type heartbeats struct {
	mu    sync.Mutex
	seen  map[string]struct{}
	named map[string][]string
}

func newHeartbeats() *heartbeats {
	return &heartbeats{seen: make(map[string]struct{}), named: make(map[string][]string)}
}

func (h *heartbeats) record(id string) {
	h.mu.Lock()
	h.seen[id] = struct{}{}
	h.mu.Unlock()
}

// recordRunning records a heartbeat that named running.
func (h *heartbeats) recordRunning(id string, running []string) {
	h.mu.Lock()
	h.seen[id] = struct{}{}
	if len(running) > 0 {
		h.named[id] = running
	} else {
		delete(h.named, id)
	}
	h.mu.Unlock()
}

// running returns the tasks named by the latest heartbeats of ids.
func (h *heartbeats) running(ids []string) map[string][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out map[string][]string
	for _, id := range ids {
		if r := h.named[id]; len(r) > 0 {
			if out == nil {
				out = make(map[string][]string)
			}
			out[id] = r
		}
	}
	return out
}

// written drops the lists that were written, unless a newer heartbeat
// replaced them meanwhile.
func (h *heartbeats) written(renewed map[string][]string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, r := range renewed {
		if cur, ok := h.named[id]; ok && len(cur) == len(r) && (len(r) == 0 || &cur[0] == &r[0]) {
			delete(h.named, id)
		}
	}
}

// forgetRunning drops the list of a delegate found lost: its leases
// ended with it.
func (h *heartbeats) forgetRunning(id string) {
	h.mu.Lock()
	delete(h.named, id)
	h.mu.Unlock()
}

func (h *heartbeats) forget(id string) {
	h.mu.Lock()
	delete(h.seen, id)
	delete(h.named, id)
	h.mu.Unlock()
}

// take returns the recorded ids, sorted, and starts a new record.
func (h *heartbeats) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.seen) == 0 {
		return nil
	}
	ids := make([]string, 0, len(h.seen))
	for id := range h.seen {
		ids = append(ids, id)
	}
	h.seen = make(map[string]struct{})
	sort.Strings(ids)
	return ids
}

// putBack re-records ids whose flush failed, so the next flush tries them
// again.
func (h *heartbeats) putBack(ids []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		h.seen[id] = struct{}{}
	}
}

// TouchAfter is the age from which a delegate's stored heartbeat is
// renewed when it is heard from. A delegate heard at an age just under
// it is next heard one interval later and written one flush after that:
// the stored heartbeat is then never older than touchAfter + interval +
// flush, which leaves one more interval before LeaseTTL loses it.
func (s *Scheduler) TouchAfter() time.Duration {
	return max(s.cfg.LeaseTTL-2*s.cfg.HeartbeatInterval-s.flushInterval(), 0)
}

// flushInterval is how often heard heartbeats are written: the
// configured interval, but at most a quarter of the lease TTL, so that a
// live delegate's stored heartbeat never lags its TTL.
func (s *Scheduler) flushInterval() time.Duration {
	return max(min(s.cfg.HeartbeatFlushInterval, s.cfg.LeaseTTL/4), time.Millisecond)
}

// FlushHeartbeats writes the heartbeats heard since the last flush that
// the store needs (see TouchAfter), all in one write, renewing the leases
// of the tasks they named. The flusher calls it every flush interval.
func (s *Scheduler) FlushHeartbeats(ctx context.Context) error {
	ids := s.beats.take()
	if len(ids) == 0 {
		return nil
	}
	now := s.now()
	ids = s.cache.needsTouch(ids, now, s.TouchAfter())
	if len(ids) == 0 {
		return nil
	}
	running := s.beats.running(ids)
	if err := s.store.DelegateTouch(ctx, store.DelegateTouchParams{IDs: ids, Now: now, Running: running}); err != nil {
		s.cache.untouched(ids)
		s.beats.putBack(ids)
		return fmt.Errorf("record heartbeats of %d delegates: %w", len(ids), err)
	}
	s.beats.written(running)
	return nil
}

func (s *Scheduler) runHeartbeatFlusher(ctx context.Context) {
	s.ticking(ctx, s.flushInterval(), "heartbeat flush failed; retrying", s.FlushHeartbeats)
}

// Sweep expires what time has ended, once: the leases of delegates lost,
// tasks past their timeout, tasks whose affinity delegate is gone. The
// sweeper calls it every sweep interval.
func (s *Scheduler) Sweep(ctx context.Context) (store.TaskSweepResult, error) {
	res, err := s.store.TaskSweep(ctx, store.TaskSweepParams{
		Now:           s.now(),
		LeaseTTL:      s.cfg.LeaseTTL,
		TimeoutGrace:  s.cfg.TimeoutGrace,
		AffinityGrace: s.cfg.LeaseTTL,
	})
	if err != nil {
		return res, fmt.Errorf("sweep: %w", err)
	}
	s.cache.lost(res.LostDelegates)
	for _, id := range res.LostDelegates {
		s.beats.forgetRunning(id)
	}
	if len(res.LostDelegates) > 0 {
		// Tasks that follow a lost delegate's tasks may go to another
		// delegate of its group now: let every look count.
		s.hub.queuedChanged()
	}
	if len(res.LostDelegates)+len(res.Requeued)+len(res.Failed)+len(res.Cancelled)+len(res.TimedOut)+len(res.AffinityLost) > 0 {
		s.log.WithFields(logrus.Fields{
			"lost_delegates": res.LostDelegates,
			"requeued":       res.Requeued,
			"failed":         res.Failed,
			"cancelled":      res.Cancelled,
			"timed_out":      res.TimedOut,
			"affinity_lost":  res.AffinityLost,
		}).Warn("sweep expired leases and timeouts")
	}
	return res, nil
}

func (s *Scheduler) runSweeper(ctx context.Context) {
	s.ticking(ctx, s.cfg.SweepInterval, "sweep failed", func(ctx context.Context) error {
		_, err := s.Sweep(ctx)
		return err
	})
}
