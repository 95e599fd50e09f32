package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/errandci/errand/internal/testenv"
	"github.com/errandci/errand/manager/store/postgres/pgtest"
)

// runBench runs `errand bench ARGS…` through the binary and returns its
// standard output, failing on a non-zero exit.
func runBench(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(testenv.Binary(t), append([]string{"bench"}, args...)...)
	cmd.Env = cleanEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("errand bench %s: %v\n%s\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// benchLines decodes --json output: one object a line.
func benchLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

// finalLine returns the final line of bench, failing if there is none.
func finalLine(t *testing.T, lines []map[string]any, bench string) map[string]any {
	t.Helper()
	for _, l := range lines {
		if l["bench"] == bench && l["phase"] == "final" {
			return l
		}
	}
	t.Fatalf("no final line of %s in %v", bench, lines)
	return nil
}

// A burn-down of 60 tasks counts 60, prints JSON lines, and a second run
// compares itself with the first's figures.
func TestBenchDispatchBurnDownAndBaseline(t *testing.T) {
	out := runBench(t, nil, "dispatch", "--count", "60", "--delegates", "2", "--capacity", "3", "--batch", "25", "--interval", "50ms", "--json")
	lines := benchLines(t, out)
	final := finalLine(t, lines, "dispatch")
	if final["tasks"] != 60.0 || final["delegates"] != 2.0 || final["tasks_per_s"].(float64) <= 0 {
		t.Fatalf("final line %v, want 60 tasks by 2 delegates", final)
	}
	if lines[0]["phase"] != "created" || lines[0]["tasks"] != 60.0 {
		t.Errorf("first line %v, want the 60 tasks created", lines[0])
	}
	base := filepath.Join(t.TempDir(), "base.json")
	if err := os.WriteFile(base, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	again := runBench(t, []string{"ERRAND_BENCH_COUNT=30"}, "dispatch", "--delegates", "1", "--baseline", base)
	if !strings.Contains(again, "bench=dispatch phase=final delegates=1 ") || !strings.Contains(again, " tasks=30 ") {
		t.Fatalf("second run (ERRAND_BENCH_COUNT=30):\n%s", again)
	}
	if !strings.Contains(again, "bench=dispatch phase=baseline metric=tasks_per_s now=") || !strings.Contains(again, "baseline=") {
		t.Fatalf("no comparison with the baseline:\n%s", again)
	}
}

// Without -n the bench runs for --duration, keeping a backlog, and prints
// progress lines meanwhile.
func TestBenchDispatchDuration(t *testing.T) {
	out := runBench(t, nil, "dispatch", "--count", "0", "--duration", "1s", "--delegates", "1", "--interval", "100ms")
	if !strings.Contains(out, "bench=dispatch phase=progress elapsed_s=") || !strings.Contains(out, "bench=dispatch phase=final ") {
		t.Fatalf("output:\n%s", out)
	}
}

// Pickup, log ingestion and host steps, each with a handful of samples.
func TestBenchPickupLogsStep(t *testing.T) {
	p := finalLine(t, benchLines(t, runBench(t, nil, "pickup", "-n", "5", "--json")), "pickup")
	if p["samples"] != 5.0 || p["p50_ms"].(float64) <= 0 || p["p99_ms"].(float64) < p["p50_ms"].(float64) {
		t.Fatalf("pickup final line %v", p)
	}
	l := finalLine(t, benchLines(t, runBench(t, nil, "logs", "-n", "8", "--lines", "50", "--writers", "2", "--json")), "logs")
	if l["lines"] != 400.0 || l["writers"] != 2.0 || l["visible_p50_ms"].(float64) <= 0 {
		t.Fatalf("logs final line %v, want 8 batches of 50 lines from 2 writers", l)
	}
	s := finalLine(t, benchLines(t, runBench(t, nil, "step", "-n", "3", "--json")), "step")
	if s["steps"] != 3.0 || s["step_p50_ms"].(float64) <= 0 {
		t.Fatalf("step final line %v", s)
	}
}

// Replicas on one PostgreSQL: tasks created on one replica are run by
// delegates of both, and a pickup waits on another replica than the one
// the task is created on.
func TestBenchReplicasOnPostgres(t *testing.T) {
	url := pgtest.URL(t)
	d := finalLine(t, benchLines(t, runBench(t, nil, "dispatch", "--store", url, "--replicas", "2", "-n", "40", "--delegates", "2", "--json")), "dispatch")
	if d["tasks"] != 40.0 || d["replicas"] != 2.0 {
		t.Fatalf("dispatch final line %v", d)
	}
	p := finalLine(t, benchLines(t, runBench(t, nil, "pickup", "--store", url, "--replicas", "2", "-n", "5", "--json")), "pickup")
	if p["samples"] != 5.0 || p["replicas"] != 2.0 {
		t.Fatalf("pickup final line %v", p)
	}
}

// A Docker stage of two steps against two bare docker runs.
func TestBenchDocker(t *testing.T) {
	img := dockerImage(t)
	out := runBench(t, nil, "docker", "-n", "1", "--steps", "2", "--image", img, "--json")
	f := finalLine(t, benchLines(t, out), "docker")
	if f["stages"] != 1.0 || f["steps"] != 2.0 || f["ratio"].(float64) <= 0 {
		t.Fatalf("docker final line %v", f)
	}
}
