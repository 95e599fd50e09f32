package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/errandci/errand/internal/testenv"
	"github.com/errandci/errand/manager/ost/s3/s3test"
)

// TestE2ERunArtifacts: with errand run, a host stage's artifacts (files
// and a link, an excluded file left out) reach a later Docker stage,
// whose own artifacts (collected from its volume) reach a last host
// stage; a stage's artifacts declared at the stage are kept after its
// last step.
func TestE2ERunArtifacts(t *testing.T) {
	img := dockerImage(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"config.yml": `stages:
  - name: build
    artifacts: {paths: [report.txt]}
    steps:
      - name: compile
        commands:
          - mkdir -p dist/sub
          - echo hello > dist/app
          - echo nested > dist/sub/b.txt
          - echo scratch > dist/tmp.o
          - ln -s app dist/latest
        artifacts: {paths: [dist], exclude: ['**/*.o'], expire_in: 2d}
      - name: report
        commands: [echo all good > report.txt]
  - name: box
    runtime: {type: docker, image: ` + img + `, pull: never}
    depends: [build]
    needs_artifacts: [build]
    steps:
      - name: check
        commands:
          - cat dist/app dist/sub/b.txt report.txt
          - readlink dist/latest
          - test ! -e dist/tmp.o
          - mkdir -p out && echo from the box > out/box.txt
        artifacts: {paths: ['out/*.txt']}
  - name: last
    depends: [box]
    needs_artifacts: [box, build]
    steps:
      - name: read
        commands: [cat out/box.txt dist/app]
`})
	code, out, _ := runIn(t, dir, nil, "run", ".")
	mustSucceed(t, code, out)
	for _, want := range []string{
		"build/compile | artifacts: kept 3 files (13 bytes)",
		"box/check | hello\nbox/check | nested\nbox/check | all good\nbox/check | app\n",
		"box/check | artifacts: kept 1 files",
		"last/read | from the box\nlast/read | hello\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("errand run output lacks %q:\n%s", want, out)
		}
	}
}

// TestE2ERunArtifactsBadInput: a pattern that escapes the workspace is
// refused before anything runs, with its path; one that leads through a
// link out of the workspace is refused when the step ends, naming it,
// and fails the step only when the artifacts are required.
func TestE2ERunArtifactsBadInput(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"config.yml": "stages:\n  - name: a\n    steps:\n      - name: s\n        commands: [\"true\"]\n" +
		"        artifacts: {paths: [../secrets, /etc/passwd]}\n"})
	code, out, _ := runIn(t, dir, nil, "run", ".")
	if code == 0 || !strings.Contains(out, `stages[0].steps[0].artifacts.paths[0]`) || !strings.Contains(out, `"../secrets" escapes the workspace`) ||
		!strings.Contains(out, `"/etc/passwd" is absolute`) {
		t.Fatalf("errand run of escaping patterns = %d:\n%s", code, out)
	}

	dir = t.TempDir()
	writeFiles(t, dir, map[string]string{"config.yml": `stages:
  - name: a
    steps:
      - name: soft
        commands: [ln -s /etc out]
        artifacts: {paths: [out/passwd]}
      - name: hard
        commands: ["true"]
        artifacts: {paths: [out/passwd], required: true}
`})
	code, out, _ = runIn(t, dir, nil, "run", ".")
	if code == 0 || !strings.Contains(out, "✓ a/soft") || !strings.Contains(out, `a/soft | artifacts: not kept: out/passwd: out is a symbolic link`) ||
		!strings.Contains(out, "✗ a/hard") || !strings.Contains(out, "required artifacts not kept") {
		t.Fatalf("errand run with a link out of the workspace = %d:\n%s", code, out)
	}
}

