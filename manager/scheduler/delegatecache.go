package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// cancelRecheck is how long the cancel requests of a delegate are
// trusted from the cache before one heartbeat reads them again, in case a
// change from another manager never arrived.
const cancelRecheck = 5 * time.Minute

// delegateCache holds what the hot paths (heartbeat, acquire) need to
// know of each delegate: its record, the cancels asked for the tasks it
// holds and which of them it was already told. It is kept current by the
// store's changes, which a shared store delivers from every manager, and
// by this manager's own writes; a delegate not cached is read from the
// store on first use, and the refresher re-reads every record from time
// to time so that what no change announces (another manager finding a
// delegate lost, a condition reported elsewhere) is not missed for long.
type delegateCache struct {
	mu   sync.Mutex
	byID map[string]*cachedDelegate
	// owner maps a task with a pending cancel to its delegate, so that the
	// task's end can drop the cancel.
	owner map[string]string
}

// cachedDelegate is one delegate in the cache. Its fields are guarded by
// the cache's mutex; d is never changed in place, only replaced, so a
// snapshot handed out stays valid.
type cachedDelegate struct {
	d *errand.Delegate
	// cancels are the cancels the delegate should be told, and which it
	// was told already (by an acquire or heartbeat answer).
	cancels cancels
	// heard is the last sign of life this manager got from the delegate,
	// by the manager's clock.
	heard time.Time
	// checked is when the cancels were last read from the store.
	checked time.Time
	// stored is the last heartbeat the store is known to hold.
	stored time.Time
	// emptyLook is the hub's queued count before the delegate's last
	// look for tasks that found none, at emptyAt; emptyAt is zero when
	// the last look found some or none was made.
	emptyLook uint64
	emptyAt   time.Time
	// loading is closed once the first read from the store is done; nil
	// when the entry is loaded. loadErr is that read's error.
	loading chan struct{}
	loadErr error
	// Changes that arrive while the entry loads, merged afterwards.
	pendingCancels []string
	pendingDrain   bool
	pendingGone    bool
}

// delegateView is a consistent snapshot of a cached delegate.
type delegateView struct {
	d *errand.Delegate
	// cancels lists the pending cancels, sorted; untold says whether any
	// of them was not delivered yet.
	cancels []string
	untold  bool
	heard   time.Time
}

func newDelegateCache() *delegateCache {
	return &delegateCache{byID: make(map[string]*cachedDelegate), owner: make(map[string]string)}
}

func (e *cachedDelegate) view(now time.Time) delegateView {
	v := delegateView{d: e.d, heard: e.heard}
	v.cancels, v.untold = e.cancels.pending(now)
	return v
}

// delegate returns the cached view of delegate id, reading it from the
// store when it is not cached.
func (s *Scheduler) delegate(ctx context.Context, id string) (delegateView, error) {
	c := s.cache
	for {
		c.mu.Lock()
		e := c.byID[id]
		if e == nil {
			e = &cachedDelegate{loading: make(chan struct{})}
			c.byID[id] = e
			c.mu.Unlock()
			return s.loadDelegate(ctx, id, e)
		}
		if e.loading == nil {
			v := e.view(s.now())
			c.mu.Unlock()
			return v, nil
		}
		loading := e.loading
		c.mu.Unlock()
		select {
		case <-loading:
		case <-ctx.Done():
			return delegateView{}, fmt.Errorf("read delegate %s: %w", id, ctx.Err())
		}
		c.mu.Lock()
		err := e.loadErr
		c.mu.Unlock()
		if err != nil {
			return delegateView{}, err
		}
	}
}

