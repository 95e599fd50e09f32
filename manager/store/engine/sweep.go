package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// TaskSweep expires what time has ended. Several managers may sweep at
// once: the driver skips the rows another sweep holds, and that sweep
// expires them.
func (e *Engine) TaskSweep(ctx context.Context, p store.TaskSweepParams) (store.TaskSweepResult, error) {
	var res store.TaskSweepResult
	err := e.write(ctx, func(tx store.DriverTx) error {
		res = store.TaskSweepResult{}
		if p.LeaseTTL > 0 {
			lost, err := tx.DelegatesLose(p.Now.Add(-p.LeaseTTL))
			if err != nil {
				return fmt.Errorf("sweep delegates: %w", err)
			}
			for _, id := range lost {
				res.LostDelegates = append(res.LostDelegates, id)
				if err := expireHeld(tx, id, nil, p.Now, &res); err != nil {
					return err
				}
			}
			if err := expireUnrenewed(tx, p.Now, p.LeaseTTL, &res); err != nil {
				return err
			}
		}
		if err := failAffinityLost(tx, p.Now, p.Now.Add(-(p.LeaseTTL + p.AffinityGrace)), &res); err != nil {
			return err
		}
		late, err := tx.TaskRowsOverdue(p.Now, p.TimeoutGrace)
		if err != nil {
			return fmt.Errorf("sweep timeouts: %w", err)
		}
		for _, row := range late {
			next, err := errand.Transition(row.Status(), errand.EventTimeout)
			if err != nil {
				return fmt.Errorf("time out task %s: %w", row.ID, err)
			}
			if _, err := Apply(tx, row, next, Extras{}, p.Now); err != nil {
				return err
			}
			res.TimedOut = append(res.TimedOut, row.ID)
		}
		return nil
	})
	if err != nil {
		return store.TaskSweepResult{}, err
	}
	return res, nil
}

// TaskRelease ends at once the leases of a delegate's active tasks that
// its complete statement does not name.
func (e *Engine) TaskRelease(ctx context.Context, p store.TaskReleaseParams) (store.TaskSweepResult, error) {
	var res store.TaskSweepResult
	if p.DelegateID == "" {
		return res, errand.Errorf(errand.CodeInvalid, "delegate: required")
	}
	held := make(map[string]bool, len(p.Held))
	for _, id := range p.Held {
		held[id] = true
	}
	err := e.write(ctx, func(tx store.DriverTx) error {
		res = store.TaskSweepResult{}
		return expireHeld(tx, p.DelegateID, held, p.Now, &res)
	})
	if err != nil {
		return store.TaskSweepResult{}, fmt.Errorf("release leases of delegate %s: %w", p.DelegateID, err)
	}
	return res, nil
}

// TaskAcquire leases up to p.Max queued tasks to a delegate: what a
// lease does to a queued task is the state machine's, which task the
// driver's.
func (e *Engine) TaskAcquire(ctx context.Context, p store.TaskAcquireParams) ([]*errand.Task, error) {
	if p.Delegate == nil || p.Delegate.ID == "" {
		return nil, errand.Errorf(errand.CodeInvalid, "delegate: required")
	}
	if p.Max <= 0 {
		p.Max = 1
	}
	queued := errand.Status{State: errand.StateQueued, MaxAttempts: 1}
	leased, err := errand.Transition(queued, errand.EventLease)
	if err != nil {
		return nil, err
	}
	return e.d.TaskLease(ctx, p, store.LeaseStep{State: leased.State, Attempts: leased.Attempt - queued.Attempt})
}

// LogAppend appends lines at p.Offset under the task's lease: a retry of
// lines stored already is a no-op, a gap is errand.ErrLogOffset, and a
// task that ended takes only retries.
func (e *Engine) LogAppend(ctx context.Context, p store.LogAppendParams) (int64, error) {
	if p.Offset < 0 {
		return 0, errand.Errorf(errand.CodeInvalid, "offset: negative")
	}
	var next int64
	err := e.write(ctx, func(tx store.DriverTx) error {
		tail, err := tx.LogTail(p.TaskID)
		if err != nil {
			return err
		}
		if !store.LeaseMatches(tail.LeaseToken, p.LeaseToken) {
			return errand.Errorf(errand.CodeLeaseLost, "task %s: lease is not current", p.TaskID)
		}
		if tail.DelegateID != p.DelegateID {
			return errand.Errorf(errand.CodeForbidden, "task %s: leased to another delegate", p.TaskID)
		}
		if p.Offset > tail.Lines {
			return errand.Errorf(errand.CodeLogOffset, "task %s: append at %d leaves a gap: expected offset %d",
				p.TaskID, p.Offset, tail.Lines)
		}
		end := p.Offset + int64(len(p.Lines))
		if end <= tail.Lines {
			// Every line is stored already: a retry.
			next = tail.Lines
			return nil
		}
		if !tail.State.Active() || tail.Sealed {
			return errand.Errorf(errand.CodeLeaseLost, "task %s: %s, its log is closed", p.TaskID, tail.State)
		}
		if err := tx.LogAdd(p.TaskID, tail.Lines, p.Lines[tail.Lines-p.Offset:]); err != nil {
			return fmt.Errorf("append log of %s: %w", p.TaskID, err)
		}
		next = end
		tx.Emit(store.Change{Kind: store.ChangeLogAppended, TaskID: p.TaskID, LogLines: end})
		return nil
	})
	if err != nil {
		return 0, err
	}
	return next, nil
}

