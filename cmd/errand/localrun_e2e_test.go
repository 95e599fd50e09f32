package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/errandci/errand/internal/testenv"
)

// runIn runs the built binary in dir with extra environment and
// returns its exit code and combined output. TMPDIR is a fresh directory
// of the test's, returned so that a test can check nothing is left in it.
func runIn(t *testing.T, dir string, env []string, args ...string) (int, string, string) {
	t.Helper()
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Binary(t), args...)
	cmd.Dir = dir
	cmd.Env = cleanEnv(append([]string{"TMPDIR=" + tmp}, env...)...)
	out, err := cmd.CombinedOutput()
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("errand %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), string(out), tmp
}

// writeFiles writes files (slash path → content) under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func gitInit(t *testing.T, dir string) {
	t.Helper()
	for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}} {
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		cmd.Env = cleanEnv("GIT_CONFIG_GLOBAL=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func mustSucceed(t *testing.T, code int, out string) {
	t.Helper()
	if code != 0 {
		t.Fatalf("exit code %d, want 0; output:\n%s", code, out)
	}
}

func TestE2ERunWorkspaceIsTheProject(t *testing.T) {
	project := t.TempDir()
	writeFiles(t, project, map[string]string{
		"src/a.txt":   "from the project\n",
		"ignored.txt": "ignored\n",
		".gitignore":  "ignored.txt\n",
		"config.yml": `stages:
  - name: build
    steps:
      - name: use
        commands:
          - cat src/a.txt
          - if test -e ignored.txt; then echo ignored present; else echo ignored absent; fi
          - if test -e data; then echo data present; else echo data absent; fi
          - rm src/a.txt
          - echo new > new.txt
`,
	})
	gitInit(t, project)

	code, out, _ := runIn(t, project, nil, "run")
	mustSucceed(t, code, out)
	for _, w := range []string{"build/use | from the project", "build/use | ignored absent"} {
		if !strings.Contains(out, w) {
			t.Errorf("copy: output lacks %q:\n%s", w, out)
		}
	}
	if !exists(filepath.Join(project, "src", "a.txt")) || exists(filepath.Join(project, "new.txt")) {
		t.Fatalf("a step changed the project in copy mode:\n%s", out)
	}

	// A data dir inside the project is not copied into the workspace.
	code, out, _ = runIn(t, project, nil, "run", "--data-dir", "data")
	mustSucceed(t, code, out)
	if !strings.Contains(out, "build/use | data absent") {
		t.Errorf("the run's data dir was copied into its workspace:\n%s", out)
	}
	if err := os.RemoveAll(filepath.Join(project, "data")); err != nil {
		t.Fatal(err)
	}

	// --bind, here through its variable: the steps run in the project.
	code, out, _ = runIn(t, project, []string{"ERRAND_RUN_BIND=true"}, "run")
	mustSucceed(t, code, out)
	if !strings.Contains(out, "build/use | ignored present") {
		t.Errorf("bind: output lacks the ignored file:\n%s", out)
	}
	if exists(filepath.Join(project, "src", "a.txt")) || !exists(filepath.Join(project, "new.txt")) {
		t.Fatalf("with --bind the step did not change the project:\n%s", out)
	}
	if !exists(project) {
		t.Fatal("cleanup removed the bound project")
	}
}

func TestE2ERunWorkdir(t *testing.T) {
	project, configs := t.TempDir(), t.TempDir()
	writeFiles(t, project, map[string]string{"src/a.txt": "in the workdir\n"})
	writeFiles(t, configs, map[string]string{"config.yml": "stages:\n  - name: s\n    steps:\n      - name: cat\n        commands: [cat src/a.txt]\n"})
	code, out, _ := runIn(t, configs, nil, "run", "--workdir", project)
	mustSucceed(t, code, out)
	if !strings.Contains(out, "s/cat | in the workdir") {
		t.Fatalf("output lacks the workdir's file:\n%s", out)
	}
	code, out, _ = runIn(t, configs, []string{"ERRAND_WORKDIR=" + project}, "run")
	mustSucceed(t, code, out)
	if !strings.Contains(out, "s/cat | in the workdir") {
		t.Fatalf("ERRAND_WORKDIR: output lacks the workdir's file:\n%s", out)
	}
}

// The README's example builds a Go project from its own directory.
func TestE2ERunGoBuildInProject(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatal("go is needed on PATH")
	}
	project := t.TempDir()
	writeFiles(t, project, map[string]string{
		"go.mod":  "module example.com/hello\n\ngo 1.22\n",
		"main.go": "package main\n\nfunc main() { println(\"hello\") }\n",
		"config.yml": `stages:
  - name: build
    environment: {GOFLAGS: -mod=mod}
    steps:
      - name: compile
        commands: [go build ./..., go vet ./...]
`,
	})
	code, out, _ := runIn(t, project, []string{"GOTOOLCHAIN=local"}, "run")
	mustSucceed(t, code, out)
}

