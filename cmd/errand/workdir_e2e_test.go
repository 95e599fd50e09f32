package main

import (
	"os"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/testenv"
	"github.com/errandci/errand/tasks"
)

// A step links a directory outside the workspace into it; the next step's
// working_dir through that link is refused, and nothing is created
// outside the workspace.
func TestE2EWorkingDirThroughLinkCreatesNothingOutside(t *testing.T) {
	m := fastManager(t)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	startDelegate(t, m, "linker", t.TempDir())
	waitActive(t, admin, "linker")
	outside := t.TempDir()

	link := tasks.ExecuteData{Step: "link", Commands: []string{`ln -s "$OUTSIDE" "$ERRAND_WORKSPACE/link"`},
		Environment: map[string]string{"OUTSIDE": outside}}
	through := tasks.ExecuteData{Step: "through", Commands: []string{"touch made-here"}, WorkingDir: "link/new/dir"}
	execStage(t, admin, "wd", true, link, through)

	if s := waitState(t, admin, "wd-step0", 30*time.Second); s.State != errand.StateSucceeded {
		t.Fatalf("link step %s %+v", s.State, s.Error)
	}
	s := waitState(t, admin, "wd-step1", 30*time.Second)
	if s.State != errand.StateFailed || s.Error == nil || s.Error.Code != errand.CodeInvalid {
		t.Fatalf("step through the link: %s %+v; want failed invalid", s.State, s.Error)
	}
	if entries, err := os.ReadDir(outside); err != nil || len(entries) != 0 {
		t.Fatalf("outside the workspace: %v %v; want nothing", entries, err)
	}
	if c := waitState(t, admin, "wd-cleanup", 30*time.Second); c.State != errand.StateSucceeded {
		t.Fatalf("cleanup %s %+v", c.State, c.Error)
	}
}
