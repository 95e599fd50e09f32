package manager

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/artifacts"
)

// tarEntry is one entry of an upload.
type tarEntry struct {
	name, data, link string
}

func tarOf(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o640, Size: int64(len(e.data))}
		if e.link != "" {
			hdr = &tar.Header{Typeflag: tar.TypeSymlink, Name: e.name, Linkname: e.link, Mode: 0o777}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(e.data))
	}
	_ = tw.Close()
	return buf.Bytes()
}

// uploadTar sends body as the fixture task's artifacts under its lease.
func (f *routeFixture) uploadTar(t testing.TB, body io.Reader) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", f.e.ts.URL+"/api/v1/tasks/"+f.taskID+"/artifacts", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.d1.token)
	req.Header.Set(client.ArtifactLeaseHeader, f.lease)
	resp, err := f.e.http.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// uploadArtifact keeps one file as the fixture task's artifact.
func (f *routeFixture) uploadArtifact(t testing.TB, name, data string) {
	t.Helper()
	if status, out := f.uploadTar(t, bytes.NewReader(tarOf(t, tarEntry{name: name, data: data}))); status != http.StatusCreated {
		t.Fatalf("upload %s = %d %s", name, status, out)
	}
}

func (f *routeFixture) getArtifact(t testing.TB, path string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", f.e.ts.URL+client.ArtifactHref(f.taskID, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdmin)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := f.e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestArtifactDownload: an artifact is served whole or by range, with
// its SHA-256, content type and an ETag; a link is recorded, not served.
func TestArtifactDownload(t *testing.T) {
	f := newRouteFixture(t)
	content := strings.Repeat("0123456789", 100)
	status, out := f.uploadTar(t, bytes.NewReader(tarOf(t, tarEntry{name: "dist/app.json", data: content},
		tarEntry{name: "dist/latest", link: "app.json"}, tarEntry{name: "dist/empty"})))
	if status != http.StatusCreated {
		t.Fatalf("upload = %d %s", status, out)
	}
	var kept client.ArtifactList
	if err := json.Unmarshal(out, &kept); err != nil || len(kept.Items) != 3 {
		t.Fatalf("upload answered %s (%v)", out, err)
	}
	sum := sha256.Sum256([]byte(content))
	a := kept.Items[0]
	if a.Path != "dist/app.json" || a.Size != 1000 || a.SHA256 != hex.EncodeToString(sum[:]) || a.ContentType != "application/json" ||
		a.Mode != 0o640 || a.Stage != "s" || a.ExpiresAt.Sub(a.CreatedAt) != 30*24*time.Hour || a.Href != client.ArtifactHref(f.taskID, "dist/app.json") {
		t.Errorf("kept %+v", a)
	}
	if l := kept.Items[1]; l.LinkTarget != "app.json" || l.Size != 0 || l.SHA256 != "" {
		t.Errorf("link kept as %+v", l)
	}

	resp, body := f.getArtifact(t, "dist/app.json", nil)
	if resp.StatusCode != http.StatusOK || string(body) != content || resp.Header.Get(client.ArtifactSHA256Header) != a.SHA256 ||
		resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("ETag") != `"`+a.SHA256+`"` ||
		!strings.HasPrefix(resp.Header.Get("Repr-Digest"), "sha-256=:") || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("GET = %d %v, %d bytes", resp.StatusCode, resp.Header, len(body))
	}
	resp, body = f.getArtifact(t, "dist/app.json", map[string]string{"Range": "bytes=995-"})
	if resp.StatusCode != http.StatusPartialContent || string(body) != "56789" || resp.Header.Get("Content-Range") != "bytes 995-999/1000" ||
		resp.Header.Get(client.ArtifactSHA256Header) != a.SHA256 {
		t.Errorf("GET bytes=995- = %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = f.getArtifact(t, "dist/app.json", map[string]string{"Range": "bytes=10-12,20-21"})
	if resp.StatusCode != http.StatusPartialContent || !strings.Contains(string(body), "012") || !strings.Contains(string(body), "01") {
		t.Errorf("GET two ranges = %d %q", resp.StatusCode, body)
	}
	if resp, _ := f.getArtifact(t, "dist/app.json", map[string]string{"Range": "bytes=5000-"}); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("GET past the end = %d, want 416", resp.StatusCode)
	}
	if resp, body := f.getArtifact(t, "dist/empty", nil); resp.StatusCode != http.StatusOK || len(body) != 0 {
		t.Errorf("GET empty = %d %q", resp.StatusCode, body)
	}
	if resp, body := f.getArtifact(t, "dist/latest", nil); resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "symbolic link") {
		t.Errorf("GET of a link = %d %s", resp.StatusCode, body)
	}
	if resp, _ := f.getArtifact(t, "dist/none", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET of a missing artifact = %d", resp.StatusCode)
	}

	// The Go client reads it as errand artifacts get does.
	c := client.New(f.e.ts.URL, testAdmin)
	got, err := c.GetArtifact(context.Background(), f.taskID, "dist/app.json", 990)
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(got.Body)
	got.Body.Close()
	if string(rest) != "0123456789" || got.Size != 1000 || got.SHA256 != a.SHA256 {
		t.Errorf("client GetArtifact from 990 = %q, size %d, sha %s", rest, got.Size, got.SHA256)
	}
}

