package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
)

// jsonnetAttacks are programs that crashed, exhausted or outlived the
// manager that evaluated them, with the message each must now end with.
// Only the endless program is given the short time limit: the others
// must meet the bound they test (memory, stack) however slowly a loaded
// machine runs them.
var jsonnetAttacks = []struct {
	name, src, want string
}{
	{"tailstrict recursion", `local f(n) = if n < 0 then 0 else f(n + 1) tailstrict; {stages: [], x: f(0)}`,
		"stack overflow (deep recursion)"},
	{"range", `{stages: [], x: std.range(1, 1e9)}`, "exceeded its memory limit of 128 MiB"},
	{"makeArray", `{stages: [], x: std.makeArray(1e8, function(i) i)}`, "exceeded its memory limit of 128 MiB"},
	{"endless loop", `{stages: [], x: std.foldl(function(a, i) std.foldl(function(b, j) b + 1, std.range(1, 100000), a), std.range(1, 100000), 0)}`,
		"exceeded its time limit of 3s"},
}

// maxManagerRSS is the most memory the manager may hold after the attacks.
const maxManagerRSS = 300 << 20

// attackTimeout is the time limit an attack is evaluated with: 3s for
// the one that tests it, more for the others.
func attackTimeout(want string) string {
	if strings.Contains(want, "time limit") {
		return "3s"
	}
	return "15s"
}

func TestE2EJsonnetAttacksManager(t *testing.T) {
	m := testenv.StartManager(t, testenv.Binary(t), "--jsonnet-timeout", "3s", "--jsonnet-memory", "128MiB")
	c := testenv.Client(t, m.URL, m.AdminToken)
	slow := testenv.StartManager(t, testenv.Binary(t), "--jsonnet-timeout", "15s", "--jsonnet-memory", "128MiB")
	cSlow := testenv.Client(t, slow.URL, slow.AdminToken)
	submitTo := func(t *testing.T, c *client.HTTP, src string, ext map[string]string) *client.Run {
		t.Helper()
		run, err := c.CreateRun(t.Context(), &client.RunRequest{Filename: "config.jsonnet", Config: src, ExtStr: ext})
		if err != nil {
			t.Fatalf("POST /api/v1/runs: %v", err)
		}
		return run
	}
	for _, a := range jsonnetAttacks {
		t.Run(a.name, func(t *testing.T) {
			on, onClient, within := m, c, 15*time.Second
			if attackTimeout(a.want) != "3s" {
				on, onClient, within = slow, cSlow, 20*time.Second
			}
			start := time.Now()
			run := submitTo(t, onClient, a.src, nil)
			if run.Phase != "setuperror" || len(run.SetupErrors) == 0 || !strings.Contains(run.SetupErrors[0].Message, a.want) {
				t.Errorf("run %s: %+v, want a setuperror with %q", run.Phase, run.SetupErrors, a.want)
			}
			if d := time.Since(start); d > within {
				t.Errorf("answered after %s", d)
			}
			checkManagerHealthy(t, on)
		})
	}
	t.Run("more endless programs than slots", func(t *testing.T) {
		var wg sync.WaitGroup
		runs := make([]*client.Run, 6)
		for i := range runs {
			wg.Go(func() { runs[i] = submitTo(t, c, jsonnetAttacks[3].src, nil) })
		}
		wg.Wait()
		for _, run := range runs {
			if run == nil {
				continue
			}
			if run.Phase != "setuperror" || len(run.SetupErrors) == 0 || !strings.Contains(run.SetupErrors[0].Message, "time limit of 3s") {
				t.Errorf("run %s: %+v, want a setuperror with the time limit", run.Phase, run.SetupErrors)
			}
		}
		checkManagerHealthy(t, m)
	})
	t.Run("a legitimate config still works", func(t *testing.T) {
		src, err := os.ReadFile("../../examples/matrix/config.jsonnet")
		if err != nil {
			t.Fatal(err)
		}
		run := submitTo(t, c, string(src), map[string]string{"go_versions": "1.25,1.26,1.27"})
		if run.Phase == "setuperror" || len(run.Stages) != 4 {
			t.Fatalf("examples/matrix: phase %s, %d stages, %+v", run.Phase, len(run.Stages), run.SetupErrors)
		}
		checkManagerHealthy(t, m)
	})
}

// checkManagerHealthy checks that the manager answers /healthz and holds
// less than maxManagerRSS.
func checkManagerHealthy(t *testing.T, m *testenv.Manager) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.URL+"/healthz", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("manager does not answer /healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz = %s", resp.Status)
	}
	if rss := processRSS(t, m.Cmd.Process.Pid); rss > maxManagerRSS {
		t.Errorf("manager RSS %d MiB, want under %d MiB", rss>>20, maxManagerRSS>>20)
	}
	// No evaluator outlives its answer.
	deadline := time.Now().Add(5 * time.Second)
	for {
		kids := childProcesses(t, m.Cmd.Process.Pid)
		if len(kids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("manager still has child processes %v after answering", kids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// childProcesses returns the processes whose parent is pid.
func childProcesses(t *testing.T, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var kids []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue // ended meanwhile
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PPid:"); ok && strings.TrimSpace(v) == strconv.Itoa(pid) {
				kids = append(kids, p)
			}
		}
	}
	return kids
}

// processRSS reads the resident set size of a process (VmRSS).
func processRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read the manager's status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in the manager's status")
	return 0
}

func TestE2EJsonnetAttacksLocal(t *testing.T) {
	for _, a := range jsonnetAttacks {
		t.Run(a.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "config.jsonnet"), []byte(a.src), 0o644); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			code, out := errandCmd(t, "run", dir, "--jsonnet-timeout", attackTimeout(a.want), "--jsonnet-memory", "128MiB")
			if code != exitConfigError || !strings.Contains(out, a.want) {
				t.Errorf("errand run = %d, want %d and %q:\n%s", code, exitConfigError, a.want, out)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("errand run ended after %s", d)
			}
		})
	}
	t.Run("submit", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "config.jsonnet"), []byte(jsonnetAttacks[1].src), 0o644); err != nil {
			t.Fatal(err)
		}
		// Rendered before the manager is asked anything: none is needed.
		code, out := errandCmd(t, "submit", dir, "--manager", "http://127.0.0.1:1", "--token", strings.Repeat("x", 32),
			"--jsonnet-timeout", "3s", "--jsonnet-memory", "128MiB")
		if code != exitConfigError || !strings.Contains(out, jsonnetAttacks[1].want) {
			t.Errorf("errand submit = %d, want %d and %q:\n%s", code, exitConfigError, jsonnetAttacks[1].want, out)
		}
	})
	t.Run("bad limits", func(t *testing.T) {
		code, out := errandCmd(t, "run", "examples/matrix", "--jsonnet-memory", "1MiB")
		if code != exitUsage || !strings.Contains(out, "--jsonnet-memory must be at least 64 MiB") {
			t.Errorf("errand run --jsonnet-memory 1MiB = %d:\n%s", code, out)
		}
		code, out = errandCmd(t, "manager", "--data-dir", t.TempDir(), "--jsonnet-timeout", "0s")
		if code != exitUsage || !strings.Contains(out, "--jsonnet-timeout must be positive") {
			t.Errorf("errand manager --jsonnet-timeout 0s = %d:\n%s", code, out)
		}
	})
}
