package logs

import (
	"sync"

	"github.com/errandci/errand/manager/store"
)

// followers wakes log followers on their task's new lines or end. A
// wake-up only says "look again": the follower re-reads the log, so a
// spurious wake-up costs one read and a missed one cannot happen as long
// as the follower registers before it first reads.
type followers struct {
	mu     sync.Mutex
	byTask map[string]map[chan struct{}]struct{}
}

func newFollowers() *followers {
	return &followers{byTask: make(map[string]map[chan struct{}]struct{})}
}

// follow registers a reader of a task's log; its channel holds at most
// one pending wake-up. Call the returned function when done.
func (f *followers) follow(taskID string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	f.mu.Lock()
	set := f.byTask[taskID]
	if set == nil {
		set = make(map[chan struct{}]struct{}, 1)
		f.byTask[taskID] = set
	}
	set[ch] = struct{}{}
	f.mu.Unlock()
	return ch, func() {
		f.mu.Lock()
		delete(f.byTask[taskID], ch)
		if len(f.byTask[taskID]) == 0 {
			delete(f.byTask, taskID)
		}
		f.mu.Unlock()
	}
}

// notify wakes the followers of the task a change concerns. It never
// blocks.
func (f *followers) notify(c store.Change) {
	if c.Kind != store.ChangeLogAppended && c.Kind != store.ChangeTaskEnded {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.byTask[c.TaskID] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
