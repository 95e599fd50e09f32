package engine

import (
	"context"

	"github.com/errandci/errand/manager/store"
)

// TaskReportBatch applies a delegate's reports together. They join the
// queue of reports at once, so that one batch (one transaction) takes
// as many of them as it may. The reports of one task go in rounds, the
// k-th report of every task in round k, so that batches applied side by
// side never reorder them.
func (e *Engine) TaskReportBatch(ctx context.Context, reports []store.TaskReportParams) []store.TaskReportResult {
	out := make([]store.TaskReportResult, len(reports))
	var rounds [][]int
	seen := make(map[string]int, len(reports))
	for i, p := range reports {
		if _, err := reportEvent(p); err != nil {
			out[i].Err = err
			continue
		}
		k := seen[p.TaskID]
		seen[p.TaskID] = k + 1
		if k == len(rounds) {
			rounds = append(rounds, nil)
		}
		rounds[k] = append(rounds[k], i)
	}
	for _, round := range rounds {
		reqs := make([]*reportReq, len(round))
		for j, i := range round {
			ev, _ := reportEvent(reports[i])
			reqs[j] = &reportReq{ctx: ctx, p: reports[i], ev: ev, done: make(chan struct{})}
		}
		e.reports.add(reqs...)
		for j, r := range reqs {
			e.await(r)
			out[round[j]] = store.TaskReportResult{Task: r.out, Unchanged: r.same, Err: r.err}
		}
	}
	return out
}
