package exec

import (
	"context"
	"fmt"
	"io"

	"github.com/errandci/errand/internal/workspace"
	"github.com/errandci/errand/tasks/runtime"
)

// WorkspaceExport streams entries of the stage's workspace directory,
// read through an os.Root of it.
func (d driver) WorkspaceExport(ctx context.Context, ws *runtime.Workspace, paths []string) (io.ReadCloser, error) {
	dir, err := d.h.workspace(ws.Result)
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		if _, err := workspace.CleanPath(p); err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(workspace.TarPaths(ctx, dir, paths, pw, workspace.Options{}))
	}()
	return pr, nil
}

// WorkspaceImport extracts a tar stream into the stage's workspace
// directory, written through an os.Root of it.
func (d driver) WorkspaceImport(ctx context.Context, ws *runtime.Workspace, r io.Reader) error {
	dir, err := d.h.workspace(ws.Result)
	if err != nil {
		return err
	}
	if err := workspace.Untar(ctx, dir, r, workspace.Options{}); err != nil {
		return fmt.Errorf("extract into the workspace: %w", err)
	}
	return nil
}
