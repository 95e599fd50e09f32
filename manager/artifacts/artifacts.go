// Package artifacts keeps the files that steps and stages leave in their
// workspaces: a delegate streams them as a tar under the task's lease,
// and the service stores each file as one object (streamed: multipart on
// S3, never whole in memory) with its size, SHA-256 and content type,
// records them all at once when the upload is whole, serves them back
// (ranges included), and hands a stage the artifacts of the stages it
// needs.
package artifacts

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/workspace"
	"github.com/errandci/errand/manager/ost"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/tasks"
)

// Defaults of a Config.
const (
	DefaultMaxSize    int64 = 10 << 30
	DefaultMaxRunSize int64 = 50 << 30
	DefaultExpireIn         = 30 * 24 * time.Hour
)

// cleanupTimeout bounds the removal of the objects of a failed upload.
const cleanupTimeout = time.Minute

// Config configures the service.
type Config struct {
	// MaxSize bounds one artifact (one file), MaxRunSize the artifacts
	// of one run in all.
	MaxSize    int64
	MaxRunSize int64
	// ExpireIn is how long artifacts are kept when their declaration
	// says not.
	ExpireIn time.Duration
	Log      logrus.FieldLogger
	Now      func() time.Time
}

// SetDefaults fills in what is unset.
func (c *Config) SetDefaults() {
	if c.MaxSize == 0 {
		c.MaxSize = DefaultMaxSize
	}
	if c.MaxRunSize == 0 {
		c.MaxRunSize = DefaultMaxRunSize
	}
	if c.ExpireIn == 0 {
		c.ExpireIn = DefaultExpireIn
	}
	if c.Log == nil {
		c.Log = logrus.StandardLogger()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.MaxSize < 0:
		return fmt.Errorf("artifacts: the largest artifact must not be negative, not %d", c.MaxSize)
	case c.MaxRunSize < 0:
		return fmt.Errorf("artifacts: the largest run's artifacts must not be negative, not %d", c.MaxRunSize)
	case c.ExpireIn < 0 || c.ExpireIn > tasks.MaxArtifactsExpiry:
		return fmt.Errorf("artifacts: expiry %s must be positive and at most %s", c.ExpireIn, tasks.MaxArtifactsExpiry)
	}
	return nil
}

// Service keeps artifacts in a store and an object storage.
type Service struct {
	cfg     Config
	st      store.Store
	objects ost.Storage
}

// New returns the service; cfg gets its defaults.
func New(cfg Config, st store.Store, objects ost.Storage) (*Service, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, st: st, objects: objects}, nil
}

// LeasedTask returns the task id if the delegate holds its lease with
// token and it has not ended: uploads and downloads of a task's
// artifacts are made under its lease.
func (s *Service) LeasedTask(ctx context.Context, id, delegateID, token string) (*errand.Task, error) {
	return s.st.TaskLeaseCheck(ctx, store.TaskLeaseCheckParams{TaskID: id, DelegateID: delegateID, LeaseToken: token})
}

// declaration is what a task declares: its stage, step and artifacts.
type declaration struct {
	stage, step string
	spec        *tasks.Artifacts
	needs       []string
}

// declared reads the stored task's data: the manager trusts what it
// stored, never what a delegate says of it. The data of every task type
// of a stage names these fields alike (tasks.ExecuteData: the step's
// artifacts; tasks.CleanupData: the stage's; tasks.InitializeData: the
// stages it needs), and so may a task type of a library's own.
func declared(t *errand.Task) (declaration, error) {
	var data struct {
		Stage          string           `json:"stage"`
		Step           string           `json:"step"`
		Artifacts      *tasks.Artifacts `json:"artifacts"`
		NeedsArtifacts []string         `json:"needs_artifacts"`
	}
	if len(t.Data) > 0 {
		if err := json.Unmarshal(t.Data, &data); err != nil {
			return declaration{}, errand.Errorf(errand.CodeInvalid, "data of task %s: %v", t.ID, err)
		}
	}
	return declaration{stage: data.Stage, step: data.Step, spec: data.Artifacts, needs: data.NeedsArtifacts}, nil
}

