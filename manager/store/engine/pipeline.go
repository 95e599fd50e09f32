package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// originInsert records where a run came from, in the transaction that
// creates it: its number, when it is a run of a pipeline, is taken
// there. It returns the states of the tasks outside the run that its
// tasks depend on, each an ended task of a run the run uses.
func originInsert(tx store.DriverTx, r *store.Run, tasks []*errand.Task) (map[string]errand.State, error) {
	if r.Origin == nil {
		return nil, nil
	}
	if err := tx.RunOriginInsert(r.ID, r.Origin); err != nil {
		if errors.Is(err, errand.ErrNotFound) {
			return nil, err
		}
		return nil, fmt.Errorf("create run %s: %w", r.ID, err)
	}
	refs, paths := outsideRefs(tasks)
	if len(refs) == 0 {
		return nil, nil
	}
	rows, err := tx.TaskRows(refs)
	if err != nil {
		return nil, fmt.Errorf("create run %s: %w", r.ID, err)
	}
	outside := make(map[string]errand.State, len(refs))
	for _, id := range refs {
		row, ok := rows[id]
		switch {
		case !ok:
			return nil, errand.Errorf(errand.CodeInvalid, "%s: unknown task %s", paths[id], id)
		case !slices.Contains(r.Origin.Uses, row.RunID):
			return nil, errand.Errorf(errand.CodeInvalid, "%s: task %s is not a task of the run or of a run it uses", paths[id], id)
		case !row.State.Terminal():
			return nil, errand.Errorf(errand.CodeInvalid, "%s: task %s of run %s has not ended", paths[id], id, row.RunID)
		}
		outside[id] = row.State
	}
	return outside, nil
}

// RunGet returns one run with its origin.
func (e *Engine) RunGet(ctx context.Context, id string) (*store.Run, error) {
	r, err := e.DriverRows.RunGet(ctx, id)
	if err != nil {
		return nil, err
	}
	return r, e.addOrigins(ctx, []*store.Run{r})
}

// RunList returns runs, newest first, with their origins.
func (e *Engine) RunList(ctx context.Context, p store.RunListParams) ([]*store.Run, error) {
	runs, err := e.DriverRows.RunList(ctx, p)
	if err != nil {
		return nil, err
	}
	return runs, e.addOrigins(ctx, runs)
}

// RunCancel marks a run cancelled and returns it with its origin.
func (e *Engine) RunCancel(ctx context.Context, p store.RunCancelParams) (*store.Run, error) {
	r, err := e.DriverRows.RunCancel(ctx, p)
	if err != nil {
		return nil, err
	}
	return r, e.addOrigins(ctx, []*store.Run{r})
}

// PipelineRunList returns the runs of a pipeline with their origins.
func (e *Engine) PipelineRunList(ctx context.Context, p store.PipelineRunListParams) ([]*store.Run, error) {
	runs, err := e.DriverRows.PipelineRunList(ctx, p)
	if err != nil {
		return nil, err
	}
	return runs, e.addOrigins(ctx, runs)
}

// addOrigins sets the Origin of the runs that have one.
func (e *Engine) addOrigins(ctx context.Context, runs []*store.Run) error {
	if len(runs) == 0 {
		return nil
	}
	ids := make([]string, len(runs))
	for i, r := range runs {
		ids[i] = r.ID
	}
	origins, err := e.DriverRows.RunOrigins(ctx, ids)
	if err != nil {
		return fmt.Errorf("origins of runs: %w", err)
	}
	for _, r := range runs {
		r.Origin = origins[r.ID]
	}
	return nil
}
