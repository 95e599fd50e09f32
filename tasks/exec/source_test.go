package exec_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/tasks"
)

func TestWorkspaceFromSource(t *testing.T) {
	project := t.TempDir()
	if err := os.WriteFile(filepath.Join(project, "a.txt"), []byte("from the project\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, bind := range []bool{false, true} {
		e := newEnv(t)
		e.h.Source, e.h.Bind = project, bind
		dep, ws := e.initialize("r1", "build")
		if (ws == project) != bind {
			t.Fatalf("bind %v: workspace %s, project %s", bind, ws, project)
		}
		out, logs := e.serve(context.Background(), errand.TypeExecExecute, step("cat a.txt", "echo new > b.txt"), dep)
		if out.State != errand.StateSucceeded || logs != "from the project\n" {
			t.Fatalf("bind %v: %+v %q", bind, out, logs)
		}
		_, err := os.Stat(filepath.Join(project, "b.txt"))
		if bind != (err == nil) {
			t.Fatalf("bind %v: b.txt in the project: %v", bind, err)
		}
		if out, _ := e.serve(context.Background(), errand.TypeExecCleanup, tasks.CleanupData{}, dep); out.State != errand.StateSucceeded {
			t.Fatalf("cleanup: %+v", out)
		}
		if _, err := os.Stat(filepath.Join(project, "a.txt")); err != nil {
			t.Fatalf("bind %v: cleanup touched the project: %v", bind, err)
		}
		if _, err := os.Stat(ws); bind != (err == nil) {
			t.Fatalf("bind %v: workspace %s after cleanup: %v", bind, ws, err)
		}
	}
}

// A task naming a host path as its workspace is refused, bound or not:
// only the delegate's own configuration chooses the source.
func TestWorkspaceFromTaskRefused(t *testing.T) {
	project, other := t.TempDir(), t.TempDir()
	e := newEnv(t)
	e.h.Source, e.h.Bind = project, true
	res, _ := json.Marshal(tasks.InitializeResult{Workspace: other})
	dep := errand.DependencyResult{Task: "i", Type: errand.TypeExecInitialize, State: errand.StateSucceeded, Result: res}
	if out, _ := e.serve(context.Background(), errand.TypeExecExecute, step("touch x"), dep); out.State != errand.StateFailed || out.Error.Code != errand.CodeInvalid {
		t.Fatalf("execute in %s: %+v", other, out)
	}
	if out, _ := e.serve(context.Background(), errand.TypeExecCleanup, tasks.CleanupData{}, dep); out.State != errand.StateFailed {
		t.Fatalf("cleanup of %s: %+v", other, out)
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatal(err)
	}
}
