package scheduler

import (
	"slices"
	"time"
)

// RetellAfter is how long a delivered cancel may stay pending before it
// counts as untold again: the answer that carried it may never have
// reached the delegate (a long-poll it gave up on).
const RetellAfter = time.Second

// cancels holds the cancels asked for the tasks one delegate holds, and
// which of them the delegate was told, and when. It is pure: no I/O, no
// clock of its own, no lock (the delegate cache guards it). The zero
// value is empty and ready.
//
// The rules:
//   - a cancel asked is untold;
//   - a cancel told (carried by an answer that reached the delegate) is
//     told, until RetellAfter has passed with the task still not ended:
//     then it counts as untold again;
//   - a task that ended drops its cancel;
//   - a fresh read of the store replaces the set, but keeps the untold
//     cancels it may have missed (asked after the read began).
type cancels struct {
	// told maps each pending cancel's task id to whether it was told.
	told map[string]bool
	// toldAt is when each told cancel was last told.
	toldAt map[string]time.Time
}

// ask records a cancel asked for task; a cancel already pending keeps
// its state.
func (c *cancels) ask(task string) {
	if _, ok := c.told[task]; ok {
		return
	}
	if c.told == nil {
		c.told = make(map[string]bool)
	}
	c.told[task] = false
}

// ended drops the cancel of a task that ended.
func (c *cancels) ended(task string) {
	delete(c.told, task)
	delete(c.toldAt, task)
}

// tell records that the cancels of tasks were delivered at now; tasks
// with no pending cancel are ignored.
func (c *cancels) tell(tasks []string, now time.Time) {
	for _, t := range tasks {
		if _, ok := c.told[t]; ok {
			c.told[t] = true
			if c.toldAt == nil {
				c.toldAt = make(map[string]time.Time)
			}
			c.toldAt[t] = now
		}
	}
}

// pending returns the pending cancels, sorted, and whether any of them
// is untold at now.
func (c *cancels) pending(now time.Time) (tasks []string, untold bool) {
	if len(c.told) == 0 {
		return nil, false
	}
	tasks = make([]string, 0, len(c.told))
	for t, told := range c.told {
		tasks = append(tasks, t)
		untold = untold || !told || now.Sub(c.toldAt[t]) >= RetellAfter
	}
	slices.Sort(tasks)
	return tasks, untold
}

// replace makes the cancels read from the store the pending set: those
// already known keep their state, new ones are untold, and an untold
// cancel the read did not return is kept (it may have been asked after
// the read began; its task's end drops it anyway). It returns the told
// cancels it dropped.
func (c *cancels) replace(stored []string) (dropped []string) {
	fresh := make(map[string]bool, len(stored))
	for _, t := range stored {
		fresh[t] = c.told[t]
	}
	for t, told := range c.told {
		if _, ok := fresh[t]; ok {
			continue
		}
		if !told {
			fresh[t] = false
		} else {
			dropped = append(dropped, t)
			delete(c.toldAt, t)
		}
	}
	c.told = fresh
	return dropped
}

// tasks returns the task ids of every pending cancel, in no order.
func (c *cancels) tasks() []string {
	out := make([]string, 0, len(c.told))
	for t := range c.told {
		out = append(out, t)
	}
	return out
}