func TestE2ERunListStageDryRun(t *testing.T) {
	project := t.TempDir()
	writeFiles(t, project, map[string]string{"config.yml": `stages:
  - name: build
    steps:
      - name: compile
        commands: [echo compiling]
  - name: test
    depends: [build]
    steps:
      - name: unit
        commands: [echo testing]
  - name: docs
    steps:
      - name: html
        commands: [echo docs]
  - name: report
    depends: [{stage: test, conditions: [always]}]
    steps:
      - name: mail
        commands: [echo report]
`})
	code, out, _ := runIn(t, project, nil, "run", "--list")
	mustSucceed(t, code, out)
	if _, byVar, _ := runIn(t, project, []string{"ERRAND_RUN_LIST=true"}, "run"); byVar != out {
		t.Errorf("ERRAND_RUN_LIST=true printed:\n%s\nwant:\n%s", byVar, out)
	}
	for _, w := range []string{"STAGE", "DEPENDS ON", "test    host     build", "report  host     test (always)", "compile"} {
		if !strings.Contains(out, w) {
			t.Errorf("--list lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "compiling") {
		t.Errorf("--list ran a step:\n%s", out)
	}

	for _, c := range []struct {
		name string
		env  []string
		args []string
	}{
		{"flag", nil, []string{"run", "--stage", "test"}},
		{"variable", []string{"ERRAND_RUN_STAGE=test"}, []string{"run"}},
	} {
		code, out, _ = runIn(t, project, c.env, c.args...)
		mustSucceed(t, code, out)
		if !strings.Contains(out, "build/compile | compiling") || !strings.Contains(out, "test/unit | testing") {
			t.Errorf("%s: --stage test did not run test and build:\n%s", c.name, out)
		}
		if strings.Contains(out, "docs") || strings.Contains(out, "report") {
			t.Errorf("%s: --stage test ran other stages:\n%s", c.name, out)
		}
	}
	code, out, _ = runIn(t, project, nil, "run", "--stage", "tset")
	if code != exitUsage || !strings.Contains(out, `did you mean "test"`) {
		t.Errorf("--stage tset: exit %d, want 2 with a suggestion:\n%s", code, out)
	}

	for _, env := range [][]string{nil, {"ERRAND_RUN_DRY_RUN=1"}} {
		args := []string{"run", "--stage", "report"}
		if env == nil {
			args = append(args, "--dry-run")
		}
		code, out, _ = runIn(t, project, env, args...)
		mustSucceed(t, code, out)
		for _, w := range []string{"TASK", "build/initialize", "exec.initialize", "test/unit", "report/mail", "test/cleanup (always)"} {
			if !strings.Contains(out, w) {
				t.Errorf("--dry-run lacks %q:\n%s", w, out)
			}
		}
		if strings.Contains(out, "compiling") || strings.Contains(out, "docs/") {
			t.Errorf("--dry-run ran a step or kept an unselected stage:\n%s", out)
		}
	}
}

func TestE2ERunEnvAndSecretFiles(t *testing.T) {
	project := t.TempDir()
	writeFiles(t, project, map[string]string{
		"vars.env":    "# settings\nWHO=file\nexport GREETING=\"hello there\"\n",
		"secrets.env": "TOKEN=fromfile1\n",
		"config.yml": `stages:
  - name: use
    secrets: [TOKEN, OTHER]
    steps:
      - name: show
        commands: ['echo "$GREETING who=$WHO token=${#TOKEN} other=${#OTHER}"', 'echo "$TOKEN $OTHER"']
`,
	})
	cases := []struct {
		name string
		env  []string
		args []string
	}{
		{"flags", []string{"OTHER=xyz9"}, []string{"run", "--env-file", "vars.env", "--secret-file", "secrets.env"}},
		{"variables", []string{"OTHER=xyz9", "ERRAND_ENV_FILE=vars.env", "ERRAND_SECRET_FILE=secrets.env"}, []string{"run"}},
	}
	for _, c := range cases {
		code, out, _ := runIn(t, project, c.env, c.args...)
		mustSucceed(t, code, out)
		if !strings.Contains(out, "use/show | hello there who=file token=9 other=4") {
			t.Errorf("%s: values not given:\n%s", c.name, out)
		}
		if strings.Contains(out, "fromfile1") || strings.Contains(out, "xyz9") {
			t.Errorf("%s: a secret was printed:\n%s", c.name, out)
		}
	}
}

func TestE2ERunBadInput(t *testing.T) {
	project := t.TempDir()
	good := "stages:\n  - name: s\n    steps:\n      - name: x\n        commands: [touch ran]\n"
	writeFiles(t, project, map[string]string{
		"config.yml": good, "empty/README": "no config here\n", "bad.env": "OK=1\nnot a valid line\n",
		"secret/config.yml": "stages:\n  - name: s\n    secrets: [ERRAND_TEST_UNSET_SECRET]\n    steps:\n      - name: x\n        commands: [touch ../ran]\n",
	})
	if err := os.MkdirAll(filepath.Join(project, "dirconfig", "config.yml"), 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"flag typo", []string{"run", "--stgae", "s"}, "--stgae"},
		{"missing path", []string{"run", "nowhere"}, "nowhere: no such file or directory"},
		{"no config", []string{"run", "empty"}, "no config.jsonnet, config.json, config.yml, config.yaml in empty"},
		{"config is a directory", []string{"run", "dirconfig"}, "config.yml is a directory"},
		{"config file named is a directory", []string{"run", "dirconfig/config.yml"}, "dirconfig/config.yml is a directory, not a config file"},
		{"missing env file", []string{"run", "--env-file", "nope.env"}, "--env-file nope.env: no such file or directory"},
		{"env file is a directory", []string{"run", "--secret-file", "empty"}, "--secret-file empty: is a directory"},
		{"bad env line", []string{"run", "--env-file", "bad.env"}, "--env-file bad.env:2:"},
		{"missing workdir", []string{"run", "--workdir", "nope"}, "--workdir nope: no such file or directory"},
		{"missing secret", []string{"run", "secret"}, "missing secrets: ERRAND_TEST_UNSET_SECRET: give them with --secret"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, tmp := runIn(t, project, nil, c.args...)
			if code != exitUsage || !strings.Contains(out, c.want) {
				t.Fatalf("exit %d, want 2 with %q:\n%s", code, c.want, out)
			}
			if exists(filepath.Join(project, "ran")) {
				t.Fatal("a step ran")
			}
			if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
				t.Fatalf("left behind in TMPDIR: %v", entries)
			}
		})
	}
}

