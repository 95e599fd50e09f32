package poller

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/clock"
)

// Reports are sent in batches, the way River's completer sends
// completions: one call is in flight at a time, and it takes every
// report waiting when it starts. An idle delegate's report therefore
// leaves at once, and under load the reports that queue while a call is
// in flight share the next one. The outcome of a task whose end frees
// the slot the acquire loop waits for rides on the acquire that asks
// for the next task instead of a call of its own. The reports of one
// task leave in their order: none is taken while an earlier one of the
// same task is in flight.

// errAbandoned is why a report that could not be delivered in time is
// given up.
var errAbandoned = errors.New("not delivered in time")

// outgoing is one report waiting to be sent or in flight.
type outgoing struct {
	report   client.Report
	deadline time.Time
	// forAcquire leaves the report to the acquire loop, which is about
	// to ask for the task that takes the freed slot.
	forAcquire bool
	// done is told once what became of the report: nil when it was
	// applied (or had been), its refusal, or errAbandoned.
	done func(err error)
}

// outbox holds the reports waiting to be sent.
type outbox struct {
	mu       sync.Mutex
	queue    []*outgoing
	inflight map[string]int // reports in flight, by task
	ready    chan struct{}  // told when there may be something to take
	// slotWaiter is set while the acquire loop waits for a slot to free
	// (its poll asks for no task): the outcome of the task that frees it
	// is left to the acquire that follows.
	slotWaiter bool
}

func newOutbox() *outbox {
	return &outbox{inflight: map[string]int{}, ready: make(chan struct{}, 1)}
}

// add queues a report; an outcome is left to the acquire loop while it
// waits for a slot.
func (o *outbox) add(g *outgoing, outcome bool) {
	o.mu.Lock()
	held := outcome && o.slotWaiter
	g.forAcquire = held
	o.queue = append(o.queue, g)
	o.mu.Unlock()
	if !held {
		signal(o.ready)
	}
}

// acquireTake takes the reports an acquire for n tasks carries. An
// acquire for none that carries none waits for a slot to free.
func (o *outbox) acquireTake(max, n int) []*outgoing {
	batch := o.take(max, true)
	o.mu.Lock()
	o.slotWaiter = n == 0 && len(batch) == 0
	// What this acquire could not take (an earlier report of its task is
	// in flight) is the report loop's: the next acquire may be long.
	left := false
	for _, g := range o.queue {
		left = left || g.forAcquire
		g.forAcquire = false
	}
	o.mu.Unlock()
	if left {
		signal(o.ready)
	}
	return batch
}

// acquireEnded is told when an acquire returned. Outcomes queued from
// now on are the report loop's until the next acquire that waits for a
// slot; those queued before are taken by the next acquire.
func (o *outbox) acquireEnded() {
	o.mu.Lock()
	o.slotWaiter = false
	o.mu.Unlock()
}

// take removes up to max waiting reports, in their order, skipping those
// of tasks with a report in flight and, unless forAcquire, those left to
// the acquire loop.
func (o *outbox) take(max int, forAcquire bool) []*outgoing {
	o.mu.Lock()
	defer o.mu.Unlock()
	var batch []*outgoing
	busy := map[string]bool{}
	rest := o.queue[:0]
	for _, g := range o.queue {
		id := g.report.TaskID
		if len(batch) >= max || o.inflight[id] > 0 || busy[id] || (g.forAcquire && !forAcquire) {
			// A later report of a task stays behind one that stays.
			busy[id] = true
			rest = append(rest, g)
			continue
		}
		batch = append(batch, g)
	}
	clear(o.queue[len(rest):])
	o.queue = rest
	for _, g := range batch {
		o.inflight[g.report.TaskID]++
	}
	return batch
}

// landed ends the flight of reports.
func (o *outbox) landed(batch []*outgoing) {
	if len(batch) == 0 {
		return
	}
	o.mu.Lock()
	for _, g := range batch {
		id := g.report.TaskID
		if o.inflight[id]--; o.inflight[id] <= 0 {
			delete(o.inflight, id)
		}
	}
	o.mu.Unlock()
	signal(o.ready)
}

// putBack returns reports in flight to the front of the queue, for the
// report loop.
func (o *outbox) putBack(batch []*outgoing) {
	if len(batch) == 0 {
		return
	}
	for _, g := range batch {
		g.forAcquire = false
	}
	o.mu.Lock()
	o.queue = append(append([]*outgoing(nil), batch...), o.queue...)
	o.mu.Unlock()
	o.landed(batch)
}

