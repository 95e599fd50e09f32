package manager

import (
	"sync"
	"sync/atomic"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// hub wakes waiting requests when the store reports a change they care
// about: long-polling acquirers on a queued task they may run or on a
// cancel or drain for their delegate, log followers on their task's new
// lines or end. A wake-up only says "look again": the waiter re-reads the
// store, so a spurious wake-up costs one read and a missed one cannot
// happen as long as the waiter registers before it first looks.
type hub struct {
	mu        sync.Mutex
	acquirers map[*waiter]struct{}
	followers map[string]map[*waiter]struct{}
}

// waiter is one waiting request. ch holds at most one pending wake-up.
type waiter struct {
	delegate *errand.Delegate // acquirers only
	tasks    bool             // the acquirer wants tasks, not only cancels
	ch       chan struct{}
	// urgent is set when a cancel or drain for the delegate arrived: the
	// long-poll returns rather than looking for tasks again.
	urgent atomic.Bool
}

func newHub() *hub {
	return &hub{
		acquirers: make(map[*waiter]struct{}),
		followers: make(map[string]map[*waiter]struct{}),
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
	h.mu.Unlock()
	return w, func() {
		h.mu.Lock()
		delete(h.acquirers, w)
		h.mu.Unlock()
	}
}

// follower registers a reader of a task's log.
func (h *hub) follower(taskID string) (*waiter, func()) {
	w := &waiter{ch: make(chan struct{}, 1)}
	h.mu.Lock()
	set := h.followers[taskID]
	if set == nil {
		set = make(map[*waiter]struct{})
		h.followers[taskID] = set
	}
	set[w] = struct{}{}
	h.mu.Unlock()
	return w, func() {
		h.mu.Lock()
		delete(h.followers[taskID], w)
		if len(h.followers[taskID]) == 0 {
			delete(h.followers, taskID)
		}
		h.mu.Unlock()
	}
}

// notify wakes the waiters a change concerns. It never blocks.
func (h *hub) notify(c store.Change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch c.Kind {
	case store.ChangeTaskQueued:
		// The change carries the type only: the selector is checked by
		// the store when the woken acquirer looks again.
		probe := &errand.Task{Type: c.TaskType}
		for w := range h.acquirers {
			if w.tasks && w.delegate.Matches(probe) {
				w.wake()
			}
		}
	case store.ChangeCancelRequested, store.ChangeDrainRequested:
		for w := range h.acquirers {
			if w.delegate.ID == c.DelegateID {
				w.urgent.Store(true)
				w.wake()
			}
		}
	case store.ChangeLogAppended, store.ChangeTaskEnded:
		for w := range h.followers[c.TaskID] {
			w.wake()
		}
	}
}
