package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
)

// TestE2EPipelines drives every pipelines command and flag, runs get by
// pipeline#number and runs restart through the binary, against a
// manager and a host delegate that are binaries too.
func TestE2EPipelines(t *testing.T) {
	bin := testenv.Binary(t)
	m := testenv.StartManager(t, bin, "--log-format", "json")
	startDelegate(t, m, "pipes-host", t.TempDir())
	dir := t.TempDir()
	errand := func(wantCode int, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = dir
		cmd.Env = cleanEnv("ERRAND_MANAGER="+m.URL, "ERRAND_TOKEN="+m.AdminToken)
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState == nil {
			t.Fatalf("errand %s: %v", strings.Join(args, " "), err)
		}
		if code := cmd.ProcessState.ExitCode(); code != wantCode {
			t.Fatalf("errand %s: exit %d, want %d\n%s", strings.Join(args, " "), code, wantCode, out)
		}
		return string(out)
	}
	want := func(out, pattern string) {
		t.Helper()
		if !regexp.MustCompile(pattern).MatchString(out) {
			t.Fatalf("output does not match %q:\n%s", pattern, out)
		}
	}
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("pipeline.yml", fmt.Sprintf(`stages:
  - name: build
    steps:
      - name: compile
        commands: ['echo "built for $TARGET" | tee -a %[1]s/builds']
  - name: test
    depends: [build]
    steps:
      - name: unit
        commands: [test -f %[1]s/ok]
`, dir))
	write("spec.yml", `config: |
  stages:
    - name: hello
      steps:
        - name: say
          commands: [echo hello]
variables: {GREETING: hi}
notify:
  - slack: {url_secret: SLACK_URL, on: [failed]}
`)

	out := errand(0, "pipelines", "create", "api", "--config", "pipeline.yml", "--var", "TARGET=prod", "--webhook-secret", "HOOK_KEY")
	want(out, `(?m)^pipeline: +api$`)
	want(out, `(?m)^webhook: +secrets HOOK_KEY$`)
	want(errand(1, "pipelines", "create", "api", "--config", "pipeline.yml"), `conflict`)
	want(errand(1, "pipelines", "create", "Bad", "--config", "pipeline.yml"), `invalid`)
	out = errand(0, "pipelines", "create", "web", "--spec", "spec.yml", "-o", "json")
	var web client.Pipeline
	if err := json.Unmarshal([]byte(out), &web); err != nil || web.Variables["GREETING"] != "hi" || len(web.Notify) != 1 {
		t.Fatalf("create --spec -o json = %s (%v)", out, err)
	}
	want(errand(0, "pipelines", "create", "src", "--config-path", "ci/config.yml", "--source", `{"git":{"url":"https://example.test/r.git"}}`),
		`(?m)^config: +source:ci/config.yml$`)
	out = errand(0, "pipelines", "list", "--prefix", "a", "--limit", "5")
	want(out, `(?m)^NAME +RUNS +CONFIG`)
	want(out, `(?m)^api +0 +pipeline.yml`)
	if strings.Contains(out, "web") {
		t.Fatalf("list --prefix a shows web:\n%s", out)
	}
	out = errand(0, "pipelines", "list", "--after", "src")
	want(out, `(?m)^web `)
	want(errand(0, "pipelines", "update", "web", "--spec", "spec.yml", "--var", "GREETING=hello"), `(?m)^var GREETING: +hello$`)

	// The first run fails its test stage: --follow exits 1.
	out = errand(1, "pipelines", "run", "api", "--ref", "refs/heads/main", "--commit", "abc123", "--event", "push", "--var", "EXTRA=1", "--follow")
	want(out, `(?m)^run api#1 `)
	want(out, `built for prod`)
	out = errand(0, "runs", "get", "api#1")
	want(out, `(?m)^name: +api#1$`)
	want(out, `(?m)^trigger: +user, by admin, event push, ref refs/heads/main, commit abc123$`)
	want(out, `(?m)^result: +failed$`)
	out = errand(0, "pipelines", "runs", "api", "--trigger", "user", "--ref", "refs/heads/main", "--commit", "abc123", "--phase", "finished", "--result", "failed", "--limit", "5", "--before", "9")
	want(out, `(?m)^api#1 +finished +failed +user admin +refs/heads/main +abc123 `)
	want(errand(0, "pipelines", "get", "api"), `(?m)^api#1 +finished +failed`)

	write("ok", "")
	out = errand(0, "runs", "restart", "api#1", "--from", "failed", "--follow")
	want(out, `(?m)^run api#2 `)
	out = errand(0, "runs", "get", "api#2")
	want(out, `(?m)^result: +success$`)
	want(out, `(?m)^restart of: +\S+ \(from failed\)$`)
	want(out, `(?m)^kept: +build from \S+$`)
	if b, _ := os.ReadFile(filepath.Join(dir, "builds")); string(b) != "built for prod\n" {
		t.Fatalf("builds = %q: the kept stage ran again", b)
	}
	out = errand(0, "runs", "restart", "api#2", "--from", "start", "-o", "json")
	var third client.Run
	if err := json.Unmarshal([]byte(out), &third); err != nil || third.Name != "api#3" || third.RestartFrom != "start" {
		t.Fatalf("restart --from start -o json = %s (%v)", out, err)
	}
	want(errand(1, "runs", "restart", "api#9"), `not_found`)
	want(errand(0, "pipelines", "delete", "web"), `deleted: web`)
	want(errand(1, "pipelines", "get", "web"), `not_found`)
}