// startRun starts errand run in the background with its own TMPDIR.
func startRun(t *testing.T, dir string, args ...string) (*exec.Cmd, *lineRecorder, string) {
	t.Helper()
	tmp := t.TempDir()
	cmd := exec.Command(testenv.Binary(t), args...)
	cmd.Dir = dir
	cmd.Env = cleanEnv("TMPDIR=" + tmp)
	out := newLineRecorder()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, out, tmp
}

// A closed terminal (SIGHUP) or pipe (SIGPIPE) stops a run as Ctrl-C
// does: cancelled, cleanups run, the temporary data dir removed.
func TestE2ERunHangupCleansUp(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGPIPE} {
		t.Run(sig.String(), func(t *testing.T) {
			project := t.TempDir()
			writeFiles(t, project, map[string]string{"config.yml": slowConfig})
			cmd, out, tmp := startRun(t, project, "run")
			out.waitFor(t, "slow/wait | started", 30*time.Second)
			if entries, _ := os.ReadDir(tmp); len(entries) == 0 {
				t.Fatal("no data dir in TMPDIR while the run lasts")
			}
			_ = cmd.Process.Signal(sig)
			_ = cmd.Wait()
			if code := cmd.ProcessState.ExitCode(); code != exitRunInterrupted {
				t.Fatalf("exit code %d, want %d; output:\n%s", code, exitRunInterrupted, out.String())
			}
			if !strings.Contains(out.String(), "cancelled") {
				t.Errorf("output does not say the run was cancelled:\n%s", out.String())
			}
			if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
				t.Fatalf("left behind in TMPDIR: %v", entries)
			}
		})
	}
}

func TestE2ERunSecondInterruptKills(t *testing.T) {
	project := t.TempDir()
	child := filepath.Join(project, "child.pid")
	// The step ignores SIGTERM, so a cancel alone waits for the kill
	// grace (5s).
	writeFiles(t, project, map[string]string{"config.yml": `stages:
  - name: stubborn
    steps:
      - name: wait
        commands: ["trap '' TERM; sleep 300 & echo $! > ` + child + `; echo started; wait"]
`})
	cmd, out, tmp := startRun(t, project, "run", "--bind")
	out.waitFor(t, "stubborn/wait | started", 30*time.Second)
	b, err := os.ReadFile(child)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	out.waitFor(t, "interrupted", 10*time.Second)
	start := time.Now()
	_ = cmd.Process.Signal(syscall.SIGINT)
	_ = cmd.Wait()
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("the second interrupt took %s to end the process", took)
	}
	if code := cmd.ProcessState.ExitCode(); code != exitRunInterrupted {
		t.Fatalf("exit code %d, want %d; output:\n%s", code, exitRunInterrupted, out.String())
	}
	deadline := time.Now().Add(5 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the step's process %d outlived errand run", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Fatalf("left behind in TMPDIR: %v", entries)
	}
}

// gone reports whether pid no longer runs (a zombie counts as gone).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+1:])
	return len(f) > 0 && f[0] == "Z"
}

func TestE2ERunDockerUnreachableFailsFast(t *testing.T) {
	project := t.TempDir()
	writeFiles(t, project, map[string]string{"config.yml": `stages:
  - name: box
    runtime: {type: docker, image: errand-test/busybox:latest, pull: never}
    steps:
      - name: s
        commands: [echo hi]
`})
	start := time.Now()
	code, out, tmp := runIn(t, project, []string{"DOCKER_HOST=unix://" + filepath.Join(project, "no-docker.sock")}, "run")
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("errand run took %s with Docker unreachable", took)
	}
	if code != exitFailed || strings.Contains(out, "✓") {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Fatalf("left behind in TMPDIR: %v", entries)
	}
}
