package runtime_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/tasks"
	"github.com/errandci/errand/tasks/runtime"
)

// transfer is an ArtifactTransfer that keeps what it is sent and serves
// a given tar as the needed artifacts.
type transfer struct {
	mu       sync.Mutex
	uploaded map[string]string // name → content, or "-> target"
	lease    string
	needed   []byte
	err      error
}

func (x *transfer) UploadArtifacts(_ context.Context, _, lease string, r io.Reader) (*client.ArtifactList, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.lease = lease
	if x.err != nil {
		_, _ = io.Copy(io.Discard, r)
		return nil, x.err
	}
	x.uploaded = map[string]string{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return &client.ArtifactList{}, nil
		}
		if err != nil {
			return nil, err
		}
		b, _ := io.ReadAll(tr)
		if hdr.Typeflag == tar.TypeSymlink {
			b = []byte("-> " + hdr.Linkname)
		}
		x.uploaded[hdr.Name] = string(b)
	}
}

func (x *transfer) NeededArtifacts(context.Context, string, string) (io.ReadCloser, error) {
	if x.err != nil {
		return nil, x.err
	}
	return io.NopCloser(bytes.NewReader(x.needed)), nil
}

func (x *transfer) names() string {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []string
	for n, v := range x.uploaded {
		out = append(out, n+"="+v)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func workspaceDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range map[string]string{"dist/app": "app", "dist/sub/x.o": "obj", "dist/sub/y.txt": "y", "src/main.go": "package main"} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("app", filepath.Join(dir, "dist", "latest")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(dir, "etc")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func withArtifacts(a *tasks.Artifacts) tasks.ExecuteData {
	d := step("x")
	d.Artifacts = a
	return d
}

// A step's artifacts are collected after it and uploaded under its
// lease: what matches, links as links, excludes left out; a failure to
// keep them is in the log and the result, and fails the step only when
// they are required.
func TestExecuteKeepsArtifacts(t *testing.T) {
	cases := []struct {
		name      string
		exit      int
		spec      *tasks.Artifacts
		err       error
		wantState errand.State
		wantSent  string
		wantLog   string
	}{
		{name: "kept", spec: &tasks.Artifacts{Paths: []string{"dist"}, Exclude: []string{"**/*.o"}}, wantState: errand.StateSucceeded,
			wantSent: "dist/app=app dist/latest=-> app dist/sub/y.txt=y", wantLog: "artifacts: kept 3 files (4 bytes)"},
		{name: "not on failure", exit: 2, spec: &tasks.Artifacts{Paths: []string{"dist"}}, wantState: errand.StateFailed},
		{name: "on failure", exit: 2, spec: &tasks.Artifacts{Paths: []string{"**/*.txt"}, When: tasks.ArtifactsOnFailure},
			wantState: errand.StateFailed, wantSent: "dist/sub/y.txt=y"},
		{name: "through a link", spec: &tasks.Artifacts{Paths: []string{"etc/passwd"}}, wantState: errand.StateSucceeded,
			wantLog: "artifacts: not kept: etc/passwd: etc is a symbolic link"},
		{name: "through a link, required", spec: &tasks.Artifacts{Paths: []string{"etc/**"}, Required: true}, wantState: errand.StateFailed,
			wantLog: `artifacts path "etc/**" leads through etc, a symbolic link to "/etc"`},
		{name: "none match", spec: &tasks.Artifacts{Paths: []string{"nothing"}}, wantState: errand.StateSucceeded,
			wantLog: "artifacts: not kept: no file matches nothing"},
		{name: "refused by the manager", spec: &tasks.Artifacts{Paths: []string{"dist/app"}}, err: errand.Errorf(errand.CodeTooLarge, "artifact dist/app is too large"),
			wantState: errand.StateSucceeded, wantLog: "artifacts: not kept: artifact dist/app is too large"},
		{name: "refused, required", spec: &tasks.Artifacts{Paths: []string{"dist/app"}, Required: true}, err: errand.Errorf(errand.CodeTooLarge, "too large"),
			wantState: errand.StateFailed, wantLog: "artifacts: not kept: too large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := &transfer{err: tc.err}
			h := &runtime.Handlers{Driver: &fake{exit: tc.exit, dir: workspaceDir(t)}, Artifacts: x}
			out, logs := serve(t, context.Background(), h, "fake.execute", withArtifacts(tc.spec), initDep)
			if out.State != tc.wantState {
				t.Fatalf("outcome %+v %v, want %s\n%s", out, out.Error, tc.wantState, logs)
			}
			if got := x.names(); got != tc.wantSent {
				t.Errorf("uploaded %q, want %q", got, tc.wantSent)
			}
			if !strings.Contains(logs, tc.wantLog) {
				t.Errorf("log %q lacks %q", logs, tc.wantLog)
			}
			if tc.wantSent != "" && x.lease != "l" {
				t.Errorf("uploaded under lease %q, want the task's", x.lease)
			}
			if out.State == errand.StateSucceeded {
				var res tasks.ExecuteResult
				if err := json.Unmarshal(out.Result, &res); err != nil || res.Artifacts == nil {
					t.Fatalf("result %s: %v", out.Result, err)
				}
				if (res.Artifacts.Error != "") != (tc.wantSent == "") {
					t.Errorf("result artifacts %+v", res.Artifacts)
				}
			}
		})
	}
}

// A stage's artifacts are collected by its cleanup, before the
// workspace goes, after a stage that failed only when they say so.
func TestCleanupKeepsStageArtifacts(t *testing.T) {
	failed := errand.DependencyResult{Task: "s1", Type: "fake.execute", State: errand.StateFailed}
	ok := errand.DependencyResult{Task: "s1", Type: "fake.execute", State: errand.StateSucceeded}
	for _, tc := range []struct {
		name string
		when string
		step errand.DependencyResult
		want string
	}{
		{"success", "", ok, "dist/app=app"},
		{"failure, on_success", "", failed, ""},
		{"failure, always", tasks.ArtifactsAlways, failed, "dist/app=app"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := &transfer{}
			f := &fake{dir: workspaceDir(t)}
			h := &runtime.Handlers{Driver: f, Artifacts: x}
			data := tasks.CleanupData{Stage: tasks.Stage{RunID: "r", Stage: "build"}, Artifacts: &tasks.Artifacts{Paths: []string{"dist/app"}, When: tc.when}}
			out, logs := serve(t, context.Background(), h, "fake.cleanup", data, tc.step, initDep)
			if out.State != errand.StateSucceeded || len(f.cleaned) != 1 {
				t.Fatalf("cleanup %+v %v, cleaned %v\n%s", out, out.Error, f.cleaned, logs)
			}
			if got := x.names(); got != tc.want {
				t.Errorf("uploaded %q, want %q", got, tc.want)
			}
		})
	}
}

// A stage that needs artifacts gets them in its workspace at
// initialize; when they cannot be had, initialize fails and removes
// what it created.
func TestInitializePutsNeededArtifacts(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "dist/app", Size: 3, Mode: 0o755})
	_, _ = tw.Write([]byte("app"))
	_ = tw.Close()
	data := tasks.InitializeData{Stage: tasks.Stage{RunID: "r", Stage: "test"}, NeedsArtifacts: []string{"build"}}

	f := &fake{dir: t.TempDir()}
	h := &runtime.Handlers{Driver: f, Artifacts: &transfer{needed: buf.Bytes()}}
	out, logs := serve(t, context.Background(), h, "fake.initialize", data)
	if out.State != errand.StateSucceeded || !strings.Contains(logs, "artifacts: put the artifacts of build into the workspace") {
		t.Fatalf("initialize %+v %v\n%s", out, out.Error, logs)
	}
	if b, err := os.ReadFile(filepath.Join(f.dir, "dist", "app")); err != nil || string(b) != "app" {
		t.Fatalf("dist/app = %q, %v", b, err)
	}

	f = &fake{dir: t.TempDir()}
	h = &runtime.Handlers{Driver: f, Artifacts: &transfer{err: errors.New("manager unreachable")}}
	out, _ = serve(t, context.Background(), h, "fake.initialize", data)
	if out.State != errand.StateFailed || !strings.Contains(out.Error.Reason, "manager unreachable") || len(f.cleaned) != 1 {
		t.Fatalf("initialize without its artifacts: %+v %v, cleaned %v", out, out.Error, f.cleaned)
	}
	h = &runtime.Handlers{Driver: &fake{dir: t.TempDir()}}
	if out, _ := serve(t, context.Background(), h, "fake.initialize", data); out.State != errand.StateFailed || !strings.Contains(out.Error.Reason, "cannot download artifacts") {
		t.Fatalf("initialize with no transfer: %+v %v", out, out.Error)
	}
}
