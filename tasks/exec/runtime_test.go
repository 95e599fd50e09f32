package exec_test

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/tasks"
	"github.com/errandci/errand/tasks/exec"
	"github.com/errandci/errand/tasks/runtime"
	"github.com/errandci/errand/tasks/runtime/runtimetest"
)

// The host runtime passes the runtime conformance suite.
func TestRuntime(t *testing.T) {
	state := t.TempDir()
	runtimetest.Run(t, runtimetest.Runtime{
		New: func(*testing.T) *runtime.Handlers {
			h := exec.New(state)
			h.KillGrace = 300 * time.Millisecond
			return h.Runtime()
		},
		Stage: func() tasks.InitializeData {
			return tasks.InitializeData{Stage: tasks.Stage{RunID: "r1", Stage: "build"}}
		},
		Workspace: func(res tasks.InitializeResult) string { return res.Workspace },
		Remains: func(t *testing.T, init errand.DependencyResult) []string {
			var res tasks.InitializeResult
			if err := json.Unmarshal(init.Result, &res); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(res.Workspace); err == nil {
				return []string{"workspace " + res.Workspace}
			}
			return nil
		},
	})
}
