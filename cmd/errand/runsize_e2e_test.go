package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/errandci/errand/internal/testenv"
)

// A manager started with smaller run bounds refuses, through errand
// submit, a run over each of them with the bound and its flag named, and
// takes a run within them.
func TestE2ESubmitRunSizeBounds(t *testing.T) {
	m := testenv.StartManager(t, testenv.Binary(t),
		"--max-run-stages", "2", "--max-stage-steps", "2", "--max-run-tasks", "7")
	stage := func(name string, steps int) string {
		s := "  - name: " + name + "\n    steps:\n"
		for i := range steps {
			s += "      - {name: s" + string(rune('a'+i)) + ", commands: [\"true\"]}\n"
		}
		return s
	}
	cases := []struct {
		name, config, want string
	}{
		{"stages", "stages:\n" + stage("a", 1) + stage("b", 1) + stage("c", 1), "more than the 2 a run may have (--max-run-stages)"},
		{"steps", "stages:\n" + stage("a", 3), "more than the 2 a stage may have (--max-stage-steps)"},
		// Two stages of two steps: 2 × (initialize + 2 steps + cleanup) = 8 tasks.
		{"tasks", "stages:\n" + stage("a", 2) + stage("b", 2), "--max-run-tasks"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "config.yml")
			if err := os.WriteFile(cfg, []byte(c.config), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(testenv.Binary(t), "submit", "--manager", m.URL, "--token="+m.AdminToken, cfg)
			cmd.Env = cleanEnv()
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), c.want) {
				t.Fatalf("errand submit of a run over the bound: %v\n%s\nwant %q", err, out, c.want)
			}
		})
	}
	cfg := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(cfg, []byte("stages:\n"+stage("a", 2)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testenv.Binary(t), "submit", "--manager", m.URL, "--token="+m.AdminToken, cfg)
	cmd.Env = cleanEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("errand submit of a run within the bounds: %v\n%s", err, out)
	}
}
