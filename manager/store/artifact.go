package store

import (
	"context"
	"fmt"
	"time"

	"github.com/errandci/errand"
)

// ArtifactStore persists the records of artifacts: files a step or a
// stage left in its workspace, kept in object storage. A record is
// written only once its object is whole, so that what the store lists
// can be read; the objects of records it replaces or deletes are the
// caller's to remove.
type ArtifactStore interface {
	// ArtifactsCommit records the artifacts of one upload of a task in
	// one transaction: the task's earlier artifacts (a retried upload)
	// are replaced by p.Artifacts, and returned so that their objects
	// can be removed. With p.MaxRunBytes > 0 the commit is refused with
	// errand.CodeTooLarge when the run's artifacts would then hold more
	// bytes, nothing written.
	ArtifactsCommit(ctx context.Context, p ArtifactsCommitParams) (replaced []*Artifact, err error)
	// ArtifactList returns a run's artifacts in id order (the order they
	// were uploaded in), filtered by p, at most p.Limit (default 1000,
	// at most 10000) after p.After (the last id of the previous page).
	ArtifactList(ctx context.Context, p ArtifactListParams) ([]*Artifact, error)
	// ArtifactGet returns the artifact of a task at path,
	// errand.ErrNotFound if there is none.
	ArtifactGet(ctx context.Context, taskID, path string) (*Artifact, error)
	// ArtifactRunBytes is the size of a run's artifacts in all.
	ArtifactRunBytes(ctx context.Context, runID string) (int64, error)
	// ArtifactListExpired returns up to limit artifacts whose ExpiresAt
	// is at or before now, soonest expired first.
	ArtifactListExpired(ctx context.Context, now time.Time, limit int) ([]*Artifact, error)
	// ArtifactDelete deletes artifacts by id and returns those it
	// deleted; ids that name none are ignored.
	ArtifactDelete(ctx context.Context, ids []string) ([]*Artifact, error)
	// ArtifactDeleteRun deletes every artifact of a run and returns
	// them.
	ArtifactDeleteRun(ctx context.Context, runID string) ([]*Artifact, error)
	// ArtifactUsage counts the artifacts kept and their bytes.
	ArtifactUsage(ctx context.Context) (ArtifactUsage, error)
}

// LeaseChecker checks, writing nothing, the lease a request made for a
// task carries.
type LeaseChecker interface {
	// TaskLeaseCheck returns a task that is active (leased or running)
	// under lease p.LeaseToken, held by p.DelegateID:
	// errand.ErrLeaseLost when the token is not its current lease (or
	// the task has ended), errand.ErrForbidden when another delegate
	// holds it, errand.ErrNotFound when there is no such task.
	TaskLeaseCheck(ctx context.Context, p TaskLeaseCheckParams) (*errand.Task, error)
}

// ArtifactKeyPrefix is the prefix of every artifact's object key:
// artifacts/<run>/<task>/<upload>/<path> (<run> is "_" for a task of no
// run).
const ArtifactKeyPrefix = "artifacts/"

// Artifact is one file (or symbolic link) kept from a task's workspace.
type Artifact struct {
	// ID is unique and sortable in upload order.
	ID     string
	RunID  string
	TaskID string
	// Stage and Step name where it came from; Step is empty for the
	// artifacts a stage declares.
	Stage string
	Step  string
	// Path is the file's path relative to the workspace.
	Path string
	// Size is its length in bytes, SHA256 the hex digest of its
	// content, ContentType its media type; Mode its permission bits.
	Size        int64
	SHA256      string
	ContentType string
	Mode        int64
	// LinkTarget is set for a symbolic link, recorded, not followed: it
	// has no content and no object.
	LinkTarget string
	// Object is the object key of its content, under
	// ArtifactKeyPrefix; empty for a link.
	Object    string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// ArtifactUsage is what the artifacts kept take.
type ArtifactUsage struct {
	Count int64
	Bytes int64
}

// Limits of an artifact record.
const (
	MaxArtifactPath  = 4096
	MaxArtifactField = 1024
	// MaxArtifactsPerCommit bounds the artifacts of one upload.
	MaxArtifactsPerCommit = 100_000
)

// ArtifactsCommitParams are the artifacts of one upload of a task.
type ArtifactsCommitParams struct {
	TaskID string
	// RunID is the task's run, empty for a task of no run (no run
	// bound then applies).
	RunID     string
	Artifacts []*Artifact
	// MaxRunBytes, when positive, bounds the bytes of the run's
	// artifacts once these are committed.
	MaxRunBytes int64
}

// Check validates the params.
func (p ArtifactsCommitParams) Check() error {
	if p.TaskID == "" {
		return errand.Errorf(errand.CodeInvalid, "artifacts commit: a task is required")
	}
	if len(p.Artifacts) > MaxArtifactsPerCommit {
		return errand.Errorf(errand.CodeTooLarge, "artifacts commit: %d artifacts, at most %d", len(p.Artifacts), MaxArtifactsPerCommit)
	}
	seen := map[string]bool{}
	for _, a := range p.Artifacts {
		switch {
		case a == nil || a.ID == "" || a.Path == "":
			return errand.Errorf(errand.CodeInvalid, "artifacts commit: an artifact needs an id and a path")
		case a.TaskID != p.TaskID || a.RunID != p.RunID:
			return errand.Errorf(errand.CodeInvalid, "artifact %s belongs to task %s of run %s, not %s of %s", a.Path, a.TaskID, a.RunID, p.TaskID, p.RunID)
		case len(a.Path) > MaxArtifactPath || len(a.LinkTarget) > MaxArtifactPath || len(a.Object) > MaxArtifactPath:
			return errand.Errorf(errand.CodeInvalid, "artifact %.64s…: path, link or object longer than %d bytes", a.Path, MaxArtifactPath)
		case len(a.ID) > MaxArtifactField || len(a.Stage) > MaxArtifactField || len(a.Step) > MaxArtifactField ||
			len(a.SHA256) > MaxArtifactField || len(a.ContentType) > MaxArtifactField:
			return errand.Errorf(errand.CodeInvalid, "artifact %s: a field is longer than %d bytes", a.Path, MaxArtifactField)
		case a.Size < 0:
			return errand.Errorf(errand.CodeInvalid, "artifact %s: negative size", a.Path)
		case seen[a.Path]:
			return errand.Errorf(errand.CodeInvalid, "artifact %s appears twice", a.Path)
		}
		seen[a.Path] = true
	}
	return nil
}

// RunTooLarge is the error of a commit past MaxRunBytes.
func (p ArtifactsCommitParams) RunTooLarge(others int64) error {
	var n int64
	for _, a := range p.Artifacts {
		n += a.Size
	}
	if p.MaxRunBytes <= 0 || p.RunID == "" || others+n <= p.MaxRunBytes {
		return nil
	}
	return errand.Errorf(errand.CodeTooLarge, "the artifacts of run %s would hold %d bytes, more than the run's limit of %d (--artifacts-max-run-size)",
		p.RunID, others+n, p.MaxRunBytes)
}

// ArtifactListParams filter ArtifactList: RunID is required; Stage and
// TaskID narrow it.
type ArtifactListParams struct {
	RunID  string
	Stage  string
	TaskID string
	After  string
	Limit  int
}

// Check validates the params.
func (p ArtifactListParams) Check() error {
	if p.RunID == "" {
		return fmt.Errorf("artifact list: %w: a run is required", errand.ErrInvalid)
	}
	return nil
}
