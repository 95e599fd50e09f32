// Package engine is the one implementation of store.Store: it validates
// what is created (errand.ValidateBatch), decides every change of a task
// with errand.Transition and errand.Resolve, keeps outcomes by the rules
// of store's outcome.go, releases dependents in the transaction that ends
// their dependency, and counts approvals on gates. Below it a
// store.Driver (sqlite, postgres) reads and writes rows and decides
// nothing.
package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// Engine is a store.Store over a driver. The driver's row methods
// (store.DriverRows) are served as they are.
type Engine struct {
	store.DriverRows
	d store.Driver
	// reports holds the reports waiting to be applied together.
	reports reportQueue
}

var _ store.Store = (*Engine)(nil)

// New returns the engine over d. Closing the engine closes d.
func New(d store.Driver) *Engine {
	return &Engine{DriverRows: d, d: d, reports: reportQueue{sem: make(chan struct{}, reportBatches)}}
}

// Driver returns the driver the engine runs on.
func (e *Engine) Driver() store.Driver { return e.d }

// maxStaleRetries bounds how often a write whose row changed underneath
// (a stale cached row) is decided afresh.
const maxStaleRetries = 3

// write runs fn in a driver transaction, again when a conditional write
// found its row changed since it was read.
func (e *Engine) write(ctx context.Context, fn func(tx store.DriverTx) error) error {
	for attempt := 0; ; attempt++ {
		err := e.d.Write(ctx, fn)
		if !errors.Is(err, store.ErrStale) || attempt >= maxStaleRetries {
			return err
		}
	}
}