// release hands the reports left to the acquire loop to the report loop.
func (o *outbox) release() {
	o.mu.Lock()
	o.slotWaiter = false
	for _, g := range o.queue {
		g.forAcquire = false
	}
	o.mu.Unlock()
	signal(o.ready)
}

func wire(batch []*outgoing) []*client.Report {
	out := make([]*client.Report, len(batch))
	for i, g := range batch {
		out[i] = &g.report
	}
	return out
}

// send queues a report of task t; done is told what became of it.
func (p *Poller) send(t *errand.Task, state errand.State, out client.Report, timeout time.Duration, done func(error)) {
	out.TaskID, out.State = t.ID, state
	if t.Lease != nil {
		out.Lease = t.Lease.Token
	}
	p.mu.Lock()
	p.reporting[t.ID]++
	p.busyChangedLocked()
	p.mu.Unlock()
	p.out.add(&outgoing{report: out, deadline: p.clock.Now().Add(timeout), done: func(err error) {
		done(err)
		p.reported(t.ID)
	}}, state != errand.StateRunning)
}

// reportLoop sends the waiting reports, a batch at a time, until ctx
// ends.
func (p *Poller) reportLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.out.ready:
		}
		for ctx.Err() == nil {
			batch := p.out.take(client.MaxReports, false)
			if len(batch) == 0 {
				break
			}
			p.deliver(ctx, batch)
		}
	}
}

// deliver sends a batch, retrying the reports that met a passing
// failure until each is delivered, refused, or past its deadline.
func (p *Poller) deliver(ctx context.Context, batch []*outgoing) {
	b := p.cfg.NewBackOff()
	for {
		batch = p.expire(batch)
		if len(batch) == 0 {
			return
		}
		last := batch[0].deadline
		for _, g := range batch {
			if g.deadline.After(last) {
				last = g.deadline
			}
		}
		rctx, cancel := context.WithTimeout(ctx, last.Sub(p.clock.Now()))
		// The client of the delegate as it is now: a delegate registered
		// anew reports under its new token.
		id, c := p.cfg.Session.Delegate()
		res, err := c.Reports(rctx, id, wire(batch))
		cancel()
		if err == nil {
			if batch, err = p.settle(batch, res); len(batch) == 0 {
				return
			}
		} else if ctx.Err() != nil || !errand.Retryable(err) {
			p.fail(batch, err)
			return
		}
		d := b.NextBackOff()
		if d == -1 {
			p.fail(batch, err)
			return
		}
		p.logger().WithError(err).WithFields(logrus.Fields{"reports": len(batch), "retry_in": d}).Debug("reports not delivered; retrying")
		if !clock.Sleep(p.clock, ctx.Done(), d) {
			p.fail(batch, err)
			return
		}
	}
}

// expire gives up the reports past their deadline and returns the rest.
func (p *Poller) expire(batch []*outgoing) []*outgoing {
	now := p.clock.Now()
	var live, gone []*outgoing
	for _, g := range batch {
		if now.Before(g.deadline) {
			live = append(live, g)
		} else {
			gone = append(gone, g)
		}
	}
	p.fail(gone, errAbandoned)
	return live
}

// settle tells each report of a batch its result and returns those to
// try again: a passing failure, or no result at all, with the error to
// log.
func (p *Poller) settle(batch []*outgoing, res []*client.ReportResult) (again []*outgoing, err error) {
	var landed []*outgoing
	var errs []error
	for i, g := range batch {
		if i >= len(res) || res[i] == nil {
			again = append(again, g)
			err = errand.Errorf(errand.CodeUnavailable, "the manager did not answer the report on task %s", g.report.TaskID)
			continue
		}
		rerr := res[i].Err()
		if rerr != nil && errand.Retryable(rerr) {
			again, err = append(again, g), rerr
			continue
		}
		landed, errs = append(landed, g), append(errs, rerr)
	}
	p.out.landed(landed)
	for i, g := range landed {
		g.done(errs[i])
	}
	return again, err
}

// fail tells every report of a batch err.
func (p *Poller) fail(batch []*outgoing, err error) {
	p.out.landed(batch)
	for _, g := range batch {
		g.done(err)
	}
}
