package engine

import (
	"context"
	"runtime"
	"sync"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// Reports that arrive together are applied together, the way River's
// completer batches completions: whoever finds no batch running takes
// every report waiting at that moment and applies them in one
// transaction, reading the rows in one go and writing them in one go
// (store.DriverTx.TaskRows, TaskUpdates). Each caller returns only once
// the transaction that holds its report committed, so an acknowledged
// report is durable. A batch that fails as a whole (a database error, a
// row changed underneath) is applied again one report at a time, so that
// one report never fails another.

// maxReportBatch bounds the reports applied in one transaction.
const maxReportBatch = 256

// reportBatches bounds the batches applied at once: a few, so that a
// database with several connections works on the next batch while the
// last one commits.
const reportBatches = 4

// reportQueue holds reports waiting for the batch that will apply them.
type reportQueue struct {
	sem     chan struct{} // held by the caller applying a batch
	mu      sync.Mutex
	pending []*reportReq
}

// reportReq is one caller's report.
type reportReq struct {
	ctx context.Context
	p   store.TaskReportParams
	ev  errand.Event
	// taken is set, under the queue's lock, once a batch holds the
	// report: its caller then only waits for done.
	taken bool
	out   *errand.Task
	// same is set for a report that changed nothing: a retry.
	same bool
	err  error
	done chan struct{}
}

// report queues a report and waits until a batch applied it, applying
// the batch itself when none is running.
func (e *Engine) report(ctx context.Context, p store.TaskReportParams, ev errand.Event) (*errand.Task, error) {
	req := &reportReq{ctx: ctx, p: p, ev: ev, done: make(chan struct{})}
	e.reports.add(req)
	e.await(req)
	return req.out, req.err
}

// add queues reports for the next batch.
func (q *reportQueue) add(reqs ...*reportReq) {
	q.mu.Lock()
	q.pending = append(q.pending, reqs...)
	q.mu.Unlock()
}

// await waits until a batch applied req, applying the batch itself when
// none is running.
func (e *Engine) await(req *reportReq) {
	q := &e.reports
	for {
		select {
		case <-req.done:
			return
		case q.sem <- struct{}{}:
			// Let reports that are about to arrive join the batch.
			runtime.Gosched()
			batch := q.take()
			if len(batch) > 0 {
				e.applyReports(batch)
			}
			<-q.sem
			for _, r := range batch {
				close(r.done)
			}
			q.mu.Lock()
			taken := req.taken
			q.mu.Unlock()
			if taken {
				<-req.done
				return
			}
		}
	}
}

// take removes up to maxReportBatch waiting reports.
func (q *reportQueue) take() []*reportReq {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := min(len(q.pending), maxReportBatch)
	batch := append([]*reportReq(nil), q.pending[:n]...)
	for _, r := range batch {
		r.taken = true
	}
	q.pending = q.pending[n:]
	return batch
}

// applyReports applies a batch in one transaction, or one report at a
// time when the batch as a whole fails.
func (e *Engine) applyReports(batch []*reportReq) {
	if len(batch) == 1 {
		r := batch[0]
		r.out, r.same, r.err = e.reportOne(context.WithoutCancel(r.ctx), r.p, r.ev)
		return
	}
	ctx := context.WithoutCancel(batch[0].ctx)
	err := e.d.Write(ctx, func(tx store.DriverTx) error { return applyBatch(tx, batch) })
	if err == nil {
		return
	}
	for _, r := range batch {
		r.out, r.same, r.err = e.reportOne(context.WithoutCancel(r.ctx), r.p, r.ev)
	}
}

// applyBatch decides every report of a batch on rows read together and
// writes the changed rows together. The reports of one task are decided
// in their order, each on the row the one before left.
func applyBatch(tx store.DriverTx, batch []*reportReq) error {
	for _, r := range batch {
		r.out, r.same, r.err = nil, false, nil
	}
	ids := make([]string, 0, len(batch))
	seen := make(map[string]bool, len(batch))
	for _, r := range batch {
		if !seen[r.p.TaskID] {
			seen[r.p.TaskID] = true
			ids = append(ids, r.p.TaskID)
		}
	}
	rows, err := tx.TaskRows(ids)
	if err != nil {
		return err
	}
	// read is each task's row as read, cur as decided so far.
	read := make(map[string]*store.TaskRow, len(rows))
	cur := make(map[string]*store.TaskRow, len(rows))
	for id, row := range rows {
		read[id], cur[id] = row, row
	}
	for _, r := range batch {
		row, ok := cur[r.p.TaskID]
		if !ok {
			r.err = errand.Errorf(errand.CodeNotFound, "task %s not found", r.p.TaskID)
			continue
		}
		next, same, err := decideReport(row, r.p, r.ev)
		if err != nil {
			r.err = err
			continue
		}
		if same {
			r.out, r.same = row.Detached(), true
			continue
		}
		n := outcome(row, next, Extras{Result: r.p.Result, Err: r.p.Error}, r.p.Now)
		cur[r.p.TaskID] = n
		r.out = n.Detached()
	}
	var prev, next []*store.TaskRow
	for _, id := range ids {
		if n, ok := cur[id]; ok && n != read[id] {
			prev, next = append(prev, read[id]), append(next, n)
		}
	}
	if len(next) == 0 {
		return nil
	}
	if err := tx.TaskUpdates(prev, next); err != nil {
		return err
	}
	for i := range next {
		if err := writtenAll(tx, prev[i], next[i], batch); err != nil {
			return err
		}
	}
	return nil
}

// writtenAll announces what the reports of one task changed, from its
// row as read to its row as written, and releases its dependents when it
// ended.
func writtenAll(tx store.DriverTx, prev, next *store.TaskRow, batch []*reportReq) error {
	for _, r := range batch {
		if r.p.TaskID == prev.ID && r.err == nil {
			return written(tx, prev, next, r.p.Now)
		}
	}
	return nil
}
