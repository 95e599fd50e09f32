package docker_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/tasks/docker"
)

// project makes a project directory: two files, a link, and a data dir
// to leave out of copies.
func project(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range map[string]string{"a.txt": "hello\n", "sub/b.txt": "world\n", "data/errand.db": "x"} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("a.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// execute runs one step and returns its log; it must succeed.
func (e *env) execute(dep errand.DependencyResult, commands ...string) string {
	e.t.Helper()
	out, logs, _ := e.serve(context.Background(), "d1", errand.TypeDockerExecute, step(commands...), dep)
	if out.State != errand.StateSucceeded {
		e.t.Fatalf("step %q: %+v %v\n%s", commands, out, out.Error, logs)
	}
	return logs
}

// With a source, a stage's steps start with a copy of the project: they
// see its files and links, not what was excluded, and what they change
// stays in the workspace, not in the project.
func TestWorkspaceSourceCopy(t *testing.T) {
	dir := project(t)
	e := newEnv(t, func(c *docker.Config) {
		c.Source, c.Exclude = dir, []string{filepath.Join(dir, "data")}
	})
	dep, res := e.initialize("d1", stageData())
	if res.Volume == "" {
		t.Fatalf("initialize result %+v names no volume", res)
	}
	logs := e.execute(dep, "cat a.txt sub/b.txt", "readlink link", "test ! -e data", "echo changed > a.txt", "touch new.txt")
	if logs != "hello\nworld\na.txt\n" {
		t.Fatalf("step log %q", logs)
	}
	if logs := e.execute(dep, "cat a.txt", "ls new.txt"); logs != "changed\nnew.txt\n" {
		t.Fatalf("the next step sees %q", logs)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "a.txt")); string(b) != "hello\n" {
		t.Errorf("the project's a.txt became %q", b)
	}
	if _, err := os.Lstat(filepath.Join(dir, "new.txt")); err == nil {
		t.Error("a step's file appeared in the project")
	}
}

// With Bind, steps work in the project directory itself, and the stage
// has no volume.
func TestWorkspaceSourceBind(t *testing.T) {
	dir := project(t)
	e := newEnv(t, func(c *docker.Config) { c.Source, c.Bind = dir, true })
	dep, res := e.initialize("d1", stageData())
	if res.Volume != "" {
		t.Fatalf("initialize made volume %s for a bound source", res.Volume)
	}
	if _, _, v := e.count(docker.LabelInitialize + "=" + dep.Task); v != 0 {
		t.Fatalf("%d volumes for a bound source", v)
	}
	if logs := e.execute(dep, "cat a.txt", "echo made > new.txt"); logs != "hello\n" {
		t.Fatalf("step log %q", logs)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "new.txt")); err != nil || strings.TrimSpace(string(b)) != "made" {
		t.Fatalf("the step's file in the project: %q %v", b, err)
	}
	e.cleanup(dep)
	if _, err := os.Stat(filepath.Join(dir, "a.txt")); err != nil {
		t.Fatalf("cleanup touched the bound project: %v", err)
	}
}

// A source that is not a directory is refused at start.
func TestWorkspaceSourceChecked(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []docker.Config{{Source: file}, {Source: file + "-missing"}, {Bind: true}} {
		if _, err := docker.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}
