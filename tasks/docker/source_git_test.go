package docker_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/gitsource/gittest"
	"github.com/errandci/errand/tasks"
	"github.com/errandci/errand/tasks/docker"
)

// A Git source is checked out on the host, in a directory under
// CheckoutDir that is gone once the volume holds the checkout; it wins
// over a project directory the delegate copies, and a checkout that
// fails leaves no volume behind. With Bind it is refused.
func TestWorkspaceGitCheckout(t *testing.T) {
	repo := gittest.NewRepo(t)
	url := repo.Daemon(t)
	checkouts := t.TempDir()
	e := newEnv(t, func(c *docker.Config) { c.CheckoutDir, c.Source = checkouts, project(t) })
	data := stageData()
	data.Checkout = &tasks.GitCheckout{GitSource: errand.GitSource{URL: url, Submodules: true}, Commit: repo.Second}
	dep, _ := e.initialize("d1", data)
	if entries, _ := os.ReadDir(checkouts); len(entries) != 0 {
		t.Errorf("the checkout directory holds %v after initialize", entries)
	}
	if logs := e.execute(dep, "cat README sub/sub.txt", "test ! -e a.txt", "cat sub/.git"); logs != "second\nfrom the submodule\ngitdir: ../.git/modules/sub\n" {
		t.Errorf("step log %q", logs)
	}

	data.Checkout.Commit = strings.Repeat("1", 40)
	out, logs, id := e.serve(context.Background(), "d1", errand.TypeDockerInitialize, data)
	if out.State != errand.StateFailed || out.Error.Code != "checkout_failed" {
		t.Fatalf("initialize with a commit that does not exist: %+v %v\n%s", out.State, out.Error, logs)
	}
	if c, n, v := e.count(docker.LabelInitialize + "=" + id); c+n+v != 0 {
		t.Errorf("a failed checkout left %d containers, %d networks, %d volumes", c, n, v)
	}
	if entries, _ := os.ReadDir(checkouts); len(entries) != 0 {
		t.Errorf("a failed checkout left %v", entries)
	}

	bound := newEnv(t, func(c *docker.Config) { c.Source, c.Bind = project(t), true })
	data.Checkout.Commit = repo.Second
	out, _, _ = bound.serve(context.Background(), "d1", errand.TypeDockerInitialize, data)
	if out.State != errand.StateFailed || !strings.Contains(out.Error.Reason, "--bind") {
		t.Errorf("a Git source with Bind: %+v %v", out.State, out.Error)
	}
}
