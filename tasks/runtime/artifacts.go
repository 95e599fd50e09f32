package runtime

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/tasks"
)

// ArtifactTransfer moves artifacts between the manager and a stage's
// workspace, under a task's lease (client.HTTP is one).
type ArtifactTransfer interface {
	// UploadArtifacts streams a tar of a task's artifacts; the manager
	// keeps all of them or none.
	UploadArtifacts(ctx context.Context, taskID, lease string, tar io.Reader) (*client.ArtifactList, error)
	// NeededArtifacts opens a tar of the artifacts a stage's initialize
	// task needs.
	NeededArtifacts(ctx context.Context, taskID, lease string) (io.ReadCloser, error)
}

// ArtifactsFunc is an ArtifactTransfer found at each call: a delegate's
// own client exists only once it registered.
type ArtifactsFunc func() (ArtifactTransfer, error)

// UploadArtifacts uploads through the transfer f returns.
func (f ArtifactsFunc) UploadArtifacts(ctx context.Context, taskID, lease string, tar io.Reader) (*client.ArtifactList, error) {
	t, err := f()
	if err != nil {
		return nil, err
	}
	return t.UploadArtifacts(ctx, taskID, lease, tar)
}

// NeededArtifacts downloads through the transfer f returns.
func (f ArtifactsFunc) NeededArtifacts(ctx context.Context, taskID, lease string) (io.ReadCloser, error) {
	t, err := f()
	if err != nil {
		return nil, err
	}
	return t.NeededArtifacts(ctx, taskID, lease)
}

func leaseOf(t *errand.Task) string {
	if t.Lease == nil {
		return ""
	}
	return t.Lease.Token
}

// keepArtifacts collects the entries of the workspace that spec matches
// (links recorded, never followed) and uploads them, after a step or a
// stage that failed or not. It returns nil when spec does not apply to
// that outcome, and says in the task's log what it kept or why not.
func (h *Handlers) keepArtifacts(ctx context.Context, t *errand.Task, spec *tasks.Artifacts, ws *Workspace, failed bool, logs io.Writer) *tasks.ArtifactsResult {
	if spec == nil || !spec.Applies(failed) {
		return nil
	}
	res := &tasks.ArtifactsResult{}
	err := h.uploadArtifacts(ctx, t, spec, ws, res)
	if err == nil && res.Files == 0 {
		err = fmt.Errorf("no file matches %s", strings.Join(spec.Paths, ", "))
	}
	if err != nil {
		res.Error = err.Error()
		var e *errand.Error
		if errors.As(err, &e) {
			// The manager's reason names the file and the limit.
			res.Error = e.Reason
		}
		fmt.Fprintf(logs, "artifacts: not kept: %s\n", res.Error)
		return res
	}
	fmt.Fprintf(logs, "artifacts: kept %d files (%d bytes)\n", res.Files, res.Bytes)
	return res
}

func (h *Handlers) uploadArtifacts(ctx context.Context, t *errand.Task, spec *tasks.Artifacts, ws *Workspace, res *tasks.ArtifactsResult) error {
	if h.Artifacts == nil {
		return errors.New("this delegate cannot upload artifacts")
	}
	exported, err := h.Driver.WorkspaceExport(ctx, ws, spec.Prefixes())
	if err != nil {
		return err
	}
	defer exported.Close()
	pr, pw := io.Pipe()
	selected := make(chan error, 1)
	go func() {
		err := selectArtifacts(exported, pw, spec, res)
		pw.CloseWithError(err)
		selected <- err
	}()
	_, err = h.Artifacts.UploadArtifacts(ctx, t.ID, leaseOf(t), pr)
	pr.CloseWithError(errUploadEnded)
	serr := <-selected
	if serr != nil && !errors.Is(serr, errUploadEnded) && !errors.Is(serr, io.ErrClosedPipe) {
		// The collection's error names the path; the upload only saw
		// its stream cut.
		return serr
	}
	return err
}

