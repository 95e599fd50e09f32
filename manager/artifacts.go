package manager

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/manager/artifacts"
	"github.com/errandci/errand/manager/store"
)

// registerArtifactRoutes adds the artifact routes: uploads and the
// needed artifacts for delegates, under a task's lease; lists and
// downloads for users.
func (s *Server) registerArtifactRoutes() {
	// An upload is bounded by the artifact limits, checked as it is
	// read, not by the body limit of other requests.
	s.handleBody("POST", "/api/v1/tasks/{id}/artifacts", authDelegate, -1, s.uploadArtifacts)
	s.handle("GET", "/api/v1/tasks/{id}/needed-artifacts", authDelegate, s.neededArtifacts)
	s.handle("GET", "/api/v1/runs/{id}/artifacts", authViewer, s.listRunArtifacts)
	s.handle("GET", "/api/v1/tasks/{id}/artifacts/{path...}", authViewer, s.getArtifact)
}

// newArtifacts returns the artifact service of cfg.
func (s *Server) newArtifacts() (*artifacts.Service, error) {
	return artifacts.New(artifacts.Config{MaxSize: s.cfg.ArtifactsMaxSize, MaxRunSize: s.cfg.ArtifactsMaxRunSize,
		ExpireIn: s.cfg.ArtifactsExpireIn, Log: s.log, Now: s.now}, s.store, s.objects)
}

func (s *Server) leasedForArtifacts(r *http.Request, p principal) (*errand.Task, error) {
	lease := r.Header.Get(client.ArtifactLeaseHeader)
	if lease == "" {
		return nil, errand.Errorf(errand.CodeInvalid, "the %s header is required: the task's lease", client.ArtifactLeaseHeader)
	}
	return s.artifacts.LeasedTask(r.Context(), r.PathValue("id"), p.delegateID, lease)
}

func (s *Server) uploadArtifacts(w http.ResponseWriter, r *http.Request, p principal) error {
	t, err := s.leasedForArtifacts(r, p)
	if err != nil {
		return err
	}
	kept, err := s.artifacts.Upload(r.Context(), t, r.Body)
	if err != nil {
		return err
	}
	httphelper.WriteJSON(w, s.artifactList(kept, ""), http.StatusCreated)
	return nil
}

func (s *Server) neededArtifacts(w http.ResponseWriter, r *http.Request, p principal) error {
	t, err := s.leasedForArtifacts(r, p)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-tar")
	cw := &countingWriter{w: w}
	if err := s.artifacts.Needed(r.Context(), t, cw); err != nil {
		if cw.n == 0 {
			return err
		}
		// Part of the stream is out: cut it, so that the reader sees
		// an archive that does not end, never a shorter whole one.
		s.log.WithError(err).WithField("task_id", t.ID).Warn("needed artifacts cut off")
		panic(http.ErrAbortHandler)
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (s *Server) listRunArtifacts(w http.ResponseWriter, r *http.Request, _ principal) error {
	q := r.URL.Query()
	limit := 1000
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return errand.Errorf(errand.CodeInvalid, "limit %q: want 1 to 10000", v)
		}
		limit = n
	}
	list, err := s.artifacts.List(r.Context(), store.ArtifactListParams{RunID: r.PathValue("id"), Stage: q.Get("stage"),
		After: q.Get("after"), Limit: limit})
	if err != nil {
		return err
	}
	next := ""
	if len(list) == limit {
		next = list[len(list)-1].ID
	}
	httphelper.WriteJSON(w, s.artifactList(list, next), http.StatusOK)
	return nil
}

func (s *Server) artifactList(list []*store.Artifact, next string) *client.ArtifactList {
	out := &client.ArtifactList{Kind: client.KindArtifactList, Items: []*client.Artifact{}, Next: next}
	for _, a := range list {
		out.Items = append(out.Items, &client.Artifact{Kind: client.KindArtifact, ID: a.ID, Href: client.ArtifactHref(a.TaskID, a.Path),
			RunID: a.RunID, TaskID: a.TaskID, Stage: a.Stage, Step: a.Step, Path: a.Path, Size: a.Size, SHA256: a.SHA256,
			ContentType: a.ContentType, Mode: a.Mode, LinkTarget: a.LinkTarget, CreatedAt: a.CreatedAt, ExpiresAt: a.ExpiresAt,
			Expired: s.artifacts.Expired(a)})
	}
	return out
}

// getArtifact serves an artifact's content, ranges included, with its
// SHA-256 in X-Errand-Sha256 and Repr-Digest.
func (s *Server) getArtifact(w http.ResponseWriter, r *http.Request, _ principal) error {
	a, err := s.artifacts.Get(r.Context(), r.PathValue("id"), r.PathValue("path"))
	if err != nil {
		return err
	}
	if a.LinkTarget != "" {
		return errand.Errorf(errand.CodeInvalid, "artifact %s of task %s is a symbolic link to %q: it has no content", a.Path, a.TaskID, a.LinkTarget)
	}
	sum, err := hex.DecodeString(a.SHA256)
	if err != nil {
		return fmt.Errorf("artifact %s of task %s: stored digest: %w", a.Path, a.TaskID, err)
	}
	h := w.Header()
	h.Set("Content-Type", a.ContentType)
	h.Set("ETag", `"`+a.SHA256+`"`)
	h.Set(client.ArtifactSHA256Header, a.SHA256)
	h.Set("Repr-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(sum)+":")
	h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", path.Base(a.Path)))
	content := &lazyContent{open: func(off int64) (io.ReadCloser, error) { return s.artifacts.Open(r.Context(), a, off, -1) }, size: a.Size}
	defer content.Close()
	http.ServeContent(w, r, "", a.CreatedAt, content)
	if content.err != nil && !errors.Is(content.err, r.Context().Err()) {
		s.log.WithError(content.err).WithField("task_id", a.TaskID).Warn("artifact download cut off")
	}
	return nil
}

// lazyContent is an io.ReadSeeker over an artifact for http.ServeContent:
// seeking only moves the offset, the first read after it opens one
// ranged read of the object from there.
type lazyContent struct {
	open     func(off int64) (io.ReadCloser, error)
	size     int64
	off, pos int64
	rc       io.ReadCloser
	err      error
}

func (c *lazyContent) Seek(offset int64, whence int) (int64, error) {
	var next int64
	switch whence {
	case io.SeekStart:
		next = offset
	case io.SeekCurrent:
		next = c.off + offset
	case io.SeekEnd:
		next = c.size + offset
	}
	if next < 0 || next > c.size {
		return c.off, errors.New("seek out of the artifact")
	}
	c.off = next
	return next, nil
}

func (c *lazyContent) Read(p []byte) (int, error) {
	if c.rc != nil && c.pos != c.off {
		_ = c.rc.Close()
		c.rc = nil
	}
	if c.rc == nil {
		if c.off >= c.size {
			return 0, io.EOF
		}
		rc, err := c.open(c.off)
		if err != nil {
			c.err = err
			return 0, err
		}
		c.rc, c.pos = rc, c.off
	}
	n, err := c.rc.Read(p)
	c.off += int64(n)
	c.pos = c.off
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// Close releases the open read, if any.
func (c *lazyContent) Close() error {
	if c.rc != nil {
		return c.rc.Close()
	}
	return nil
}
