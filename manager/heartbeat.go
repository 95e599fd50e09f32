package manager

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
type heartbeats struct {
	mu   sync.Mutex
	seen map[string]struct{}
}

func newHeartbeats() *heartbeats { return &heartbeats{seen: make(map[string]struct{})} }

func (h *heartbeats) record(id string) {
	h.mu.Lock()
	h.seen[id] = struct{}{}
	h.mu.Unlock()
}

func (h *heartbeats) forget(id string) {
	h.mu.Lock()
	delete(h.seen, id)
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

// touchAfter is the age from which a delegate's stored heartbeat is
// renewed when it is heard from. A delegate heard at an age just under
// it is next heard one interval later and written one flush after that:
// the stored heartbeat is then never older than touchAfter + interval +
// flush, which leaves one more interval before LeaseTTL loses it.
func (s *Server) touchAfter() time.Duration {
	return max(s.cfg.LeaseTTL-2*s.cfg.HeartbeatInterval-s.flushInterval(), 0)
}

// flushInterval is how often heard heartbeats are written: the
// configured interval, but at most a quarter of the lease TTL, so that a
// live delegate's stored heartbeat never lags its TTL.
func (s *Server) flushInterval() time.Duration {
	return max(min(s.cfg.HeartbeatFlushInterval, s.cfg.LeaseTTL/4), time.Millisecond)
}

func (s *Server) flushHeartbeats(ctx context.Context) error {
	ids := s.beats.take()
	if len(ids) == 0 {
		return nil
	}
	now := s.now()
	ids = s.cache.needsTouch(ids, now, s.touchAfter())
	if len(ids) == 0 {
		return nil
	}
	if err := s.store.DelegateTouch(ctx, store.DelegateTouchParams{IDs: ids, Now: now}); err != nil {
		s.cache.untouched(ids)
		s.beats.putBack(ids)
		return fmt.Errorf("record heartbeats of %d delegates: %w", len(ids), err)
	}
	return nil
}

func (s *Server) runHeartbeatFlusher(ctx context.Context) {
	t := time.NewTicker(s.flushInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.flushHeartbeats(ctx); err != nil && ctx.Err() == nil {
				s.log.WithError(err).Warn("heartbeat flush failed; retrying")
			}
		}
	}
}

// sweep expires what time has ended, once.
func (s *Server) sweep(ctx context.Context) (store.TaskSweepResult, error) {
	res, err := s.store.TaskSweep(ctx, store.TaskSweepParams{
		Now:          s.now(),
		LeaseTTL:     s.cfg.LeaseTTL,
		TimeoutGrace: s.cfg.TimeoutGrace,
	})
	if err != nil {
		return res, fmt.Errorf("sweep: %w", err)
	}
	s.cache.lost(res.LostDelegates)
	if len(res.LostDelegates) > 0 {
		// Tasks that follow a lost delegate's tasks may go to another
		// delegate of its group now: let every look count.
		s.hub.queuedChanged()
	}
	if len(res.LostDelegates)+len(res.Requeued)+len(res.Failed)+len(res.Cancelled)+len(res.TimedOut) > 0 {
		s.log.WithFields(logrus.Fields{
			"lost_delegates": res.LostDelegates,
			"requeued":       res.Requeued,
			"failed":         res.Failed,
			"cancelled":      res.Cancelled,
			"timed_out":      res.TimedOut,
		}).Warn("sweep expired leases and timeouts")
	}
	return res, nil
}

func (s *Server) runSweeper(ctx context.Context) {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.sweep(ctx); err != nil && ctx.Err() == nil {
				s.log.WithError(err).Warn("sweep failed")
			}
		}
	}
}
