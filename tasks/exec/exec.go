// Package exec runs a stage's steps as host processes: exec.initialize
// creates a workspace directory (empty, or a copy of the configured source
// directory), exec.execute runs one step's commands in it as a shell
// script in a process group of its own, and exec.cleanup removes the
// workspace. The handlers keep no state between tasks: execute and cleanup
// find the workspace in initialize's result.
//
// The package is a tasks/runtime driver: the task handlers (decoding,
// exit codes, output and masking, stopping) are the runtime's, served by
// Handlers.Register and Handlers.Runtime.
package exec

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/workspace"
	"github.com/errandci/errand/router"
	"github.com/errandci/errand/tasks"
	"github.com/errandci/errand/tasks/runtime"
)

// DefaultShell reads a step's commands: the first that fails ends it.
const DefaultShell = runtime.DefaultShell

// DefaultKillGrace is how long a step's processes have between SIGTERM and
// SIGKILL when the step is cancelled or times out.
const DefaultKillGrace = 5 * time.Second

// Handlers serves the exec task types for one state directory.
type Handlers struct {
	// Root is the directory under which workspaces are created:
	// <state dir>/workspaces.
	Root string
	// KillGrace is the time between SIGTERM and SIGKILL.
	KillGrace time.Duration
	// AllowPrivileged lets stages that ask to be privileged start; a
	// delegate not started with --allow-privileged refuses them at
	// initialize, whatever their runtime.
	AllowPrivileged bool
	// Source, when set, is the project directory a stage's workspace
	// starts as: a copy of it (see internal/workspace), or the directory
	// itself with Bind. It is the delegate's configuration, never taken
	// from a task, so that a task cannot make the delegate read or write
	// an arbitrary host path. Empty: workspaces start empty.
	Source string
	// Bind runs the steps in Source itself instead of a copy; cleanup
	// never removes it.
	Bind bool
	// Exclude holds paths left out of the copies of Source (e.g. a data
	// dir inside the project). Root is always left out.
	Exclude []string
	// Git configures the checkout of a stage's Git source, which the
	// workspace then starts as instead of empty or a copy of Source.
	Git runtime.GitOptions

	// Steps is the directory where the process groups of running steps
	// are recorded, for KillLeftovers: <state dir>/steps. Empty: they
	// are not recorded.
	Steps string
	// Log receives what the handlers report outside a task's log;
	// logrus.StandardLogger() when nil.
	Log logrus.FieldLogger
	// Artifacts moves the stages' artifacts to and from the manager.
	Artifacts runtime.ArtifactTransfer

	// groups holds the process groups of the steps running now, for Kill.
	mu     sync.Mutex
	groups map[int]struct{}

	ownerOnce sync.Once
	owner     string
	ownerErr  error
}

// Kill sends SIGKILL to the process groups of every step running now. It
// is for a process that must end at once (a second Ctrl-C) and would
// otherwise leave them running.
func (h *Handlers) Kill() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for pgid := range h.groups {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}

func (h *Handlers) track(pgid int, running bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.groups == nil {
		h.groups = map[int]struct{}{}
	}
	if running {
		h.groups[pgid] = struct{}{}
	} else {
		delete(h.groups, pgid)
	}
}

// New returns the handlers for workspaces under stateDir/workspaces,
// recording running steps under stateDir/steps.
func New(stateDir string) *Handlers {
	return &Handlers{
		Root:      filepath.Join(stateDir, "workspaces"),
		Steps:     filepath.Join(stateDir, "steps"),
		KillGrace: DefaultKillGrace,
	}
}

// Register adds the exec task types to r, with workspaces under
// stateDir/workspaces.
func Register(r *router.Router, stateDir string) {
	New(stateDir).Register(r)
}

// Register adds the exec task types to r.
func (h *Handlers) Register(r *router.Router) {
	h.Runtime().Register(r)
}

// Runtime returns the handlers of the exec task types: the runtime's
// handlers over this driver, with the kill grace as it is now.
func (h *Handlers) Runtime() *runtime.Handlers {
	return &runtime.Handlers{Driver: driver{h}, StopGrace: h.killGrace(), Log: h.logger(), Git: h.Git, Artifacts: h.Artifacts}
}

// driver is the exec runtime.Driver: the name of its task types is
// "exec".
type driver struct{ h *Handlers }