// Upload keeps the artifacts of task t (leased, as LeasedTask returned
// it) that r holds as a tar stream: directories are skipped, every other
// entry must be a regular file or a symbolic link whose name the task's
// declaration matches. Each file becomes one object, streamed; a link is
// recorded, not followed. The records are written once every object is
// whole, replacing those of an earlier upload of the task: an upload cut
// off mid-way leaves no artifact visible, and its objects are removed.
func (s *Service) Upload(ctx context.Context, t *errand.Task, r io.Reader) ([]*store.Artifact, error) {
	d, err := declared(t)
	if err != nil {
		return nil, err
	}
	spec := d.spec
	if spec == nil {
		// Nothing to keep: an empty upload is accepted, any entry refused.
		spec = &tasks.Artifacts{}
	}
	expireIn := s.cfg.ExpireIn
	if spec.ExpireIn != "" {
		if expireIn, err = tasks.ParseExpiry(spec.ExpireIn); err != nil {
			return nil, errand.Errorf(errand.CodeInvalid, "task %s: artifacts.expire_in: %v", t.ID, err)
		}
	}
	runBytes, err := s.othersBytes(ctx, t)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now().UTC()
	upload := ulid.Make().String()
	run := t.RunID
	if run == "" {
		run = "_"
	}
	prefix := store.ArtifactKeyPrefix + run + "/" + t.ID + "/" + upload + "/"
	var kept []*store.Artifact
	ok := false
	defer func() {
		if !ok {
			s.remove(ctx, kept)
		}
	}()
	entropy := ulid.Monotonic(rand.Reader, 0)
	var total int64
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, errand.Errorf(errand.CodeInvalid, "read the artifacts of task %s: %v", t.ID, err)
		}
		name, err := workspace.CheckEntry(hdr)
		if err != nil {
			return nil, errand.Errorf(errand.CodeInvalid, "artifacts of task %s: %v", t.ID, err)
		}
		if hdr.Typeflag == tar.TypeDir || name == "." {
			continue
		}
		if !spec.Match(name) {
			return nil, errand.Errorf(errand.CodeInvalid, "artifacts of task %s: %s matches none of the paths it declares", t.ID, name)
		}
		if len(kept) >= store.MaxArtifactsPerCommit {
			return nil, errand.Errorf(errand.CodeTooLarge, "artifacts of task %s: more than %d files", t.ID, store.MaxArtifactsPerCommit)
		}
		id, err := ulid.New(ulid.Timestamp(now), entropy)
		if err != nil {
			return nil, fmt.Errorf("artifact id: %w", err)
		}
		a := &store.Artifact{ID: id.String(), RunID: t.RunID, TaskID: t.ID, Stage: d.stage, Step: d.step, Path: name,
			Mode: hdr.Mode & 0o777, CreatedAt: now, ExpiresAt: now.Add(expireIn)}
		if hdr.Typeflag == tar.TypeSymlink {
			a.LinkTarget = hdr.Linkname
			kept = append(kept, a)
			continue
		}
		if hdr.Size > s.cfg.MaxSize {
			return nil, errand.Errorf(errand.CodeTooLarge, "artifact %s is %d bytes, more than the limit of %d bytes per artifact (--artifacts-max-size)",
				name, hdr.Size, s.cfg.MaxSize)
		}
		if runBytes+total+hdr.Size > s.cfg.MaxRunSize {
			return nil, errand.Errorf(errand.CodeTooLarge, "artifact %s (%d bytes) would take the run's artifacts past the limit of %d bytes per run (--artifacts-max-run-size)",
				name, hdr.Size, s.cfg.MaxRunSize)
		}
		a.Object = prefix + name
		if err := s.put(ctx, a, tr, hdr.Size); err != nil {
			return nil, err
		}
		kept = append(kept, a)
		total += a.Size
	}
	// The commit checks the run's bound again, with the uploads of the
	// run's other tasks that ended meanwhile.
	replaced, err := s.st.ArtifactsCommit(ctx, store.ArtifactsCommitParams{TaskID: t.ID, RunID: t.RunID, Artifacts: kept, MaxRunBytes: s.cfg.MaxRunSize})
	if err != nil {
		return nil, err
	}
	ok = true
	s.remove(ctx, replaced)
	return kept, nil
}

// put stores one file's content, hashing and sniffing it on its way.
func (s *Service) put(ctx context.Context, a *store.Artifact, r io.Reader, size int64) error {
	head := make([]byte, min(size, 512))
	if _, err := io.ReadFull(r, head); err != nil {
		return errand.Errorf(errand.CodeInvalid, "artifact %s: %v", a.Path, err)
	}
	a.ContentType = mime.TypeByExtension(path.Ext(a.Path))
	if a.ContentType == "" {
		a.ContentType = http.DetectContentType(head)
	}
	h := sha256.New()
	h.Write(head)
	body := io.MultiReader(bytes.NewReader(head), io.TeeReader(r, h))
	if err := s.objects.Put(ctx, a.Object, body, size); err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("store artifact %s: %w", a.Path, err)
	}
	a.Size, a.SHA256 = size, hex.EncodeToString(h.Sum(nil))
	return nil
}

