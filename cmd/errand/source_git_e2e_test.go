package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/gitsource/gittest"
	"github.com/errandci/errand/internal/testenv"
)

// gitSourceConfig checks the checkout out in a host stage and a docker
// stage: both see the same commit's files, submodule included.
const gitSourceConfig = `stages:
  - name: host
    steps:
      - name: look
        commands:
          - cat README
          - cat sub/sub.txt || echo no submodule
          - echo "host commit=$ERRAND_COMMIT head=$(git rev-parse HEAD) history=$(git rev-list --count HEAD)"
  - name: box
    runtime: {type: docker, image: IMAGE, pull: never}
    steps:
      - name: look
        commands: [cat README, 'echo "box commit=$ERRAND_COMMIT head=$(cat .git/HEAD)"']
`

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// A run submitted with a Git source checks out, in every stage of both
// runtimes, the commit its ref named when the run was made; the
// credential, given as a secret name, shows nowhere. A ref, a
// repository or a commit that does not exist fails the run in setup
// with git's words; URLs that are not allowed are refused before
// anything runs.
func TestE2ESubmitGitSource(t *testing.T) {
	img := dockerImage(t)
	group := dockerGroup(t)
	repo := gittest.NewRepo(t)
	const password = "e2e-git-pa55word"
	srv := repo.HTTP(t, "alice", password)
	t.Setenv("ERRAND_SECRET_GIT_CREDENTIALS", "alice:"+password)
	m := fastManager(t)
	d := startDelegate(t, m, "git", t.TempDir(), "--group", group)
	admin := testenv.Client(t, m.URL, m.AdminToken)
	waitActive(t, admin, "git")
	cfg := writeConfig(t, strings.Replace(gitSourceConfig, "IMAGE", img, 1))
	conn := []string{"--manager", m.URL, "--token=" + m.AdminToken}

	code, out := errandCmd(t, append([]string{"submit", "--follow", cfg, "--source-url", srv.URL, "--ref", "main",
		"--submodules", "--credentials", "GIT_CREDENTIALS"}, conn...)...)
	if code != 0 {
		t.Fatalf("submit: exit code %d:\n%s", code, out)
	}
	for _, w := range []string{"host/look | second", "host/look | from the submodule",
		"host commit=" + repo.Second + " head=" + repo.Second + " history=1",
		"box/look | second", "box commit=" + repo.Second + " head=" + repo.Second} {
		if !strings.Contains(out, w) {
			t.Errorf("submit output lacks %q:\n%s", w, out)
		}
	}
	id := regexp.MustCompile(`run (\S+) `).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("no run id in:\n%s", out)
	}
	code, out = errandCmd(t, append([]string{"runs", "get", id[1], "-o", "json"}, conn...)...)
	var run client.Run
	if err := json.Unmarshal([]byte(out), &run); code != 0 || err != nil {
		t.Fatalf("runs get: %d %v\n%s", code, err, out)
	}
	if run.Commit != repo.Second || run.Source == nil || run.Source.Git.URL != srv.URL || run.Source.Git.Ref != "main" {
		t.Errorf("the run shows source %+v commit %q", run.Source, run.Commit)
	}
	for _, st := range run.Stages {
		if log := taskLog(t, admin, st.InitializeTask); !strings.Contains(log, "+ git fetch") || strings.Contains(log, password) {
			t.Errorf("stage %s setup log:\n%s", st.Name, log)
		}
	}

	// The same through the environment: a commit instead of a ref, the
	// whole history, no submodules.
	env := []string{"ERRAND_SOURCE_URL=" + srv.URL, "ERRAND_SOURCE_COMMIT=" + repo.Second, "ERRAND_SOURCE_DEPTH=0",
		"ERRAND_SOURCE_CREDENTIALS=GIT_CREDENTIALS", "ERRAND_SOURCE_SUBMODULES=false", "ERRAND_SOURCE_LFS=false", "ERRAND_SOURCE_REF=main"}
	code, out = errandCmdEnv(t, env, append([]string{"submit", "-f", cfg}, conn...)...)
	if code != 0 || !strings.Contains(out, "host/look | no submodule") || !strings.Contains(out, "history=2") {
		t.Fatalf("submit with ERRAND_SOURCE_*: exit code %d:\n%s", code, out)
	}

	// Setup errors: nothing runs, git's words are shown.
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--source-url", srv.URL, "--ref", "nope", "--credentials", "GIT_CREDENTIALS"}, 2, "source.git.ref: nope: ref not found in " + srv.URL},
		{[]string{"--source-url", strings.Replace(srv.URL, "repo.git", "none.git", 1), "--credentials", "GIT_CREDENTIALS"}, 2, "not found"},
		{[]string{"--source-url", srv.URL}, 2, "Authentication failed"},
		{[]string{"--source-url", srv.URL, "--credentials", "NO_SUCH_SECRET"}, 2, "secret NO_SUCH_SECRET is not set"},
		{[]string{"--source-url", srv.URL, "--credentials", "GIT_CREDENTIALS", "--commit", strings.Repeat("0", 40)}, 1, "checkout_failed"},
		{[]string{"--source-url", "file://" + filepath.Join(repo.Dir, "repo.git")}, 2, "--allow-file-sources"},
		{[]string{"--source-url", "file://" + filepath.Join(repo.Dir, "repo.git"), "--commit", repo.Second}, 1, "file URLs are refused here"},
		{[]string{"--source-url", "ext::sh -c id"}, 2, "source.git.url"},
		{[]string{"--source-url", srv.URL, "--ref=--upload-pack=id"}, 2, "must not start with '-'"},
		{[]string{"--ref", "main"}, 2, "need --source-url"},
		{[]string{"--source-url", srv.URL, "--depth", "x"}, 2, "--depth"},
	} {
		code, out := errandCmd(t, append(append([]string{"submit", "--follow", cfg}, c.args...), conn...)...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("submit %v: exit code %d, want %d saying %q:\n%s", c.args, code, c.code, c.want, out)
		}
		if strings.Contains(out, password) {
			t.Errorf("submit %v shows the password:\n%s", c.args, out)
		}
	}
	for what, text := range map[string]string{"the manager": m.Output(), "the delegate": d.out.String()} {
		if strings.Contains(text, password) {
			t.Errorf("%s logged the password", what)
		}
	}
}