// TestE2EArtifactsTwoDelegates: with a manager on MinIO and two
// delegates, a stage's artifacts reach a later stage that runs on the
// other delegate; errand artifacts list and get show and download them
// (checked against their SHA-256, links made as links); a file over the
// manager's limit is refused naming it and the limit, and the step's
// result is unaffected.
func TestE2EArtifactsTwoDelegates(t *testing.T) {
	s3c := s3test.Config(t)
	objects := fmt.Sprintf("s3://%s/%s?endpoint=%s&secure=false", s3c.Bucket, s3c.Base, s3c.Endpoint)
	m := testenv.StartManager(t, testenv.Binary(t), "--objects", objects, "--objects-part-size", "5MiB", "--objects-concurrency", "2",
		"--artifacts-max-size", "8MiB", "--artifacts-max-run-size", "64MiB", "--artifacts-expire-in", "3d",
		"--heartbeat-interval", "200ms", "--lease-ttl", "1s", "--sweep-interval", "100ms")
	one := startDelegate(t, m, "one", t.TempDir(), "--label", "host=one")
	two := startDelegate(t, m, "two", t.TempDir(), "--label", "host=two")
	defer one.signal(syscall.SIGTERM)
	defer two.signal(syscall.SIGTERM)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	waitActive(t, admin, "one")
	waitActive(t, admin, "two")

	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"config.yml": `stages:
  - name: build
    selector: {labels: {host: one}}
    steps:
      - name: compile
        commands:
          - mkdir -p dist
          - echo built on $(hostname) > dist/app.txt
          - head -c 7000000 /dev/zero | tr '\0' x > dist/big.bin
          - ln -s app.txt dist/latest
        artifacts: {paths: [dist/app.txt, dist/big.bin, dist/latest]}
      - name: huge
        commands: [head -c 9000000 /dev/zero > huge.bin]
        artifacts: {paths: [huge.bin]}
  - name: test
    depends: [build]
    needs_artifacts: [build]
    selector: {labels: {host: two}}
    steps:
      - name: check
        commands: [cat dist/app.txt, wc -c < dist/big.bin, readlink dist/latest]
`})
	clientArgs := []string{"--manager", m.URL, "--token", m.AdminToken}
	code, out := errandCmd(t, append([]string{"submit", "--follow", filepath.Join(dir, "config.yml")}, clientArgs...)...)
	if code != 0 || !strings.Contains(out, "test/check | built on") || !strings.Contains(out, "test/check | 7000000") ||
		!strings.Contains(out, "test/check | app.txt") {
		t.Fatalf("submit --follow = %d:\n%s", code, out)
	}
	if !strings.Contains(out, "✓ build/huge") || !strings.Contains(out, "artifact huge.bin is 9000000 bytes, more than the limit of 8388608 bytes per artifact (--artifacts-max-size)") {
		t.Errorf("the artifact over the limit was not refused by name, or failed its step:\n%s", out)
	}
	id := regexp.MustCompile(`run (\S+)`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("no run id in:\n%s", out)
	}
	run, err := admin.GetRun(context.Background(), id[1])
	if err != nil {
		t.Fatal(err)
	}
	delegates := map[string]string{}
	for _, st := range run.Stages {
		task, err := admin.GetTask(context.Background(), st.Steps[0].TaskID)
		if err != nil {
			t.Fatal(err)
		}
		delegates[st.Name] = task.DelegateID
	}
	if delegates["build"] == "" || delegates["build"] == delegates["test"] {
		t.Fatalf("build and test ran on delegates %q and %q, want two different ones", delegates["build"], delegates["test"])
	}

	code, out = errandCmd(t, append([]string{"artifacts", "list", id[1], "--stage", "build"}, clientArgs...)...)
	if code != 0 || !strings.Contains(out, "dist/app.txt") || !strings.Contains(out, "7000000") || !strings.Contains(out, "-> app.txt") ||
		strings.Contains(out, "huge.bin") {
		t.Fatalf("artifacts list = %d:\n%s", code, out)
	}
	code, out = errandCmd(t, append([]string{"artifacts", "list", id[1], "-o", "json"}, clientArgs...)...)
	if code != 0 || !strings.Contains(out, `"kind": "artifact_list"`) || !strings.Contains(out, `"sha256"`) {
		t.Fatalf("artifacts list -o json = %d:\n%s", code, out)
	}
	into := t.TempDir()
	code, out = errandCmd(t, append([]string{"artifacts", "get", id[1], "--path", "dist/**", "--output-dir", into}, clientArgs...)...)
	if code != 0 || !strings.Contains(out, "3 artifacts written to "+into) {
		t.Fatalf("artifacts get = %d:\n%s", code, out)
	}
	if b, err := os.ReadFile(filepath.Join(into, "dist", "app.txt")); err != nil || !strings.HasPrefix(string(b), "built on") {
		t.Errorf("dist/app.txt = %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(into, "dist", "big.bin")); err != nil || fi.Size() != 7000000 {
		t.Errorf("dist/big.bin: %v %v", fi, err)
	}
	if l, err := os.Readlink(filepath.Join(into, "dist", "latest")); err != nil || l != "app.txt" {
		t.Errorf("dist/latest = %q, %v; want a link to app.txt", l, err)
	}
	only := t.TempDir()
	code, out = errandCmd(t, append([]string{"artifacts", "get", id[1], "--path", "**/*.txt", "-o", only}, clientArgs...)...)
	if code != 0 || !strings.Contains(out, "1 artifacts written") || exists(filepath.Join(only, "dist", "big.bin")) {
		t.Fatalf("artifacts get --path '**/*.txt' = %d:\n%s", code, out)
	}
	code, out = errandCmd(t, append([]string{"artifacts", "get", id[1], "--path", "../x"}, clientArgs...)...)
	if code == 0 || !strings.Contains(out, "--path") || !strings.Contains(out, "escapes the workspace") {
		t.Fatalf("artifacts get --path ../x = %d:\n%s", code, out)
	}
	// The objects are in the bucket, under the artifacts prefix.
	list, err := admin.RunArtifacts(context.Background(), id[1], "")
	if err != nil || len(list.Items) != 3 {
		t.Fatalf("run artifacts = %+v, %v", list, err)
	}
	for _, a := range list.Items {
		if a.ExpiresAt.Sub(a.CreatedAt).Hours() != 72 {
			t.Errorf("%s expires %s after it was kept, want 3d", a.Path, a.ExpiresAt.Sub(a.CreatedAt))
		}
	}
}
