package runtimetest

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/gitsource/gittest"
	"github.com/errandci/errand/router"
	"github.com/errandci/errand/tasks"
)

// testGitSource initializes stages whose workspace starts as a checkout
// of a repository served over http with basic auth: the commit's files,
// its .git and its submodule are there for the steps; the credential
// never shows; a commit or a repository that does not exist fails the
// initialize with git's words, masked; file URLs are refused.
func testGitSource(t *testing.T, rt Runtime) {
	repo := gittest.NewRepo(t)
	const password = "s3cret-for-the-checkout"
	srv := repo.HTTP(t, "alice", password)
	stageWith := func(url, commit string, submodules bool) tasks.InitializeData {
		d := rt.Stage()
		d.Checkout = &tasks.GitCheckout{GitSource: errand.GitSource{URL: url, Submodules: submodules, Credentials: "GIT_CREDENTIALS"}, Commit: commit}
		d.Secrets = map[string]string{"GIT_CREDENTIALS": "alice:" + password}
		return d
	}

	t.Run("Checkout", func(t *testing.T) {
		s, out, logs := initializeWith(t, rt, stageWith(srv.URL, repo.Second, true))
		if out.State != errand.StateSucceeded {
			t.Fatalf("initialize: %+v %v\n%s", out, out.Error, logs)
		}
		if strings.Contains(logs, password) || !strings.Contains(logs, repo.Second) {
			t.Errorf("initialize log shows the password or not the commit:\n%s", logs)
		}
		got := s.mustRun("cat README sub/sub.txt .git/HEAD", "test -x run.sh", "echo $ERRAND_WORKSPACE")
		want := "second\nfrom the submodule\n" + repo.Second + "\n" + rt.Workspace(s.res) + "\n"
		if got != want {
			t.Errorf("the steps see %q, want %q", got, want)
		}
		// A stage's workspace is its own: a second stage checks out
		// the first commit beside it.
		s2, out, logs := initializeWith(t, rt, stageWith(srv.URL, repo.First, false))
		if out.State != errand.StateSucceeded {
			t.Fatalf("second initialize: %+v %v\n%s", out, out.Error, logs)
		}
		if got := s2.mustRun("cat README .git/HEAD"); got != "first\n"+repo.First+"\n" {
			t.Errorf("the second stage sees %q", got)
		}
	})

	t.Run("Failures", func(t *testing.T) {
		for _, c := range []struct {
			name   string
			data   tasks.InitializeData
			code   string
			reason string
		}{
			{"no such commit", stageWith(srv.URL, strings.Repeat("0", 40), false), "checkout_failed", "git fetch"},
			// The password in the URL's path shows in git's message:
			// the log and the error mask it.
			{"not a repository", stageWith(strings.Replace(srv.URL, "repo.git", password+"/none.git", 1), repo.Second, false), "checkout_failed", "not found"},
			{"wrong credential", func() tasks.InitializeData {
				d := stageWith(srv.URL, repo.Second, false)
				d.Secrets["GIT_CREDENTIALS"] = "alice:wrong-" + password
				return d
			}(), "checkout_failed", "Authentication failed"},
			{"credential missing", func() tasks.InitializeData {
				d := stageWith(srv.URL, repo.Second, false)
				d.Secrets = nil
				return d
			}(), errand.CodeSecretMissing, "GIT_CREDENTIALS"},
			{"file URL", stageWith("file://"+repo.Dir+"/repo.git", repo.Second, false), errand.CodeInvalid, "--allow-file-sources"},
			{"ext", stageWith("ext::sh -c id", repo.Second, false), errand.CodeInvalid, "not allowed"},
			{"option as commit", stageWith(srv.URL, "--upload-pack=id", false), errand.CodeInvalid, "commit"},
		} {
			t.Run(c.name, func(t *testing.T) {
				_, out, logs := initializeWith(t, rt, c.data)
				if out.State != errand.StateFailed || out.Error == nil || out.Error.Code != c.code || !strings.Contains(out.Error.Reason, c.reason) {
					t.Fatalf("initialize: %+v %v, want failed %s saying %q\n%s", out.State, out.Error, c.code, c.reason, logs)
				}
				if strings.Contains(out.Error.Reason, password) || strings.Contains(logs, password) {
					t.Errorf("the password shows: %v\n%s", out.Error, logs)
				}
			})
		}
	})
}

// initializeWith runs an initialize task with data; a stage that
// initialized is cleaned up when the test ends, and is nil when it did
// not.
func initializeWith(t *testing.T, rt Runtime, data tasks.InitializeData) (*stage, router.Outcome, string) {
	t.Helper()
	h := rt.New(t)
	s := &stage{t: t, rt: rt, h: h, r: newRouter(h)}
	id := taskID(t, int(stages.Add(1))*1000)
	out, logs := serveWith(context.Background(), t, s.r, id, h.Driver.Name()+".initialize", data, &Log{})
	if out.State != errand.StateSucceeded {
		return nil, out, logs
	}
	if err := json.Unmarshal(out.Result, &s.res); err != nil {
		t.Fatalf("initialize result %s: %v", out.Result, err)
	}
	s.dep = errand.DependencyResult{Task: id, Type: h.Driver.Name() + ".initialize", State: errand.StateSucceeded, Result: out.Result}
	t.Cleanup(func() {
		if out, logs := s.cleanup(s.r); out.State != errand.StateSucceeded {
			t.Errorf("cleanup: %+v %v\n%s", out, out.Error, logs)
		}
	})
	return s, out, logs
}

// stages numbers the initialize tasks, so that two stages of one test
// have resources of their own.
var stages atomic.Int64
