package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/errandci/errand"
)

// RetentionStore deletes what is no longer kept: runs a user deletes,
// artifacts past their expiry, and the objects they leave. A run's
// tasks, logs and artifacts are shared with the runs that restarted it
// (run_uses): they go only with the last run that refers to them.
//
// Objects are never deleted inside a transaction: a write that makes
// objects unreferenced queues their keys as object deletions in the
// same transaction, and the caller (or the cleaner, after a crash)
// deletes them and then marks them done, so that none leaks.
type RetentionStore interface {
	// RunDelete deletes a run that has ended: the run, its approvals
	// and origin, and every task, log and artifact record held for it
	// or for runs it used that no remaining run refers to. The object
	// keys those records named are queued as object deletions and
	// returned. A run with a task that has not ended is
	// errand.ErrConflict, nothing deleted; errand.ErrNotFound for an
	// unknown run.
	RunDelete(ctx context.Context, p RunDeleteParams) (*RunDeleteResult, error)
	// ArtifactExpire deletes up to limit artifact records whose expiry
	// is at or before now, soonest first, queues their objects as
	// object deletions and returns the records deleted.
	ArtifactExpire(ctx context.Context, now time.Time, limit int) ([]*Artifact, error)
	// ObjectDeletionList returns up to limit queued object deletions
	// queued at or before before, oldest first.
	ObjectDeletionList(ctx context.Context, before time.Time, limit int) ([]ObjectDeletion, error)
	// ObjectDeletionDone forgets queued deletions whose objects are
	// gone; unknown keys are ignored.
	ObjectDeletionDone(ctx context.Context, keys []string) error
	// LockAcquire takes or renews the named lock for p.Holder until
	// p.Now + p.TTL, when it is free, expired or already p.Holder's,
	// and says whether p.Holder holds it now.
	LockAcquire(ctx context.Context, p LockParams) (bool, error)
	// LockRelease frees the named lock if p.Holder holds it.
	LockRelease(ctx context.Context, p LockParams) error
	// StorageUsage counts the objects the store's records name and
	// their bytes, by kind.
	StorageUsage(ctx context.Context) (StorageUsage, error)
}

// RunDeleteParams names the run to delete.
type RunDeleteParams struct {
	RunID string
	Now   time.Time
}

// RunDeleteResult says what a run's deletion removed.
type RunDeleteResult struct {
	// Tasks counts the task records deleted; Kept the tasks of the run
	// kept because runs that restarted it still show them.
	Tasks, Kept int
	// Objects lists the keys of the objects no record names any more,
	// queued as object deletions.
	Objects []string
}

// ObjectDeletion is an object queued for deletion.
type ObjectDeletion struct {
	Key      string
	Kind     string
	QueuedAt time.Time
}

// Kinds of stored objects, as StorageUsage and ObjectDeletion name them.
const (
	KindLogs      = "logs"
	KindArtifacts = "artifacts"
	KindCaches    = "caches"
)

// LockParams names a lock and who takes or frees it.
type LockParams struct {
	Name   string
	Holder string
	TTL    time.Duration
	Now    time.Time
}

// Check validates the params.
func (p LockParams) Check() error {
	if p.Name == "" || p.Holder == "" || len(p.Name) > MaxArtifactField || len(p.Holder) > MaxArtifactField {
		return errand.Errorf(errand.CodeInvalid, "lock: a name and a holder of at most %d bytes are required", MaxArtifactField)
	}
	return nil
}

// Usage is what the objects of one kind take.
type Usage struct {
	Objects int64 `json:"objects"`
	Bytes   int64 `json:"bytes"`
}

// StorageUsage is what the stored objects take, by kind.
type StorageUsage map[string]Usage

// endedStates lists the states a task ends in, for the drivers' SQL.
var endedStates = func() []string {
	var out []string
	for _, s := range []errand.State{errand.StateSucceeded, errand.StateFailed, errand.StateCancelled, errand.StateSkipped, errand.StateTimedOut} {
		if s.Terminal() {
			out = append(out, string(s))
		}
	}
	return out
}()

// EndedStatesSQL is the states a task ends in as an SQL list, ('a', 'b').
func EndedStatesSQL() string { return "('" + strings.Join(endedStates, "', '") + "')" }

// LogObjectKeys returns the keys of a sealed log's objects from the JSON
// a driver keeps them in.
func LogObjectKeys(objectsJSON string) ([]string, error) {
	if objectsJSON == "" {
		return nil, nil
	}
	var objs []LogObject
	if err := json.Unmarshal([]byte(objectsJSON), &objs); err != nil {
		return nil, fmt.Errorf("log objects: %w", err)
	}
	keys := make([]string, 0, len(objs))
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	return keys, nil
}

// RunNotEnded is the error of a deletion of a run that has not ended.
func RunNotEnded(runID string, active int) error {
	return errand.Errorf(errand.CodeConflict, "run %s has %d task(s) that have not ended: cancel it first", runID, active)
}

// LogObjectBytes is the size of a sealed log's objects in all.
func LogObjectBytes(objects []LogObject) int64 {
	var n int64
	for _, o := range objects {
		n += o.Size
	}
	return n
}