// errUploadEnded is what the collection sees once the upload stopped
// reading.
var errUploadEnded = errors.New("the upload ended")

// selectArtifacts copies the entries of an exported tar that spec keeps
// (regular files and links) from r to w, counting them. A link that a
// path pattern would lead through is refused: links are recorded, never
// followed.
func selectArtifacts(r io.Reader, w io.Writer, spec *tasks.Artifacts, res *tasks.ArtifactsResult) error {
	tr, tw := tar.NewReader(r), tar.NewWriter(w)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return tw.Close()
		}
		if err != nil {
			return err
		}
		name := strings.TrimSuffix(hdr.Name, "/")
		if hdr.Typeflag == tar.TypeSymlink {
			for _, p := range spec.Paths {
				if strings.HasPrefix(p, name+"/") {
					return fmt.Errorf("artifacts path %q leads through %s, a symbolic link to %q: links are recorded, never followed", p, name, hdr.Linkname)
				}
			}
		}
		if (hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeSymlink) || !spec.Match(name) {
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := io.Copy(tw, tr); err != nil {
				return err
			}
			res.Bytes += hdr.Size
		}
		res.Files++
	}
}

// putNeededArtifacts puts the artifacts of the stages a stage needs into
// its new workspace.
func (h *Handlers) putNeededArtifacts(ctx context.Context, t *errand.Task, data *tasks.InitializeData, res *tasks.InitializeResult, logs io.Writer) error {
	if h.Artifacts == nil {
		return errand.Errorf(errand.CodeInvalid, "stage %s needs the artifacts of %s; this delegate cannot download artifacts",
			data.Stage.Stage, strings.Join(data.NeedsArtifacts, ", "))
	}
	rc, err := h.Artifacts.NeededArtifacts(ctx, t.ID, leaseOf(t))
	if err != nil {
		return errand.Errorf(errand.CodeTaskFailed, "download the artifacts of %s: %v", strings.Join(data.NeedsArtifacts, ", "), err)
	}
	defer rc.Close()
	ws := &Workspace{Task: t, Stage: data.Stage, Result: res, InitID: t.ID}
	if err := h.Driver.WorkspaceImport(ctx, ws, rc); err != nil {
		return errand.Errorf(errand.CodeTaskFailed, "put the artifacts of %s into the workspace: %v", strings.Join(data.NeedsArtifacts, ", "), err)
	}
	fmt.Fprintf(logs, "artifacts: put the artifacts of %s into the workspace\n", strings.Join(data.NeedsArtifacts, ", "))
	return nil
}

// undoInitialize removes what a successful Driver.Initialize created,
// when the rest of the initialize failed: the stage's cleanup task will
// see a failed initialize and remove nothing.
func (h *Handlers) undoInitialize(ctx context.Context, t *errand.Task, data *tasks.InitializeData, res *tasks.InitializeResult, logs io.Writer) {
	b, err := json.Marshal(res)
	if err != nil {
		return
	}
	init := errand.DependencyResult{Task: t.ID, Type: t.Type, State: errand.StateSucceeded, Result: b}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), destroyTimeout)
	defer cancel()
	if _, err := h.Driver.Cleanup(cctx, &Cleanup{Task: t, Data: &tasks.CleanupData{Stage: data.Stage}, Init: init, Log: logs}); err != nil {
		h.logger().WithError(err).WithField("task_id", t.ID).Warn("remove the stage's environment after a failed initialize")
	}
}

// stageFailed reports whether a stage's steps failed, from its cleanup
// task's dependencies, and whether one was cancelled.
func stageFailed(t *errand.Task) (failed, cancelled bool) {
	for _, d := range t.Dependencies {
		switch d.State {
		case errand.StateFailed, errand.StateTimedOut:
			failed = true
		case errand.StateCancelled:
			cancelled = true
		}
	}
	return failed, cancelled
}