// othersBytes is the size of the artifacts of t's run but t's own.
func (s *Service) othersBytes(ctx context.Context, t *errand.Task) (int64, error) {
	if t.RunID == "" {
		return 0, nil
	}
	n, err := s.st.ArtifactRunBytes(ctx, t.RunID)
	if err != nil {
		return 0, err
	}
	own, err := s.st.ArtifactList(ctx, store.ArtifactListParams{RunID: t.RunID, TaskID: t.ID, Limit: store.MaxArtifactsPerCommit})
	if err != nil {
		return 0, err
	}
	for _, a := range own {
		n -= a.Size
	}
	return n, nil
}

// remove deletes the objects of artifacts, whatever ctx says.
func (s *Service) remove(ctx context.Context, list []*store.Artifact) {
	if len(list) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	for _, a := range list {
		if a.Object == "" {
			continue
		}
		if err := s.objects.Delete(ctx, a.Object); err != nil {
			s.cfg.Log.WithError(err).WithFields(logrus.Fields{"task_id": a.TaskID, "object": a.Object}).Warn("remove artifact object")
		}
	}
}

// List returns a run's artifacts, a page at a time.
func (s *Service) List(ctx context.Context, p store.ArtifactListParams) ([]*store.Artifact, error) {
	if _, err := s.st.RunGet(ctx, p.RunID); err != nil {
		return nil, err
	}
	return s.st.ArtifactList(ctx, p)
}

// Expired reports whether an artifact is past its expiry.
func (s *Service) Expired(a *store.Artifact) bool { return !s.cfg.Now().Before(a.ExpiresAt) }

// Get returns the artifact of a task at path: errand.CodeNotFound if
// there is none, or if it expired (the reason says when).
func (s *Service) Get(ctx context.Context, taskID, p string) (*store.Artifact, error) {
	a, err := s.st.ArtifactGet(ctx, taskID, p)
	if err != nil {
		return nil, err
	}
	if s.Expired(a) {
		return nil, errand.Errorf(errand.CodeNotFound, "artifact %s of task %s expired at %s", p, taskID, a.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return a, nil
}

// Open reads n bytes of an artifact's content from off (n < 0: to the
// end).
func (s *Service) Open(ctx context.Context, a *store.Artifact, off, n int64) (io.ReadCloser, error) {
	if a.Object == "" {
		return io.NopCloser(strings.NewReader("")), nil
	}
	rc, err := s.objects.GetRange(ctx, a.Object, off, n)
	if errors.Is(err, ost.ErrNotFound) {
		return nil, errand.Errorf(errand.CodeNotFound, "artifact %s of task %s: its content is gone", a.Path, a.TaskID)
	}
	return rc, err
}

// Needed writes, as a tar stream, the artifacts of the stages that task
// t (a stage's initialize, leased) needs (none for a task that needs
// none), in the order they were
// uploaded: a later stage's file at the same path comes last.
func (s *Service) Needed(ctx context.Context, t *errand.Task, w io.Writer) error {
	d, err := declared(t)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	for _, stage := range d.needs {
		after := ""
		for {
			page, err := s.st.ArtifactList(ctx, store.ArtifactListParams{RunID: t.RunID, Stage: stage, After: after})
			if err != nil {
				return err
			}
			for _, a := range page {
				if s.Expired(a) {
					continue
				}
				if err := s.writeEntry(ctx, tw, a); err != nil {
					return err
				}
			}
			if len(page) == 0 {
				break
			}
			after = page[len(page)-1].ID
		}
	}
	return tw.Close()
}

func (s *Service) writeEntry(ctx context.Context, tw *tar.Writer, a *store.Artifact) error {
	hdr := &tar.Header{Name: a.Path, Mode: a.Mode, ModTime: a.CreatedAt, Format: tar.FormatPAX}
	if a.LinkTarget != "" {
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, a.LinkTarget
		return tw.WriteHeader(hdr)
	}
	hdr.Typeflag, hdr.Size = tar.TypeReg, a.Size
	rc, err := s.Open(ctx, a, 0, -1)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if n, err := io.Copy(tw, rc); err != nil || n != a.Size {
		return fmt.Errorf("artifact %s of task %s: read %d of %d bytes: %v", a.Path, a.TaskID, n, a.Size, err)
	}
	return nil
}