// TestArtifactUploadRefused: entries that leave the workspace, that the
// task does not declare, or past a limit are refused with what was
// wrong named, and nothing of the upload is kept.
func TestArtifactUploadRefused(t *testing.T) {
	f := newRouteFixture(t)
	f.e.s.artifacts = mustArtifacts(t, f.e, 100, 150)
	cases := []struct {
		name    string
		entries []tarEntry
		status  int
		want    string
	}{
		{"dotdot", []tarEntry{{name: "dist/a", data: "a"}, {name: "../etc/passwd", data: "x"}}, 400, `../etc/passwd`},
		{"absolute", []tarEntry{{name: "/etc/passwd", data: "x"}}, 400, `/etc/passwd`},
		{"undeclared", []tarEntry{{name: "dist/a", data: "a"}, {name: "src/main.go", data: "x"}}, 400, "src/main.go matches none of the paths"},
		{"artifact too large", []tarEntry{{name: "dist/a", data: "a"}, {name: "dist/big", data: strings.Repeat("x", 101)}}, 413,
			"artifact dist/big is 101 bytes, more than the limit of 100 bytes per artifact (--artifacts-max-size)"},
		{"run too large", []tarEntry{{name: "dist/a", data: strings.Repeat("x", 100)}, {name: "dist/b", data: strings.Repeat("x", 60)}}, 413,
			"artifact dist/b (60 bytes) would take the run's artifacts past the limit of 150 bytes per run (--artifacts-max-run-size)"},
	}
	for _, c := range cases {
		status, out := f.uploadTar(t, bytes.NewReader(tarOf(t, c.entries...)))
		if status != c.status || !strings.Contains(string(out), c.want) {
			t.Errorf("%s: upload = %d %s, want %d naming %s", c.name, status, out, c.status, c.want)
		}
		// The fixture's own artifact, kept before, is still there whole.
		if resp, body := f.getArtifact(t, "dist/app", nil); resp.StatusCode != http.StatusOK || string(body) != "the app" {
			t.Errorf("%s: after a refused upload the earlier artifact is %d %q", c.name, resp.StatusCode, body)
		}
		if resp, _ := f.getArtifact(t, "dist/a", nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: a refused upload left dist/a visible (%d)", c.name, resp.StatusCode)
		}
	}
	if n := artifactObjects(t, f.e); n != 1 {
		t.Errorf("refused uploads left %d artifact objects, want only the fixture's 1", n)
	}
	// A lease that is not the task's is refused before anything is read.
	req, _ := http.NewRequest("POST", f.e.ts.URL+"/api/v1/tasks/"+f.taskID+"/artifacts", bytes.NewReader(tarOf(t, tarEntry{name: "dist/a", data: "a"})))
	req.Header.Set("Authorization", "Bearer "+f.d1.token)
	req.Header.Set(client.ArtifactLeaseHeader, "stale")
	resp, err := f.e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("upload under a stale lease = %d, want 409", resp.StatusCode)
	}
}

// TestArtifactUploadCutOff: an upload whose stream breaks mid-way (the
// delegate died) leaves no artifact visible and no object behind, and
// the task's earlier artifacts whole.
func TestArtifactUploadCutOff(t *testing.T) {
	f := newRouteFixture(t)
	whole := tarOf(t, tarEntry{name: "dist/one", data: strings.Repeat("1", 5000)}, tarEntry{name: "dist/two", data: strings.Repeat("2", 300000)})
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = pw.Write(whole[:len(whole)/2])
		pw.CloseWithError(io.ErrUnexpectedEOF)
	}()
	status, out := f.uploadTar(t, pr)
	wg.Wait()
	if status >= 200 && status < 300 {
		t.Fatalf("a cut-off upload was accepted: %d %s", status, out)
	}
	for _, p := range []string{"dist/one", "dist/two"} {
		if resp, _ := f.getArtifact(t, p, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s visible after a cut-off upload (%d)", p, resp.StatusCode)
		}
	}
	if resp, body := f.getArtifact(t, "dist/app", nil); resp.StatusCode != http.StatusOK || string(body) != "the app" {
		t.Errorf("the earlier artifact after a cut-off upload: %d %q", resp.StatusCode, body)
	}
	// The client saw the stream break; the manager's handler may still
	// be removing what it stored: wait for it, within a deadline.
	deadline := time.Now().Add(10 * time.Second)
	for artifactObjects(t, f.e) != 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := artifactObjects(t, f.e); n != 1 {
		t.Errorf("the cut-off upload left %d artifact objects, want only the fixture's 1", n)
	}
}

