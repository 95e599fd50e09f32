package manager

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

// listAllocs is the allocations of one GET /api/v1/runs?limit=10 over
// 10 runs of n stages each, server and client together.
func listAllocs(t *testing.T, stages int) float64 {
	e := newEnv(t)
	config := wideConfig(stages)
	for range 10 {
		e.must(http.StatusCreated, "POST", "/api/v1/runs", testAdmin,
			&client.RunRequest{Config: config, Filename: "config.yml"}, nil)
	}
	return testing.AllocsPerRun(3, func() {
		var l client.RunList
		e.must(http.StatusOK, "GET", "/api/v1/runs?limit=10", testAdmin, nil, &l)
		if len(l.Items) != 10 {
			t.Fatalf("listed %d runs, want 10", len(l.Items))
		}
	})
}

func TestRunListCostDoesNotGrowWithRuns(t *testing.T) {
	small, large := listAllocs(t, 5), listAllocs(t, 200)
	t.Logf("allocations of a page of 10 runs: %.0f with 5 stages each, %.0f with 200", small, large)
	if large > 2*small {
		t.Fatalf("a page of 10 runs of 200 stages costs %.0f allocations, of 5 stages %.0f: a list must not read every task", large, small)
	}
}

func TestRunListItemsSummarise(t *testing.T) {
	e := newEnv(t)
	e.startHostDelegate()
	ok := e.waitRun(e.submit(helloConfig).ID, "finished", finished)
	bad := e.waitRun(e.submit("stages:\n  - name: b\n    steps:\n      - name: f\n        commands: [exit 3]\n").ID, "finished", finished)
	setup := e.submit("stages: [")
	if ok.Result != "success" || bad.Result != "failed" || setup.Phase != "setuperror" {
		t.Fatalf("runs = %s, %s, %s", summary(ok), summary(bad), summary(setup))
	}
	var l client.RunList
	e.must(http.StatusOK, "GET", "/api/v1/runs", testAdmin, nil, &l)
	if len(l.Items) != 3 {
		t.Fatalf("listed %d runs, want 3", len(l.Items))
	}
	for _, item := range l.Items {
		var full *client.Run
		switch item.ID {
		case ok.ID:
			full = ok
		case bad.ID:
			full = bad
		case setup.ID:
			full = setup
		}
		if full == nil || item.Phase != full.Phase || item.Result != full.Result || item.StageCount != len(full.Stages) ||
			len(item.Stages) != 0 || !sameTime(item.StartedAt, full.StartedAt) || !sameTime(item.FinishedAt, full.FinishedAt) {
			t.Errorf("list item %+v, run %s", item, summary(full))
		}
	}
	for _, item := range l.Items {
		if item.ID == ok.ID && (item.TaskCounts[string(errand.StateSucceeded)] != 7 || len(item.TaskCounts) != 1) {
			t.Errorf("task counts of %s = %v, want 7 succeeded", item.ID, item.TaskCounts)
		}
	}
}

func TestRunSizeIsBounded(t *testing.T) {
	e := newEnv(t)
	var manySteps strings.Builder
	manySteps.WriteString("stages:\n  - name: s\n    steps:\n")
	for i := range DefaultMaxStageSteps + 1 {
		fmt.Fprintf(&manySteps, "      - name: a%d\n        commands: [echo]\n", i)
	}
	var manyTasks strings.Builder
	manyTasks.WriteString("stages:\n")
	for i := range 100 {
		fmt.Fprintf(&manyTasks, "  - name: s%d\n    steps:\n", i)
		for j := range DefaultMaxRunTasks / 100 {
			fmt.Fprintf(&manyTasks, "      - name: a%d\n        commands: [echo]\n", j)
		}
	}
	for _, c := range []struct{ name, config, want string }{
		{"stages", wideConfig(DefaultMaxRunStages + 1), fmt.Sprintf("more than the %d a run may have", DefaultMaxRunStages)},
		{"steps", manySteps.String(), fmt.Sprintf("stages[0].steps: %d steps, more than the %d a stage may have", DefaultMaxStageSteps+1, DefaultMaxStageSteps)},
		{"tasks", manyTasks.String(), fmt.Sprintf("tasks, more than the %d a run may have", DefaultMaxRunTasks)},
	} {
		eb := e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/runs", testAdmin,
			&client.RunRequest{Config: c.config, Filename: "config.yml"})
		if !strings.Contains(eb.Reason, c.want) {
			t.Errorf("%s: reason %q, want it to say %q", c.name, eb.Reason, c.want)
		}
	}
	var l client.RunList
	e.must(http.StatusOK, "GET", "/api/v1/runs", testAdmin, nil, &l)
	if len(l.Items) != 0 {
		t.Fatalf("refused configs made %d runs", len(l.Items))
	}
	// At the bounds a run is made.
	e.must(http.StatusCreated, "POST", "/api/v1/runs", testAdmin, &client.RunRequest{Config: wideConfig(DefaultMaxRunStages), Filename: "config.yml"}, nil)
}

func sameTime(a, b *time.Time) bool {
	return (a == nil) == (b == nil) && (a == nil || a.Equal(*b))
}

func TestDelegateListPages(t *testing.T) {
	e := newEnv(t)
	var want []string
	for _, name := range []string{"a", "b", "c"} {
		want = append(want, e.register(name, nil).id)
	}
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatalf("more than 3 pages of 1 delegate for 3 delegates: %v", got)
		}
		var l client.DelegateList
		e.must(http.StatusOK, "GET", "/api/v1/delegates?limit=1&after="+after, testAdmin, nil, &l)
		if len(l.Items) > 1 {
			t.Fatalf("a page of limit=1 has %d delegates", len(l.Items))
		}
		for _, d := range l.Items {
			got = append(got, d.ID)
		}
		if l.Next == "" {
			break
		}
		after = l.Next
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("paged through %v, want %v", got, want)
	}
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "GET", "/api/v1/delegates?limit=1001", testAdmin, nil)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "GET", "/api/v1/tasks?limit=1001", testAdmin, nil)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "GET", "/api/v1/runs?limit=101", testAdmin, nil)
}

func TestRunSizeBoundsAreConfigured(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxRunStages, c.MaxStageSteps, c.MaxRunTasks = 2, 1, 6 })
	eb := e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/runs", testAdmin,
		&client.RunRequest{Config: wideConfig(3), Filename: "config.yml"})
	if !strings.Contains(eb.Reason, "more than the 2 a run may have (--max-run-stages)") {
		t.Fatalf("reason %q does not name the bound", eb.Reason)
	}
	e.must(http.StatusCreated, "POST", "/api/v1/runs", testAdmin, &client.RunRequest{Config: wideConfig(2), Filename: "config.yml"}, nil)
	cfg := Config{MaxRunTasks: -1}
	cfg.SetDefaults()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "max run tasks must be at least 1") {
		t.Fatalf("Validate with max run tasks -1 = %v", err)
	}
}
