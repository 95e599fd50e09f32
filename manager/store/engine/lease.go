package engine

import (
	"context"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// TaskLeaseCheck reads the task as a report would and applies a
// report's lease rules, writing nothing.
func (e *Engine) TaskLeaseCheck(ctx context.Context, p store.TaskLeaseCheckParams) (*errand.Task, error) {
	var out *errand.Task
	err := e.d.Write(ctx, func(tx store.DriverTx) error {
		row, err := tx.TaskRow(p.TaskID)
		if err != nil {
			return err
		}
		if !store.LeaseMatches(row.LeaseToken, p.LeaseToken) || !row.State.Active() {
			return errand.Errorf(errand.CodeLeaseLost, "task %s: lease is not current", p.TaskID)
		}
		if row.DelegateID != p.DelegateID {
			return errand.Errorf(errand.CodeForbidden, "task %s: leased to another delegate", p.TaskID)
		}
		out = row.Detached()
		return nil
	})
	return out, err
}