// TestArtifactExpired: past its expiry an artifact is listed as expired
// and its download is 404 saying when it expired.
func TestArtifactExpired(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := newEnv(t, func(c *Config) { c.Now = clock; c.ArtifactsExpireIn = time.Hour })
	f := &routeFixture{e: e, d1: e.register("d1", nil)}
	f.taskID = e.create(&client.TaskSpec{Type: "x", Data: json.RawMessage(`{"stage":"s","artifacts":{"paths":["dist"]}}`)}).ID
	f.lease = e.acquire(f.d1, "max=1").Tasks[0].Lease.Token
	f.uploadArtifact(t, "dist/app", "x")
	if resp, _ := f.getArtifact(t, "dist/app", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("fresh artifact = %d", resp.StatusCode)
	}
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	resp, body := f.getArtifact(t, "dist/app", nil)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "expired at 2030-01-02T04:04:05Z") {
		t.Errorf("expired artifact = %d %s, want 404 saying when it expired", resp.StatusCode, body)
	}
}

func mustArtifacts(t *testing.T, e *env, maxSize, maxRun int64) *artifacts.Service {
	t.Helper()
	e.s.cfg.ArtifactsMaxSize, e.s.cfg.ArtifactsMaxRunSize = maxSize, maxRun
	a, err := e.s.newArtifacts()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// artifactObjects counts the objects under the artifacts prefix.
func artifactObjects(t *testing.T, e *env) int {
	t.Helper()
	n := 0
	_ = filepath.Walk(filepath.Join(e.objects.Dir(), "artifacts"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

var registerTarDecoder sync.Once

// exerciseArtifacts calls the artifact routes through e.http (the
// OpenAPI validator of TestOpenAPIResponses): an upload as delegate d of
// a task it acquires, its download whole and by range, a refusal, the
// needed artifacts, and run's list.
func exerciseArtifacts(t *testing.T, e *env, d delegate, sel errand.Selector, runID string) {
	t.Helper()
	registerTarDecoder.Do(func() {
		for _, ct := range []string{"application/x-tar", "application/octet-stream"} {
			openapi3filter.RegisterBodyDecoder(ct, openapi3filter.FileBodyDecoder)
		}
	})
	task := e.create(&client.TaskSpec{Type: "test.artifacts", Selector: sel, Data: json.RawMessage(`{"stage":"s","artifacts":{"paths":["app.bin"]}}`)})
	lease := ""
	for range 10 {
		for _, got := range e.acquire(d, "wait=0&max=10").Tasks {
			if got.ID == task.ID {
				lease = got.Lease.Token
			}
		}
		if lease != "" {
			break
		}
	}
	if lease == "" {
		t.Fatalf("task %s was never acquired", task.ID)
	}
	send := func(method, path, token string, header map[string]string, body []byte) (int, []byte) {
		t.Helper()
		var r io.Reader
		if body != nil {
			r = bytes.NewReader(body)
		}
		req, _ := http.NewRequest(method, e.ts.URL+path, r)
		req.Header.Set("Authorization", "Bearer "+token)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	leased := map[string]string{client.ArtifactLeaseHeader: lease, "Content-Type": "application/x-tar"}
	if code, b := send("POST", "/api/v1/tasks/"+task.ID+"/artifacts", d.token, leased, tarOf(t, tarEntry{name: "app.bin", data: "binary"})); code != http.StatusCreated {
		t.Fatalf("upload = %d %s", code, b)
	}
	if code, b := send("POST", "/api/v1/tasks/"+task.ID+"/artifacts", d.token, leased, tarOf(t, tarEntry{name: "other", data: "x"})); code != http.StatusBadRequest {
		t.Fatalf("upload of an undeclared file = %d %s", code, b)
	}
	if code, b := send("GET", "/api/v1/tasks/"+task.ID+"/artifacts/app.bin", testAdmin, nil, nil); code != http.StatusOK || string(b) != "binary" {
		t.Fatalf("download = %d %q", code, b)
	}
	if code, b := send("GET", "/api/v1/tasks/"+task.ID+"/artifacts/app.bin", testAdmin, map[string]string{"Range": "bytes=3-"}, nil); code != http.StatusPartialContent || string(b) != "ary" {
		t.Fatalf("ranged download = %d %q", code, b)
	}
	if code, _ := send("GET", "/api/v1/tasks/"+task.ID+"/artifacts/app.bin", testAdmin, map[string]string{"Range": "bytes=30-"}, nil); code != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("download past the end = %d", code)
	}
	e.fails(http.StatusNotFound, errand.CodeNotFound, "GET", "/api/v1/tasks/"+task.ID+"/artifacts/nope", testAdmin, nil)
	if code, b := send("GET", "/api/v1/tasks/"+task.ID+"/needed-artifacts", d.token, map[string]string{client.ArtifactLeaseHeader: lease}, nil); code != http.StatusOK || len(b) != 1024 {
		t.Fatalf("needed artifacts = %d, %d bytes (want an empty tar)", code, len(b))
	}
	e.must(http.StatusOK, "GET", "/api/v1/runs/"+runID+"/artifacts?limit=5", testAdmin, nil, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "GET", "/api/v1/runs/nope/artifacts", testAdmin, nil)
}