// LogSeal records that an ended task's log now lives in p.Objects: a log
// sealed already is left as it is (two managers may seal at once), and a
// task that has not ended keeps its log in the store.
func (e *Engine) LogSeal(ctx context.Context, p store.LogSealParams) error {
	objects := p.Objects
	if objects == nil {
		objects = []store.LogObject{}
	}
	return e.write(ctx, func(tx store.DriverTx) error {
		tail, err := tx.LogTail(p.TaskID)
		if err != nil {
			return err
		}
		if tail.Sealed {
			return nil
		}
		if !tail.State.Terminal() {
			return errand.Errorf(errand.CodeIllegalTransition, "task %s is %s: only an ended task's log is sealed", p.TaskID, tail.State)
		}
		if err := tx.LogSeal(p.TaskID, objects); err != nil {
			return fmt.Errorf("seal log of %s: %w", p.TaskID, err)
		}
		return nil
	})
}

// DelegateRegister checks a registration and inserts the delegate.
func (e *Engine) DelegateRegister(ctx context.Context, p store.DelegateRegisterParams) (*errand.Delegate, error) {
	if p.Delegate == nil || p.Delegate.ID == "" {
		return nil, errand.Errorf(errand.CodeInvalid, "delegate.id: required")
	}
	if p.TokenHash == "" {
		return nil, errand.Errorf(errand.CodeInvalid, "token hash: required")
	}
	return e.d.DelegateRegister(ctx, p)
}

// DelegateDelete removes a delegate; its active tasks lose their leases.
func (e *Engine) DelegateDelete(ctx context.Context, p store.DelegateDeleteParams) error {
	return e.write(ctx, func(tx store.DriverTx) error {
		if err := tx.DelegateRemove(p.ID); err != nil {
			return err
		}
		if err := expireHeld(tx, p.ID, nil, p.Now, nil); err != nil {
			return fmt.Errorf("delete delegate %s: %w", p.ID, err)
		}
		tx.Emit(store.Change{Kind: store.ChangeDelegateDeleted, DelegateID: p.ID})
		return nil
	})
}

// expireHeld applies lease_expired to the active tasks of a delegate:
// all of them with held nil, else those of a complete statement that does
// not name them (errand.LeaseCheck).
func expireHeld(tx store.DriverTx, delegateID string, held map[string]bool, now time.Time, res *store.TaskSweepResult) error {
	rows, err := tx.TaskRowsHeld(delegateID)
	if err != nil {
		return fmt.Errorf("tasks of delegate %s: %w", delegateID, err)
	}
	for _, row := range rows {
		if held != nil && !(errand.LeaseCheck{Named: held[row.ID], Complete: true}).Ended(now, 0) {
			continue
		}
		if err := expireLease(tx, row, now, res); err != nil {
			return err
		}
	}
	return nil
}

// expireUnrenewed applies lease_expired to the active tasks whose leases
// were not renewed for longer than ttl, though their delegates live.
func expireUnrenewed(tx store.DriverTx, now time.Time, ttl time.Duration, res *store.TaskSweepResult) error {
	rows, err := tx.TaskRowsUnrenewed(now.Add(-ttl))
	if err != nil {
		return fmt.Errorf("sweep leases: %w", err)
	}
	for _, r := range rows {
		if !(errand.LeaseCheck{Renewed: r.Renewed}).Ended(now, ttl) {
			continue
		}
		if err := expireLease(tx, r.Row, now, res); err != nil {
			return err
		}
	}
	return nil
}

// expireLease applies lease_expired to one active task and says in res
// what became of it.
func expireLease(tx store.DriverTx, row *store.TaskRow, now time.Time, res *store.TaskSweepResult) error {
	next, err := errand.Transition(row.Status(), errand.EventLeaseExpired)
	if err != nil {
		return fmt.Errorf("expire lease of %s: %w", row.ID, err)
	}
	if _, err := Apply(tx, row, next, Extras{ClearLease: true}, now); err != nil {
		return err
	}
	if res == nil {
		return nil
	}
	switch next.State {
	case errand.StateQueued:
		res.Requeued = append(res.Requeued, row.ID)
	case errand.StateCancelled:
		res.Cancelled = append(res.Cancelled, row.ID)
	default:
		res.Failed = append(res.Failed, row.ID)
	}
	return nil
}

// failAffinityLost fails the queued tasks whose affinity task's delegate
// is gone, or lost since before lostBefore, when no active delegate of
// its group may run them instead (store.StandIn).
func failAffinityLost(tx store.DriverTx, now, lostBefore time.Time, res *store.TaskSweepResult) error {
	orphans, err := tx.TaskRowsOrphaned(lostBefore)
	if err != nil {
		return fmt.Errorf("sweep affinities: %w", err)
	}
	live := map[string][]*errand.Delegate{}
	for _, o := range orphans {
		ds, ok := live[o.Group]
		if !ok {
			if ds, err = tx.DelegatesActive(o.Group); err != nil {
				return fmt.Errorf("sweep affinities: %w", err)
			}
			live[o.Group] = ds
		}
		if store.StandIn(&o.Row.Task, ds) {
			continue
		}
		next, err := errand.Transition(o.Row.Status(), errand.EventAffinityLost)
		if err != nil {
			return fmt.Errorf("fail task %s: %w", o.Row.ID, err)
		}
		if _, err := Apply(tx, o.Row, next, Extras{}, now); err != nil {
			return err
		}
		res.AffinityLost = append(res.AffinityLost, o.Row.ID)
	}
	return nil
}
