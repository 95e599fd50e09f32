package scheduler

import (
	"sync"
	"sync/atomic"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// hub wakes long-polling acquirers when something they care about
// changes: a queued task they may run, news for their delegate (a cancel,
// a drain, a change of state). A wake-up only says "look again": the
// waiter re-reads what it waits on, so a spurious wake-up costs one look
// and a missed one cannot happen as long as the waiter registers before
// it first looks.
type hub struct {
	// queued counts the task_queued changes seen: a delegate whose last
	// look for tasks found none, with no change since, would find none.
	queued atomic.Uint64

	mu sync.Mutex
	// acquirers holds every long-poll; byDelegate the same by delegate
	// id.
	acquirers  map[*waiter]struct{}
	byDelegate map[string]map[*waiter]struct{}
}

// waiter is one waiting request. ch holds at most one pending wake-up.
type waiter struct {
	delegate *errand.Delegate
	tasks    bool // the acquirer wants tasks, not only news
	ch       chan struct{}
}

func newHub() *hub {
	return &hub{
		acquirers:  make(map[*waiter]struct{}),
		byDelegate: make(map[string]map[*waiter]struct{}),
	}
}

func (w *waiter) wake() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// acquirer registers a long-polling delegate; call the returned function
// when done.
func (h *hub) acquirer(d *errand.Delegate, wantTasks bool) (*waiter, func()) {
	w := &waiter{delegate: d, tasks: wantTasks, ch: make(chan struct{}, 1)}
	h.mu.Lock()
	h.acquirers[w] = struct{}{}
	add(h.byDelegate, d.ID, w)
	h.mu.Unlock()
	return w, func() {
		h.mu.Lock()
		delete(h.acquirers, w)
		remove(h.byDelegate, d.ID, w)
		h.mu.Unlock()
	}
}

func add(m map[string]map[*waiter]struct{}, key string, w *waiter) {
	set := m[key]
	if set == nil {
		set = make(map[*waiter]struct{}, 1)
		m[key] = set
	}
	set[w] = struct{}{}
}

func remove(m map[string]map[*waiter]struct{}, key string, w *waiter) {
	delete(m[key], w)
	if len(m[key]) == 0 {
		delete(m, key)
	}
}

// queuedChanged counts a change that may make queued tasks leasable
// without a task_queued change of their own.
func (h *hub) queuedChanged() { h.queued.Add(1) }

// wakeDelegate wakes the long-polls of one delegate.
func (h *hub) wakeDelegate(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.byDelegate[id] {
		w.wake()
	}
}

// notify wakes the waiters a change concerns. It never blocks.
func (h *hub) notify(c store.Change) {
	switch c.Kind {
	case store.ChangeTaskQueued:
		// The change carries the type only: the selector is checked by
		// the store when the woken acquirer looks again.
		probe := &errand.Task{Type: c.TaskType}
		h.queued.Add(1)
		h.mu.Lock()
		defer h.mu.Unlock()
		for w := range h.acquirers {
			if w.tasks && w.delegate.Matches(probe) {
				w.wake()
			}
		}
	case store.ChangeCancelRequested, store.ChangeDrainRequested:
		h.wakeDelegate(c.DelegateID)
	}
}
