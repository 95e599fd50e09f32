package manager

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/gitsource/gittest"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/tasks"
)

const sourceConfig = "stages:\n  - name: a\n    steps: [{name: s, commands: [cat README]}]\n  - name: b\n    steps: [{name: s, commands: [cat README]}]\n"

func (e *env) submitSource(src *errand.GitSource, commit string) *client.Run {
	e.t.Helper()
	var run client.Run
	e.must(http.StatusCreated, "POST", "/api/v1/runs", testAdmin,
		&client.RunRequest{Config: sourceConfig, Source: &errand.Source{Git: src}, Commit: commit}, &run)
	return &run
}

// setupError returns the run's one setup error, failing unless it has
// exactly one at path.
func setupError(t *testing.T, run *client.Run, path string) string {
	t.Helper()
	if run.Phase != "setuperror" || len(run.SetupErrors) != 1 || run.SetupErrors[0].Path != path {
		t.Fatalf("run %s with setup errors %+v, want one at %s", run.Phase, run.SetupErrors, path)
	}
	return run.SetupErrors[0].Message
}

// A run with a source and a ref is given, once, the commit the ref
// names when the run is created: the run shows it, and every stage's
// initialize task checks it out.
func TestRunSourceResolvedOnce(t *testing.T) {
	repo := gittest.NewRepo(t)
	url := repo.Daemon(t)
	e := newEnv(t)
	run := e.submitSource(&errand.GitSource{URL: url, Ref: "first", Submodules: true}, "")
	if run.Commit != repo.First || run.Source == nil || run.Source.Git.Ref != "first" {
		t.Fatalf("run source %+v commit %q, want %s", run.Source, run.Commit, repo.First)
	}
	if got := e.getRun(run.ID); got.Commit != repo.First || got.Source.Git.URL != url {
		t.Fatalf("GET shows source %+v commit %q", got.Source, got.Commit)
	}
	for _, st := range run.Stages {
		var data tasks.InitializeData
		if err := json.Unmarshal(e.getTask(st.InitializeTask).Data, &data); err != nil {
			t.Fatal(err)
		}
		if data.Checkout == nil || data.Checkout.Commit != repo.First || !data.Checkout.Submodules {
			t.Errorf("stage %s checks out %+v", st.Name, data.Checkout)
		}
	}
	// A commit given with the run is taken as it is.
	if run := e.submitSource(&errand.GitSource{URL: url, Ref: "main"}, repo.First); run.Commit != repo.First {
		t.Errorf("a given commit became %s", run.Commit)
	}
	msg := setupError(t, e.submitSource(&errand.GitSource{URL: url, Ref: "nope"}, ""), "source.git.ref")
	if !strings.Contains(msg, "nope: ref not found") {
		t.Errorf("unknown ref: %s", msg)
	}
	msg = setupError(t, e.submitSource(&errand.GitSource{URL: strings.Replace(url, "repo.git", "none.git", 1)}, ""), "source.git.url")
	if !strings.Contains(msg, "git ls-remote") {
		t.Errorf("not a repository: %s", msg)
	}
}

// A source that cannot be valid is refused with 400: nothing is stored
// and nothing fetched.
func TestRunSourceRefused(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		body, want string
	}{
		{`{"config":"x","source":{"git":{"url":"ext::sh -c id"}}}`, "source.git.url"},
		{`{"config":"x","source":{"git":{"url":"-u/x"}}}`, "must not start with '-'"},
		{`{"config":"x","source":{"git":{"url":"https://x/y","ref":"--upload-pack=id"}}}`, "source.git.ref"},
		{`{"config":"x","source":{"git":{"url":"https://x/y"}},"commit":"abc"}`, "commit"},
		{`{"config":"x","commit":"` + strings.Repeat("a", 40) + `"}`, "needs a source"},
		{`{"config":"x","source":{}}`, "source.git"},
		{`{"config":"x","source":{"git":{"url":"https://x/y","depth":-1}}}`, "source.git.depth"},
		{`{"config":"x","source":{"git":{"url":"https://x/y","shallow":true}}}`, "shallow"},
	} {
		eb := e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/runs", testAdmin, c.body)
		if !strings.Contains(eb.Reason, c.want) {
			t.Errorf("%s: %s, want it to say %q", c.body, eb.Reason, c.want)
		}
	}
	var list client.RunList
	e.must(http.StatusOK, "GET", "/api/v1/runs", testAdmin, nil, &list)
	if len(list.Items) != 0 {
		t.Errorf("refused requests made %d runs", len(list.Items))
	}
}

// The credential is a secret name: the manager resolves the ref with
// its value, stores only the name, and hands the value to the delegate
// in the leased initialize task alone.
func TestRunSourceCredentials(t *testing.T) {
	repo := gittest.NewRepo(t)
	const password = "manager-side-pa55"
	srv := repo.HTTP(t, "alice", password)
	e := newEnv(t, func(c *Config) {
		c.Secrets = scheduler.SecretMap{"GIT_CREDENTIALS": "alice:" + password, "WRONG": "alice:not-the-password", "SHORT": "a:b"}
	})
	run := e.submitSource(&errand.GitSource{URL: srv.URL, Credentials: "GIT_CREDENTIALS"}, "")
	if run.Commit != repo.Second {
		t.Fatalf("run %s %+v commit %q", run.Phase, run.SetupErrors, run.Commit)
	}
	init := e.getTask(run.Stages[0].InitializeTask)
	if strings.Contains(string(init.Data), password) || !strings.Contains(string(init.Data), `"secret_names":["GIT_CREDENTIALS"]`) {
		t.Errorf("stored initialize data: %s", init.Data)
	}
	d := e.register("d", nil)
	leased := e.acquire(d, "max=4&wait=1s").Tasks
	found := false
	for _, task := range leased {
		var data tasks.InitializeData
		if err := json.Unmarshal(task.Data, &data); err != nil {
			t.Fatal(err)
		}
		if data.Checkout != nil {
			found = true
			if data.Secrets["GIT_CREDENTIALS"] != "alice:"+password {
				t.Errorf("the leased initialize task has secrets %v", data.Secrets)
			}
		}
	}
	if !found {
		t.Fatalf("no initialize task among the leased %d", len(leased))
	}

	for name, want := range map[string]string{"WRONG": "Authentication failed", "SHORT": "cannot be masked", "MISSING": "is not set on the manager"} {
		path := "source.git.credentials"
		if name == "WRONG" {
			path = "source.git.url"
		}
		msg := setupError(t, e.submitSource(&errand.GitSource{URL: srv.URL, Credentials: name}, ""), path)
		if !strings.Contains(msg, want) || strings.Contains(msg, password) {
			t.Errorf("credentials %s: %s, want %q", name, msg, want)
		}
	}
}

// A file URL is resolved only by a manager started with
// --allow-file-sources.
func TestRunSourceFileURL(t *testing.T) {
	repo := gittest.NewRepo(t)
	src := &errand.GitSource{URL: "file://" + filepath.Join(repo.Dir, "repo.git"), Ref: "first"}
	msg := setupError(t, newEnv(t).submitSource(src, ""), "source.git.url")
	if !strings.Contains(msg, "--allow-file-sources") {
		t.Errorf("file URL refused with %s", msg)
	}
	run := newEnv(t, func(c *Config) { c.AllowFileSources = true }).submitSource(src, "")
	if run.Commit != repo.First {
		t.Errorf("file URL with AllowFileSources: %s %+v %q", run.Phase, run.SetupErrors, run.Commit)
	}
}
