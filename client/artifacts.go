package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/errandci/errand"
)

// Kinds of the artifact objects of the API.
const (
	KindArtifact     = "artifact"
	KindArtifactList = "artifact_list"
)

// Headers of the artifact API: the lease a delegate's upload or download
// is made under, and the SHA-256 (hex) of a downloaded artifact's whole
// content, also sent as Repr-Digest (RFC 9530).
const (
	ArtifactLeaseHeader  = "X-Errand-Lease"
	ArtifactSHA256Header = "X-Errand-Sha256"
)

// Artifact is a file (or symbolic link) a step or stage kept, as the API
// shows it.
type Artifact struct {
	Kind   string `json:"kind"`
	ID     string `json:"id"`
	Href   string `json:"href"`
	RunID  string `json:"run_id"`
	TaskID string `json:"task_id"`
	Stage  string `json:"stage"`
	// Step is empty for an artifact the stage declares.
	Step string `json:"step,omitempty"`
	// Path is relative to the workspace.
	Path        string `json:"path"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	Mode        int64  `json:"mode"`
	// LinkTarget is set for a symbolic link: recorded, not followed.
	LinkTarget string    `json:"link_target,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	// Expired is set once ExpiresAt passed: its content is no longer
	// served.
	Expired bool `json:"expired,omitempty"`
}

// ArtifactList is a page of artifacts.
type ArtifactList struct {
	Kind  string      `json:"kind"`
	Items []*Artifact `json:"items"`
	// Next is the id to pass as after for the next page, empty at the
	// end.
	Next string `json:"next,omitempty"`
}

// ArtifactHref is the path an artifact is downloaded from.
func ArtifactHref(taskID, path string) string {
	parts := strings.Split(path, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return "/api/v1/tasks/" + url.PathEscape(taskID) + "/artifacts/" + strings.Join(parts, "/")
}

// stream sends one request with body (nil for none) and returns the 2xx
// response, whose body the caller closes. It is sent once: a stream
// cannot be sent again.
func (c *HTTP) stream(ctx context.Context, method, path string, header http.Header, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w: %w", errand.ErrInvalid, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-tar")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, &transportError{err: err}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, decodeError(resp)
}

// UploadArtifacts streams a tar of a task's artifacts to the manager
// under the task's lease, and returns what it kept. The manager keeps
// all of them or, when the stream is cut off or refused, none.
func (c *HTTP) UploadArtifacts(ctx context.Context, taskID, lease string, tar io.Reader) (*ArtifactList, error) {
	resp, err := c.stream(ctx, http.MethodPost, "/api/v1/tasks/"+url.PathEscape(taskID)+"/artifacts",
		http.Header{ArtifactLeaseHeader: {lease}}, tar)
	if err != nil {
		return nil, fmt.Errorf("upload the artifacts of task %s: %w", taskID, err)
	}
	defer resp.Body.Close()
	var out ArtifactList
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBody)).Decode(&out); err != nil {
		return nil, fmt.Errorf("upload the artifacts of task %s: the answer: %w", taskID, err)
	}
	return &out, nil
}

// NeededArtifacts opens, as a tar stream, the artifacts of the earlier
// stages that a stage's initialize task needs, under its lease.
func (c *HTTP) NeededArtifacts(ctx context.Context, taskID, lease string) (io.ReadCloser, error) {
	resp, err := c.stream(ctx, http.MethodGet, "/api/v1/tasks/"+url.PathEscape(taskID)+"/needed-artifacts",
		http.Header{ArtifactLeaseHeader: {lease}}, nil)
	if err != nil {
		return nil, fmt.Errorf("download the artifacts task %s needs: %w", taskID, err)
	}
	return resp.Body, nil
}

// RunArtifacts returns a page of a run's artifacts, after the id after.
func (c *HTTP) RunArtifacts(ctx context.Context, runID, after string) (*ArtifactList, error) {
	var out ArtifactList
	q := url.Values{}
	if after != "" {
		q.Set("after", after)
	}
	if err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/runs/" + url.PathEscape(runID) + "/artifacts",
		query: q, out: &out, policy: retryIdempotent}); err != nil {
		return nil, fmt.Errorf("artifacts of run %s: %w", runID, err)
	}
	return &out, nil
}

// ArtifactContent is a downloaded artifact's content.
type ArtifactContent struct {
	// Body is the content from the offset asked for; the caller closes
	// it.
	Body io.ReadCloser
	// Size is the artifact's whole size, SHA256 the digest of its whole
	// content.
	Size   int64
	SHA256 string
}

// GetArtifact opens an artifact's content from byte off (a Range
// request when off > 0).
func (c *HTTP) GetArtifact(ctx context.Context, taskID, path string, off int64) (*ArtifactContent, error) {
	h := http.Header{}
	if off > 0 {
		h.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	}
	resp, err := c.stream(ctx, http.MethodGet, ArtifactHref(taskID, path), h, nil)
	if err != nil {
		return nil, fmt.Errorf("artifact %s of task %s: %w", path, taskID, err)
	}
	size := resp.ContentLength
	if cr := resp.Header.Get("Content-Range"); cr != "" {
		if _, total, ok := strings.Cut(cr, "/"); ok {
			size, _ = strconv.ParseInt(total, 10, 64)
		}
	}
	return &ArtifactContent{Body: resp.Body, Size: size, SHA256: resp.Header.Get(ArtifactSHA256Header)}, nil
}