// File URLs are read by a manager and a delegate started with
// --allow-file-sources; Git LFS objects come with --lfs.
func TestE2EGitSourceFileAndLFS(t *testing.T) {
	repo := gittest.NewLFSRepo(t)
	m := testenv.StartManager(t, testenv.Binary(t), "--heartbeat-interval", "200ms", "--allow-file-sources")
	startDelegate(t, m, "lfs", t.TempDir(), "--allow-file-sources")
	admin := testenv.Client(t, m.URL, m.AdminToken)
	waitActive(t, admin, "lfs")
	cfg := writeConfig(t, "stages:\n  - name: big\n    steps:\n      - name: cat\n        commands: [head -c 18 big.bin]\n")
	conn := []string{"--manager", m.URL, "--token=" + m.AdminToken}
	for _, c := range []struct {
		lfs  []string
		want string
	}{
		{[]string{"--lfs"}, "big/cat | large file content"},
		{nil, "big/cat | version https://gi"},
	} {
		code, out := errandCmd(t, append(append([]string{"submit", "--follow", cfg, "--source-url", "file://" + repo.Bare}, c.lfs...), conn...)...)
		if code != 0 || !strings.Contains(out, c.want) {
			t.Errorf("submit %v: exit code %d, want %q:\n%s", c.lfs, code, c.want, out)
		}
	}
}

// checkoutConfig shows which files a local run's workspace holds.
const checkoutConfig = `stages:
  - name: look
    steps:
      - name: files
        commands:
          - cat data.txt
          - cat sub/sub.txt 2>/dev/null || echo no submodule
          - test -e untracked.txt && echo untracked here || echo no untracked
          - echo "commit=$ERRAND_COMMIT"
`

// errand run uses the work tree as it is; with --checkout, the files of
// its HEAD commit (submodules included), in the project's directory of
// the work tree.
func TestE2ERunCheckout(t *testing.T) {
	sub := gittest.NewRepo(t)
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gittest.Run(t, dir, "init", "-q", "-b", "main")
	write("config.yml", checkoutConfig)
	write("data.txt", "committed\n")
	write("app/config.yml", "stages:\n  - name: app\n    steps:\n      - name: cat\n        commands: [cat app.txt]\n")
	write("app/app.txt", "app committed\n")
	gittest.Run(t, dir, "add", "-A")
	gittest.Run(t, dir, "-c", "protocol.file.allow=always", "submodule", "add", "-q", filepath.Join(sub.Dir, "sub.git"), "sub")
	gittest.Run(t, dir, "commit", "-q", "-m", "project")
	head := gittest.Run(t, dir, "rev-parse", "HEAD")
	write("data.txt", "changed in the work tree\n")
	write("app/app.txt", "app changed\n")
	write("untracked.txt", "x")

	code, out := errandCmd(t, "run", "--no-color", dir)
	if code != 0 || !strings.Contains(out, "look/files | changed in the work tree") || !strings.Contains(out, "look/files | untracked here") ||
		!strings.Contains(out, "look/files | commit=\n") {
		t.Errorf("errand run: exit code %d:\n%s", code, out)
	}
	code, out = errandCmd(t, "run", "--no-color", "--checkout", dir)
	for _, w := range []string{"look/files | committed\n", "look/files | from the submodule", "look/files | no untracked", "look/files | commit=" + head,
		"the workspace is commit " + head} {
		if code != 0 || !strings.Contains(out, w) {
			t.Errorf("errand run --checkout: exit code %d, want %q:\n%s", code, w, out)
		}
	}
	code, out = errandCmdEnv(t, []string{"ERRAND_RUN_CHECKOUT=true"}, "run", "--no-color", filepath.Join(dir, "app"))
	if code != 0 || !strings.Contains(out, "app/cat | app committed") {
		t.Errorf("ERRAND_RUN_CHECKOUT in a subdirectory: exit code %d:\n%s", code, out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "data.txt")); string(b) != "changed in the work tree\n" {
		t.Errorf("the work tree changed: data.txt holds %q", b)
	}

	code, out = errandCmd(t, "run", "--checkout", "--bind", dir)
	if code != exitUsage || !strings.Contains(out, "--checkout and --bind") {
		t.Errorf("--checkout --bind: exit code %d:\n%s", code, out)
	}
	plain := t.TempDir()
	if err := os.WriteFile(filepath.Join(plain, "config.yml"), []byte(checkoutConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out = errandCmd(t, "run", "--checkout", plain)
	if code != exitUsage || !strings.Contains(out, "not in a Git work tree") {
		t.Errorf("--checkout outside a work tree: exit code %d:\n%s", code, out)
	}
}