// loadDelegate reads delegate id into the placeholder e, merging the
// changes that arrived meanwhile.
func (s *Scheduler) loadDelegate(ctx context.Context, id string, e *cachedDelegate) (delegateView, error) {
	c := s.cache
	// The read must not depend on the one request that happened to come
	// first: others may be waiting on it.
	rctx := context.WithoutCancel(ctx)
	d, err := s.store.DelegateGet(rctx, id)
	var stored []string
	if err == nil {
		stored, err = s.store.TaskCancelRequests(rctx, id)
		if err != nil {
			err = fmt.Errorf("cancel requests of delegate %s: %w", id, err)
		}
	} else {
		err = fmt.Errorf("read delegate %s: %w", id, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	loading := e.loading
	e.loading = nil
	defer close(loading)
	if err != nil || e.pendingGone {
		if err == nil {
			err = fmt.Errorf("read delegate %s: %w", id, errand.Errorf(errand.CodeNotFound, "delegate %s was deregistered", id))
		}
		e.loadErr = err
		if c.byID[id] == e {
			delete(c.byID, id)
		}
		return delegateView{}, err
	}
	if e.pendingDrain && !d.DrainRequested {
		dd := *d
		dd.DrainRequested = true
		d = &dd
	}
	e.d = d
	e.heard = d.LastHeartbeat
	e.stored = d.LastHeartbeat
	e.checked = s.now()
	e.cancels = cancels{}
	for _, t := range append(stored, e.pendingCancels...) {
		e.cancels.ask(t)
		c.owner[t] = id
	}
	e.pendingCancels = nil
	return e.view(s.now()), nil
}

// change applies a store change to the cache. It never blocks for long.
func (c *delegateCache) change(ch store.Change) {
	switch ch.Kind {
	case store.ChangeCancelRequested:
		c.mu.Lock()
		if e := c.byID[ch.DelegateID]; e != nil {
			if e.loading != nil {
				e.pendingCancels = append(e.pendingCancels, ch.TaskID)
			} else {
				e.cancels.ask(ch.TaskID)
			}
			c.owner[ch.TaskID] = ch.DelegateID
		}
		c.mu.Unlock()
	case store.ChangeTaskEnded:
		c.mu.Lock()
		if id, ok := c.owner[ch.TaskID]; ok {
			delete(c.owner, ch.TaskID)
			if e := c.byID[id]; e != nil {
				e.cancels.ended(ch.TaskID)
			}
		}
		c.mu.Unlock()
	case store.ChangeDrainRequested:
		c.update(ch.DelegateID, func(d *errand.Delegate) { d.DrainRequested = true })
	case store.ChangeDelegateDeleted:
		c.forget(ch.DelegateID)
	}
}

// liveDelegate is delegate, for a request that must not outlive a
// deregistration made on another manager: it reads from the store that
// the delegate still exists, and forgets a delegate that does not (its
// token included), answering errand.ErrUnauthorized. The change that
// announces a deregistration reaches the other managers a moment later;
// a heartbeat is what keeps a delegate alive, so it must not pass in
// between.
func (s *Scheduler) liveDelegate(ctx context.Context, id string) (delegateView, error) {
	if _, err := s.store.DelegateTokenHash(ctx, id); errors.Is(err, errand.ErrNotFound) {
		s.forgetDelegate(id)
		return delegateView{}, errand.Errorf(errand.CodeUnauthorized, "delegate %s is not registered", id)
	} else if err != nil {
		return delegateView{}, fmt.Errorf("read delegate %s: %w", id, err)
	}
	return s.delegate(ctx, id)
}

// forgetDelegate drops what this manager remembers of a deregistered
// delegate: its token and its cache entry.
func (s *Scheduler) forgetDelegate(id string) {
	s.tokens.forget(id)
	s.cache.forget(id)
}

// update applies fn to a copy of the cached record of delegate id, if it
// is cached, and reports whether it was.
func (c *delegateCache) update(id string, fn func(*errand.Delegate)) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.byID[id]
	if e == nil {
		return false
	}
	if e.loading != nil {
		d := &errand.Delegate{}
		fn(d)
		e.pendingDrain = e.pendingDrain || d.DrainRequested
		return true
	}
	d := *e.d
	fn(&d)
	e.d = &d
	return true
}

// registered caches a delegate that was just registered: it holds no
// task, so nothing is pending for it.
func (c *delegateCache) registered(d *errand.Delegate, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byID[d.ID] = &cachedDelegate{d: d, heard: now, checked: now, stored: d.LastHeartbeat}
}

// put replaces the record of a cached delegate with one read from or
// written to the store, keeping its cancels; heard moves forward only.
// A delegate not cached stays so: its first use reads it whole.
func (c *delegateCache) put(d *errand.Delegate, heard time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.byID[d.ID]
	if e == nil || e.loading != nil {
		// A load in flight reads the store, which has this record.
		return
	}
	e.d = d
	if heard.After(e.heard) {
		e.heard = heard
	}
	if d.LastHeartbeat.After(e.stored) {
		e.stored = d.LastHeartbeat
	}
}

// heardFrom records a sign of life. A lost delegate becomes active again
// only by heartbeating (heartbeat true); it reports whether it was lost.
func (c *delegateCache) heardFrom(id string, now time.Time, heartbeat bool) (wasLost bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.byID[id]
	if e == nil || e.loading != nil {
		return false
	}
	if e.d.State == errand.DelegateLost {
		if !heartbeat {
			return false
		}
		d := *e.d
		d.State = errand.DelegateActive
		e.d = &d
		// Only a heartbeat written makes the store see it active again.
		e.stored = time.Time{}
		wasLost = true
	}
	if now.After(e.heard) {
		e.heard = now
	}
	return wasLost
}

// unchanged reports whether a look for tasks for delegate id would find
// none: the last look found none no longer than maxAge ago, and no task
// was queued since (queued is the hub's count now).
func (c *delegateCache) unchanged(id string, queued uint64, now time.Time, maxAge time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.byID[id]
	return e != nil && e.loading == nil && !e.emptyAt.IsZero() && e.emptyLook == queued && now.Sub(e.emptyAt) <= maxAge
}

// looked records a look for tasks that began when the hub's queued count
// was queued and found found tasks.
func (c *delegateCache) looked(id string, queued uint64, now time.Time, found int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.byID[id]
	if e == nil || e.loading != nil {
		return
	}
	if found > 0 {
		e.emptyAt = time.Time{}
		return
	}
	e.emptyLook, e.emptyAt = queued, now
}

// needsTouch returns the ids, of those heard from, whose heartbeat the
// store should be given now: those whose stored heartbeat is older than
// after (or unknown), recording that it will hold now.
func (c *delegateCache) needsTouch(ids []string, now time.Time, after time.Duration) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := ids[:0]
	for _, id := range ids {
		e := c.byID[id]
		if e != nil && e.loading == nil && now.Sub(e.stored) < after {
			continue
		}
		if e != nil && e.loading == nil {
			e.stored = now
		}
		out = append(out, id)
	}
	return out
}