func (driver) Name() string { return "exec" }

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// sanitize turns a run or stage name into one safe path element.
func sanitize(s string) string {
	s = unsafeChars.ReplaceAllString(s, "_")
	s = strings.TrimLeft(s, ".")
	if s == "" {
		return "_"
	}
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

// makeWorkspace creates dir and its parents. The run's directory is
// shared by its stages, and a sibling stage's cleanup removes it once it
// is empty, possibly between the creation of the parent and of dir: then
// the parent is made again.
func makeWorkspace(dir string) error {
	var err error
	for range 5 {
		if err = os.MkdirAll(dir, 0o750); !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return err
}

// Initialize creates the stage's workspace and answers with its path.
func (d driver) Initialize(ctx context.Context, s *runtime.Init) (*tasks.InitializeResult, error) {
	h, data := d.h, s.Data
	if data.Privileged && !h.AllowPrivileged {
		return nil, errand.Errorf(errand.CodeForbidden, "stage %s asks to be privileged; this delegate was not started with --allow-privileged", data.Stage.Stage)
	}
	if src, ok := h.bound(); ok {
		if s.Checkout != nil {
			return nil, errand.Errorf(errand.CodeInvalid, "stage %s has a Git source; this delegate runs steps in its project directory itself (--bind)", data.Stage.Stage)
		}
		fmt.Fprintf(s.Log, "workspace %s (the project itself: steps change its files)\n", src)
		return &tasks.InitializeResult{Workspace: src}, nil
	}
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	dir := filepath.Join(h.Root, sanitize(data.RunID), sanitize(data.Stage.Stage)+"-"+hex.EncodeToString(suffix))
	if _, err := h.inside(dir); err != nil {
		return nil, err
	}
	if err := makeWorkspace(dir); err != nil {
		return nil, errand.Errorf(errand.CodeTaskFailed, "create workspace: %v", err)
	}
	if s.Checkout != nil {
		if err := s.Checkout.Into(ctx, dir); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		fmt.Fprintf(s.Log, "workspace %s (a checkout of %s)\n", dir, s.Checkout.Source.Commit)
		return &tasks.InitializeResult{Workspace: dir}, nil
	}
	if h.Source != "" {
		opts := workspace.Options{Exclude: append([]string{h.Root}, h.Exclude...)}
		if err := workspace.CopyWith(ctx, h.Source, dir, opts); err != nil {
			_ = os.RemoveAll(dir)
			return nil, errand.Errorf(errand.CodeTaskFailed, "copy %s into the workspace: %v", h.Source, err)
		}
		fmt.Fprintf(s.Log, "workspace %s (a copy of %s)\n", dir, h.Source)
		return &tasks.InitializeResult{Workspace: dir}, nil
	}
	fmt.Fprintf(s.Log, "workspace %s\n", dir)
	return &tasks.InitializeResult{Workspace: dir}, nil
}

// bound returns the absolute source directory when steps run in it.
func (h *Handlers) bound() (string, bool) {
	if !h.Bind || h.Source == "" {
		return "", false
	}
	src, err := filepath.Abs(h.Source)
	return src, err == nil
}

// inside checks that path is strictly under h.Root, symbolic links
// resolved as far as they exist, and returns it cleaned.
func (h *Handlers) inside(path string) (string, error) {
	root, err := filepath.Abs(h.Root)
	if err != nil {
		return "", fmt.Errorf("workspaces root: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", errand.Errorf(errand.CodeInvalid, "path %q: %v", path, err)
	}
	if !within(root, abs) {
		return "", errand.Errorf(errand.CodeInvalid, "path %q is outside the workspaces root %s", path, root)
	}
	// A link inside the root may still point out of it.
	if realRoot, err := filepath.EvalSymlinks(root); err == nil {
		if real, err := filepath.EvalSymlinks(abs); err == nil && !within(realRoot, real) {
			return "", errand.Errorf(errand.CodeInvalid, "path %q leads outside the workspaces root", path)
		}
	}
	return abs, nil
}

// within reports whether path is strictly below root.
func within(root, path string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// workspace checks the stage's workspace named by its initialize
// result.
func (h *Handlers) workspace(init *tasks.InitializeResult) (string, error) {
	if init.Workspace == "" {
		return "", errand.Errorf(errand.CodeInvalid, "initialize result names no workspace")
	}
	// The configured source is the one path outside Root a task may name.
	if src, ok := h.bound(); ok && filepath.Clean(init.Workspace) == src {
		return src, nil
	}
	return h.inside(init.Workspace)
}

// Cleanup removes the stage's workspace. A stage whose initialize did not
// succeed has nothing to remove.
func (d driver) Cleanup(_ context.Context, s *runtime.Cleanup) (*tasks.CleanupResult, error) {
	h := d.h
	if s.Init.State != errand.StateSucceeded {
		return &tasks.CleanupResult{}, nil
	}
	init, err := tasks.InitializeResultFrom([]errand.DependencyResult{s.Init})
	if err != nil {
		return nil, errand.Errorf(errand.CodeInvalid, "find workspace: %v", err)
	}
	dir, err := h.workspace(init)
	if err != nil {
		return nil, err
	}
	if src, ok := h.bound(); ok && dir == src {
		return &tasks.CleanupResult{}, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, errand.Errorf(errand.CodeTaskFailed, "remove workspace: %v", err)
	}
	// The run's directory goes with its last stage; Remove fails while
	// another stage still has its workspace there.
	if parent := filepath.Dir(dir); within(h.Root, parent) {
		_ = os.Remove(parent)
	}
	fmt.Fprintf(s.Log, "removed workspace %s\n", dir)
	return &tasks.CleanupResult{Removed: []string{dir}}, nil
}