// TaskCreate inserts a batch of tasks atomically.
func (e *Engine) TaskCreate(ctx context.Context, p store.TaskCreateParams) ([]*errand.Task, error) {
	order, err := errand.BatchOrder(p.Tasks)
	if err != nil {
		return nil, err
	}
	var out []*errand.Task
	err = e.write(ctx, func(tx store.DriverTx) error {
		refs, paths := outsideRefs(p.Tasks)
		outside, err := tx.TaskStates(refs)
		if err != nil {
			return fmt.Errorf("create tasks: %w", err)
		}
		for _, ref := range refs {
			if _, ok := outside[ref]; !ok {
				return errand.Errorf(errand.CodeInvalid, "%s: unknown task %s", paths[ref], ref)
			}
		}
		out, err = insertBatch(tx, p.Tasks, order, outside, p.Now)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// outsideRefs lists the tasks outside the batch that the batch refers to
// (dependencies and affinities), each with the path of its first
// reference.
func outsideRefs(tasks []*errand.Task) ([]string, map[string]string) {
	inBatch := make(map[string]bool, len(tasks))
	for _, t := range tasks {
		inBatch[t.ID] = true
	}
	paths := map[string]string{}
	var refs []string
	add := func(id, path string) {
		if inBatch[id] {
			return
		}
		if _, seen := paths[id]; !seen {
			paths[id] = path
			refs = append(refs, id)
		}
	}
	for i, t := range tasks {
		for j, d := range t.DependsOn {
			add(d.Task, fmt.Sprintf("tasks[%d].depends_on[%d].task", i, j))
		}
		if t.Affinity != "" {
			add(t.Affinity, fmt.Sprintf("tasks[%d].affinity", i))
		}
	}
	return refs, paths
}

// insertBatch decides the state of each new task, after the batch tasks
// it depends on (order), and inserts them in the batch's own order.
func insertBatch(tx store.DriverTx, tasks []*errand.Task, order []int, outside map[string]errand.State, now time.Time) ([]*errand.Task, error) {
	depended := map[string]bool{}
	for _, t := range tasks {
		for _, d := range t.DependsOn {
			depended[d.Task] = true
		}
	}
	decided := make(map[string]errand.State, len(tasks))
	rows := make([]*store.TaskRow, len(tasks))
	for _, i := range order {
		row, err := newRow(tasks[i], outside, decided, now)
		if err != nil {
			return nil, fmt.Errorf("create task %s: %w", tasks[i].ID, err)
		}
		row.HasDependents = depended[row.ID]
		decided[row.ID] = row.State
		rows[i] = row
	}
	if err := tx.TaskInsert(rows); err != nil {
		if errors.Is(err, errand.ErrConflict) {
			return nil, err
		}
		return nil, fmt.Errorf("create tasks: %w", err)
	}
	out := make([]*errand.Task, len(rows))
	for i, row := range rows {
		out[i] = row.Detached()
		switch {
		case row.State == errand.StateQueued:
			tx.Emit(store.Change{Kind: store.ChangeTaskQueued, TaskID: row.ID, TaskType: row.Type})
		case row.State.Terminal():
			tx.Emit(store.Change{Kind: store.ChangeTaskEnded, TaskID: row.ID, Ended: out[i]})
		case row.State == errand.StateWaiting:
			tx.Emit(store.Change{Kind: store.ChangeTaskWaiting, TaskID: row.ID, TaskType: row.Type})
		}
	}
	emitCreated(tx, rows)
	return out, nil
}

// emitCreated announces the new rows: one ChangeTaskCreated per type and
// state, in the order they first appear in the batch.
func emitCreated(tx store.DriverTx, rows []*store.TaskRow) {
	type group struct {
		typ   string
		state errand.State
	}
	var order []group
	count := map[group]int{}
	for _, row := range rows {
		g := group{row.Type, row.State}
		if count[g] == 0 {
			order = append(order, g)
		}
		count[g]++
	}
	for _, g := range order {
		tx.Emit(store.Change{Kind: store.ChangeTaskCreated, TaskType: g.typ, TaskState: g.state, Count: count[g]})
	}
}

// newRow decides the state a new task starts in: resolved at once when
// every dependency has already ended (in the store or earlier in the
// batch), pending otherwise.
func newRow(t *errand.Task, outside, decided map[string]errand.State, now time.Time) (*store.TaskRow, error) {
	maxAttempts := t.MaxAttempts
	if maxAttempts == 0 {
		maxAttempts = errand.DefaultMaxAttempts
	}
	st := errand.Status{State: errand.StatePending, MaxAttempts: maxAttempts, Approvals: t.Approvals}
	outcomes := make([]errand.DependencyOutcome, len(t.DependsOn))
	for j, d := range t.DependsOn {
		ds, ok := decided[d.Task]
		if !ok {
			ds = outside[d.Task]
		}
		outcomes[j] = errand.DependencyOutcome{Condition: d.Condition, State: ds}
	}
	if ev, ok := resolveEvent(errand.Resolve(outcomes)); ok {
		next, err := errand.Transition(st, ev)
		if err != nil {
			return nil, err
		}
		st = next
	}
	row := &store.TaskRow{Task: errand.Task{Kind: errand.KindTask, ID: t.ID, Type: t.Type, Data: t.Data,
		Selector: t.Selector, DependsOn: t.DependsOn, Affinity: t.Affinity, Priority: t.Priority,
		Timeout: t.Timeout, MaxAttempts: maxAttempts, RunID: t.RunID, State: st.State,
		Approvals: t.Approvals, Approved: st.Approved, CreatedAt: now.UTC()}}
	at := now.UTC()
	switch {
	case st.State == errand.StateQueued:
		row.QueuedAt = &at
	case st.State.Terminal():
		row.FinishedAt = &at
		code, reason := store.OutcomeError(nil, st, nil)
		row.Error = &errand.Error{Code: code, Reason: reason}
	}
	return row, nil
}

func resolveEvent(r errand.Readiness) (errand.Event, bool) {
	switch r {
	case errand.Ready:
		return errand.EventDepsMet, true
	case errand.Skip:
		return errand.EventDepsUnmet, true
	}
	return "", false
}

// TaskReport applies a delegate's report under its lease. Reports that
// arrive together are applied together (see report.go).
func (e *Engine) TaskReport(ctx context.Context, p store.TaskReportParams) (*errand.Task, error) {
	ev, err := reportEvent(p)
	if err != nil {
		return nil, err
	}
	return e.report(ctx, p, ev)
}

// reportEvent checks a report on its own and returns its event.
func reportEvent(p store.TaskReportParams) (errand.Event, error) {
	ev, ok := errand.EventForReport(p.State)
	if !ok {
		return ev, errand.Errorf(errand.CodeInvalid, "state: a delegate cannot report %q", p.State)
	}
	if len(p.Result) > 0 && !json.Valid(p.Result) {
		return ev, errand.Errorf(errand.CodeInvalid, "result: not JSON")
	}
	return ev, nil
}

// reportOne applies one report in a transaction of its own; same is set
// when it changed nothing (a retry).
func (e *Engine) reportOne(ctx context.Context, p store.TaskReportParams, ev errand.Event) (out *errand.Task, same bool, err error) {
	err = e.write(ctx, func(tx store.DriverTx) error {
		row, err := tx.TaskRow(p.TaskID)
		if err != nil {
			return err
		}
		next, unchanged, err := decideReport(row, p, ev)
		same = unchanged
		if err != nil || same {
			out = row.Detached()
			return err
		}
		out, err = Apply(tx, row, next, Extras{Result: p.Result, Err: p.Error}, p.Now)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	return out, same, nil
}

// decideReport is the rule of a report on a task read as row: the lease
// must be current and the delegate's, a report of the state the task is
// in is a retry that changes nothing (same), and the state machine
// decides the rest.
func decideReport(row *store.TaskRow, p store.TaskReportParams, ev errand.Event) (next errand.Status, same bool, err error) {
	if !store.LeaseMatches(row.LeaseToken, p.LeaseToken) {
		return next, false, errand.Errorf(errand.CodeLeaseLost, "task %s: lease is not current", p.TaskID)
	}
	if row.DelegateID != p.DelegateID {
		return next, false, errand.Errorf(errand.CodeForbidden, "task %s: leased to another delegate", p.TaskID)
	}
	if row.State == p.State {
		return next, true, nil
	}
	next, err = errand.Transition(row.Status(), ev)
	if err != nil {
		return next, false, fmt.Errorf("report task %s: %w", p.TaskID, err)
	}
	return next, false, nil
}

// TaskCancel cancels a task or asks its delegate to stop it.
func (e *Engine) TaskCancel(ctx context.Context, p store.TaskCancelParams) (*errand.Task, error) {
	var out *errand.Task
	err := e.write(ctx, func(tx store.DriverTx) error {
		row, err := tx.TaskRow(p.TaskID)
		if err != nil {
			return err
		}
		next, err := errand.Transition(row.Status(), errand.EventCancel)
		if err != nil {
			return fmt.Errorf("cancel task %s: %w", p.TaskID, err)
		}
		if next == row.Status() {
			out = row.Detached()
			return nil
		}
		if out, err = Apply(tx, row, next, Extras{}, p.Now); err != nil {
			return err
		}
		if next.CancelRequested && !next.State.Terminal() {
			tx.Emit(store.Change{Kind: store.ChangeCancelRequested, TaskID: row.ID, DelegateID: row.DelegateID})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Extras carries what a transition stores beside the status.
type Extras struct {
	// Result and Err are what a delegate reported.
	Result json.RawMessage
	Err    *errand.Error
	// ClearLease ends the lease: its token no longer reports.
	ClearLease bool
}

// Apply persists next for a task read as row in tx: the outcome the task
// keeps, its times, the change it makes, and, when it ends, the release
// of its dependents in the same transaction. It returns the task as
// written.
func Apply(tx store.DriverTx, row *store.TaskRow, next errand.Status, x Extras, now time.Time) (*errand.Task, error) {
	n := outcome(row, next, x, now)
	if err := tx.TaskUpdate(row, n); err != nil {
		if errors.Is(err, store.ErrStale) {
			return nil, err
		}
		return nil, fmt.Errorf("update task %s: %w", row.ID, err)
	}
	if err := written(tx, row, n, now); err != nil {
		return nil, err
	}
	return n.Detached(), nil
}

// outcome returns the row a task read as row becomes when it takes next:
// the error and result it keeps, its times, its lease.
func outcome(row *store.TaskRow, next errand.Status, x Extras, now time.Time) *store.TaskRow {
	n := *row
	at := now.UTC()
	code, reason := store.OutcomeError(row.Error, next, x.Err)
	n.Error = nil
	if code != "" {
		n.Error = &errand.Error{Code: code, Reason: reason}
	}
	if next.State.Terminal() {
		n.FinishedAt = &at
	}
	if next.State == errand.StateQueued {
		n.QueuedAt = &at
	}
	if next.State == errand.StateRunning && row.State != errand.StateRunning {
		n.StartedAt = &at
	}
	n.Result = store.OutcomeResult(row.Result, next, x.Result)
	if x.ClearLease {
		n.LeaseToken = ""
	}
	n.State, n.Attempt, n.CancelRequested, n.Approved = next.State, next.Attempt, next.CancelRequested, next.Approved
	return &n
}

// written announces the change of a row written from row to n, and
// releases the dependents of a task that ended, in the same transaction.
func written(tx store.DriverTx, row, n *store.TaskRow, now time.Time) error {
	switch {
	case n.State == errand.StateQueued:
		tx.Emit(store.Change{Kind: store.ChangeTaskQueued, TaskID: row.ID, TaskType: row.Type})
	case n.State == errand.StateWaiting && row.State != errand.StateWaiting:
		tx.Emit(store.Change{Kind: store.ChangeTaskWaiting, TaskID: row.ID, TaskType: row.Type})
	case n.State.Terminal():
		tx.Emit(store.Change{Kind: store.ChangeTaskEnded, TaskID: row.ID, Ended: n.Detached()})
		if row.HasDependents {
			return releaseDependents(tx, row.ID, now)
		}
	}
	return nil
}

// releaseDependents resolves the pending tasks that depend on a task that
// just ended. A dependent this skips ends too, and Apply releases its own
// dependents in turn, so skips travel down whole chains.
func releaseDependents(tx store.DriverTx, endedID string, now time.Time) error {
	dependents, err := tx.TaskPendingDependents(endedID)
	if err != nil {
		return fmt.Errorf("dependents of %s: %w", endedID, err)
	}
	for _, id := range dependents {
		if err := resolvePending(tx, id, now); err != nil {
			return err
		}
	}
	return nil
}

// resolvePending decides a pending task from its dependencies' states.
func resolvePending(tx store.DriverTx, id string, now time.Time) error {
	row, err := tx.TaskRow(id)
	if err != nil {
		return err
	}
	// A cascade may already have decided it: the dependents of an ended
	// task were listed before the first of them was resolved.
	if row.State != errand.StatePending {
		return nil
	}
	outcomes, err := tx.TaskDependencyOutcomes(id)
	if err != nil {
		return fmt.Errorf("dependencies of %s: %w", id, err)
	}
	ev, ok := resolveEvent(errand.Resolve(outcomes))
	if !ok {
		return nil
	}
	next, err := errand.Transition(row.Status(), ev)
	if err != nil {
		return fmt.Errorf("resolve task %s: %w", id, err)
	}
	_, err = Apply(tx, row, next, Extras{}, now)
	return err
}

// RunCreate inserts a run and its tasks in one transaction.
func (e *Engine) RunCreate(ctx context.Context, p store.RunCreateParams) ([]*errand.Task, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	order, err := errand.BatchOrder(p.Tasks)
	if err != nil {
		return nil, err
	}
	var out []*errand.Task
	err = e.write(ctx, func(tx store.DriverTx) error {
		if err := tx.RunInsert(p.Run, p.Now); err != nil {
			if errors.Is(err, errand.ErrConflict) {
				return err
			}
			return fmt.Errorf("create run %s: %w", p.Run.ID, err)
		}
		outside, err := originInsert(tx, p.Run, p.Tasks)
		if err != nil {
			return err
		}
		// The tasks refer only to each other (p.Check), or to ended
		// tasks of the runs the run uses: every dependency is decided.
		out, err = insertBatch(tx, p.Tasks, order, outside, p.Now)
		if err != nil && !errors.Is(err, errand.ErrConflict) {
			return fmt.Errorf("create run %s: %w", p.Run.ID, err)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	p.Run.CreatedAt = p.Now.UTC()
	if out == nil {
		out = []*errand.Task{}
	}
	return out, nil
}

// RunApprove records an approval, counts it on the stage's gate, and
// returns the stage's approver count.
func (e *Engine) RunApprove(ctx context.Context, p store.RunApproveParams) (int, error) {
	if p.Stage == "" || p.Approver == "" || len(p.Approver) > store.MaxRunApprover {
		return 0, errand.Errorf(errand.CodeInvalid, "approve: a stage and an approver of 1 to %d characters are required", store.MaxRunApprover)
	}
	var count int
	err := e.write(ctx, func(tx store.DriverTx) error {
		added, err := tx.RunApprovalAdd(p)
		if err != nil {
			return err
		}
		if p.TaskID != "" && added {
			if err := approveGate(tx, p); err != nil {
				return err
			}
		}
		if count, err = tx.RunApprovalCount(p.RunID, p.Stage); err != nil {
			return fmt.Errorf("approve run %s: %w", p.RunID, err)
		}
		return nil
	})
	return count, err
}

// approveGate counts a new approver on a stage's gate; a gate that has
// its approvers succeeds and releases the stage.
func approveGate(tx store.DriverTx, p store.RunApproveParams) error {
	row, err := tx.TaskRow(p.TaskID)
	if err != nil {
		return err
	}
	if row.RunID != p.RunID || row.Approvals <= 0 {
		return errand.Errorf(errand.CodeInvalid, "approve: task %s is not an approval gate of run %s", p.TaskID, p.RunID)
	}
	next, err := errand.Transition(row.Status(), errand.EventApprove)
	if err != nil {
		return fmt.Errorf("approve task %s: %w", p.TaskID, err)
	}
	_, err = Apply(tx, row, next, Extras{}, p.Now)
	return err
}