// untouched forgets that a failed write was to hold now.
func (c *delegateCache) untouched(ids []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if e := c.byID[id]; e != nil {
			e.stored = time.Time{}
		}
	}
}

// told marks cancels as delivered to delegate id at now.
func (c *delegateCache) told(id string, cancels []string, now time.Time) {
	if len(cancels) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.byID[id]; e != nil {
		e.cancels.tell(cancels, now)
	}
}

// lost marks delegates found lost by a sweep.
func (c *delegateCache) lost(ids []string) {
	for _, id := range ids {
		c.update(id, func(d *errand.Delegate) { d.State = errand.DelegateLost })
	}
}

// forget drops a deregistered delegate.
func (c *delegateCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.byID[id]
	if e == nil {
		return
	}
	if e.loading != nil {
		e.pendingGone = true
		return
	}
	for _, t := range e.cancels.tasks() {
		delete(c.owner, t)
	}
	delete(c.byID, id)
}

// recheckCancels reads the cancels of delegate id from the store again
// when they were last read more than cancelRecheck ago.
func (s *Scheduler) recheckCancels(ctx context.Context, id string) error {
	c := s.cache
	now := s.now()
	c.mu.Lock()
	e := c.byID[id]
	due := e != nil && e.loading == nil && now.Sub(e.checked) > cancelRecheck
	if due {
		// One heartbeat does the read; others go on with the cache.
		e.checked = now
	}
	c.mu.Unlock()
	if !due {
		return nil
	}
	stored, err := s.store.TaskCancelRequests(ctx, id)
	if err != nil {
		return fmt.Errorf("cancel requests of delegate %s: %w", id, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.byID[id]; e != nil && e.loading == nil {
		for _, t := range stored {
			c.owner[t] = id
		}
		for _, t := range e.cancels.replace(stored) {
			if c.owner[t] == id {
				delete(c.owner, t)
			}
		}
	}
	return nil
}

// refreshDelegates re-reads every cached delegate's record in one read,
// and drops delegates not heard from for long (they are read again on
// their next request).
func (s *Scheduler) refreshDelegates(ctx context.Context) error {
	started := s.now()
	list, err := s.store.DelegateList(ctx, store.DelegateListParams{})
	if err != nil {
		return fmt.Errorf("refresh delegates: %w", err)
	}
	c := s.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := make(map[string]bool, len(list))
	for _, d := range list {
		seen[d.ID] = true
		e := c.byID[d.ID]
		if e == nil || e.loading != nil {
			continue
		}
		// A heartbeat this manager has not written yet is newer than
		// the store's lost.
		if d.State == errand.DelegateLost && e.d.State != errand.DelegateLost &&
			e.heard.After(started.Add(-2*s.flushInterval())) {
			continue
		}
		e.d = d
	}
	idle := 4 * s.cfg.LeaseTTL
	for id, e := range c.byID {
		if e.loading != nil {
			continue
		}
		if !seen[id] || started.Sub(e.heard) > idle {
			for _, t := range e.cancels.tasks() {
				delete(c.owner, t)
			}
			delete(c.byID, id)
		}
	}
	return nil
}

func (s *Scheduler) runDelegateRefresher(ctx context.Context) {
	s.ticking(ctx, s.cfg.LeaseTTL, "delegate cache refresh failed", s.refreshDelegates)
}
