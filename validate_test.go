package errand

import (
	"errors"
	"strings"
	"testing"
)

func TestTextProblem(t *testing.T) {
	for _, ok := range []string{"", "build-1", "docker.execute", "ünïcode ✓", "a b"} {
		if p := TextProblem(ok); p != "" {
			t.Errorf("TextProblem(%q) = %q, want none", ok, p)
		}
	}
	for s, want := range map[string]string{
		"a\x00b":     "U+0000",
		"line\nbrk":  "U+000A",
		"tab\there":  "U+0009",
		"del\x7f":    "U+007F",
		"bad\xffutf": "not valid UTF-8",
		"rep\uFFFD":  "U+FFFD",
		"c1\u0085":   "U+0085",
	} {
		if p := TextProblem(s); !strings.Contains(p, want) {
			t.Errorf("TextProblem(%q) = %q, want it to mention %q", s, p, want)
		}
	}
}

func TestLabelProblems(t *testing.T) {
	if p := LabelProblems("labels", map[string]string{"env": "prod", "os": "", "a.b/c": "x=y"}); len(p) != 0 {
		t.Errorf("good labels: %v", p)
	}
	many := map[string]string{}
	for i := 0; i <= MaxLabels; i++ {
		many[strings.Repeat("k", i+1)] = "v"
	}
	cases := []struct {
		labels map[string]string
		want   string
	}{
		{map[string]string{"": "x"}, "labels: a label needs a key"},
		{map[string]string{"a=b": "x"}, `labels: key "a=b": must not contain '='`},
		{map[string]string{"env": "a\nb"}, `labels: "env": value holds the control character U+000A`},
		{map[string]string{"e\x00nv": "x"}, "U+0000"},
		{map[string]string{"env": "\xc3\x28"}, "not valid UTF-8"},
		{map[string]string{strings.Repeat("k", MaxLabelKeyLen+1): "x"}, "longer than 128 bytes"},
		{map[string]string{"k": strings.Repeat("v", MaxLabelValueLen+1)}, "value longer than 256 bytes"},
		{many, "more than 64 labels"},
	}
	for _, c := range cases {
		p := LabelProblems("labels", c.labels)
		if len(p) == 0 || !strings.Contains(strings.Join(p, "; "), c.want) {
			t.Errorf("LabelProblems(%q) = %v, want %q", c.labels, p, c.want)
		}
	}
}

func TestSelectorProblems(t *testing.T) {
	p := SelectorProblems("selector", Selector{Labels: map[string]string{"=": "x"}, Arch: "amd\x0064", Group: "g\n"})
	got := strings.Join(p, "; ")
	for _, want := range []string{"selector.labels: key", "selector.arch: holds", "selector.group: holds"} {
		if !strings.Contains(got, want) {
			t.Errorf("SelectorProblems = %q, want %q", got, want)
		}
	}
}

func TestValidateBatch(t *testing.T) {
	task := func(id string, deps ...string) *Task {
		t := &Task{ID: id, Type: "exec.execute"}
		for _, d := range deps {
			t.DependsOn = append(t.DependsOn, Dependency{Task: d})
		}
		return t
	}
	with := func(t *Task, f func(*Task)) *Task { f(t); return t }
	tests := []struct {
		name  string
		tasks []*Task
		code  string // "" for valid
		path  string // the start of the reason
	}{
		{"empty batch", nil, "", ""},
		{"one task", []*Task{task("a")}, "", ""},
		{"chain in any order", []*Task{task("c", "b"), task("b", "a"), task("a")}, "", ""},
		{"dependency outside the batch is the store's", []*Task{task("a", "elsewhere")}, "", ""},
		{"missing task", []*Task{task("a"), nil}, CodeInvalid, "tasks[1]: missing"},
		{"no id", []*Task{task("")}, CodeInvalid, "tasks[0].id"},
		{"no type", []*Task{with(task("a"), func(t *Task) { t.Type = "" })}, CodeInvalid, "tasks[0].type"},
		{"type too long", []*Task{with(task("a"), func(t *Task) { t.Type = strings.Repeat("x", MaxTaskTypeLen+1) })}, CodeInvalid, "tasks[0].type"},
		{"negative attempts", []*Task{with(task("a"), func(t *Task) { t.MaxAttempts = -1 })}, CodeInvalid, "tasks[0].max_attempts"},
		{"too many attempts", []*Task{with(task("a"), func(t *Task) { t.MaxAttempts = MaxMaxAttempts + 1 })}, CodeInvalid, "tasks[0].max_attempts"},
		{"negative timeout", []*Task{with(task("a"), func(t *Task) { t.Timeout = -1 })}, CodeInvalid, "tasks[0].timeout"},
		{"data not JSON", []*Task{with(task("a"), func(t *Task) { t.Data = []byte("{") })}, CodeInvalid, "tasks[0].data"},
		{"negative approvals", []*Task{with(task("a"), func(t *Task) { t.Approvals = -1 })}, CodeInvalid, "tasks[0].approvals"},
		{"approved at creation", []*Task{with(task("a"), func(t *Task) { t.Approvals, t.Approved = 1, 1 })}, CodeInvalid, "tasks[0].approved"},
		{"a gate", []*Task{with(task("a"), func(t *Task) { t.Approvals = 2 })}, "", ""},
		{"unknown condition", []*Task{with(task("a", "b"), func(t *Task) { t.DependsOn[0].Condition = "sometimes" }), task("b")}, CodeInvalid, "tasks[0].depends_on[0].condition"},
		{"duplicate id", []*Task{task("a"), task("a")}, CodeConflict, "tasks[1].id"},
		{"self cycle", []*Task{task("a", "a")}, CodeInvalid, "tasks[0].depends_on[0].task: dependency cycle"},
		{"cycle of three", []*Task{task("a", "c"), task("b", "a"), task("c", "b")}, CodeInvalid, "tasks[1].depends_on[0].task: dependency cycle through task a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateBatch(tt.tasks)
			if tt.code == "" {
				if err != nil {
					t.Fatalf("ValidateBatch: %v", err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != tt.code || !strings.HasPrefix(e.Reason, tt.path) {
				t.Fatalf("ValidateBatch = %v, want %s starting %q", err, tt.code, tt.path)
			}
		})
	}
}

func TestBatchOrder(t *testing.T) {
	tasks := []*Task{
		{ID: "c", Type: "x", DependsOn: []Dependency{{Task: "b"}, {Task: "a"}}},
		{ID: "a", Type: "x"},
		{ID: "b", Type: "x", DependsOn: []Dependency{{Task: "a"}}},
	}
	order, err := BatchOrder(tasks)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for n, i := range order {
		pos[tasks[i].ID] = n
	}
	if len(order) != 3 || pos["a"] > pos["b"] || pos["b"] > pos["c"] {
		t.Errorf("order %v does not put a before b before c", order)
	}
}

func TestValidateRunBatch(t *testing.T) {
	tests := []struct {
		name  string
		tasks []*Task
		path  string // "" for valid
	}{
		{"tasks of the run", []*Task{{ID: "a", Type: "x"}, {ID: "b", Type: "x", RunID: "r", Affinity: "a", DependsOn: []Dependency{{Task: "a"}}}}, ""},
		{"task of another run", []*Task{{ID: "a", Type: "x", RunID: "other"}}, "tasks[0].run_id"},
		{"dependency outside the run", []*Task{{ID: "a", Type: "x", DependsOn: []Dependency{{Task: "z"}}}}, "tasks[0].depends_on[0].task"},
		{"affinity outside the run", []*Task{{ID: "a", Type: "x", Affinity: "z"}}, "tasks[0].affinity"},
		{"batch rules too", []*Task{{ID: "a"}}, "tasks[0].type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateRunBatch("r", tt.tasks)
			if tt.path == "" {
				if err != nil {
					t.Fatalf("ValidateRunBatch: %v", err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeInvalid || !strings.HasPrefix(e.Reason, tt.path) {
				t.Fatalf("ValidateRunBatch = %v, want invalid starting %q", err, tt.path)
			}
		})
	}
}

// NewTasks.Validate reports every problem at once, each under its path,
// with the API's words: the reasons below are what POST /api/v1/tasks
// answers.
func TestNewTasksValidate(t *testing.T) {
	many := make([]*Task, MaxBatch+1)
	for i := range many {
		many[i] = &Task{Type: "x"}
	}
	tests := []struct {
		name string
		req  NewTasks
		want string // "" for valid
	}{
		{"one task", NewTasks{Tasks: []*Task{{Type: "x"}}, Single: true}, ""},
		{"a batch", NewTasks{Tasks: []*Task{{ID: "a", Type: "x"}, {Type: "x", DependsOn: []Dependency{{Task: "a"}}}}}, ""},
		{"data null", NewTasks{Tasks: []*Task{{Type: "x", Data: []byte("null")}}, Single: true}, ""},
		{"every problem of one task", NewTasks{Single: true, Tasks: []*Task{{
			ID: "-x", Type: "", Timeout: -1, MaxAttempts: 101, Priority: 5000, Data: []byte(" [1]"),
			Affinity: "-x", DependsOn: []Dependency{{Task: ""}, {Task: "a b"}, {Task: "-x", Condition: "sometimes"}},
		}}}, "task is invalid: id: must be 1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or a digit; " +
			"type: required; timeout: must not be negative; max_attempts: must be between 0 (default 3) and 100; " +
			"priority: must be between -1000 and 1000; data: must be a JSON object; affinity: not a valid task id; " +
			"affinity: a task cannot follow itself; depends_on[0].task: required; depends_on[1].task: not a valid task id; " +
			"depends_on[2].task: not a valid task id; depends_on[2].condition: unknown condition \"sometimes\" (want on_success, on_failure, on_skipped or always)"},
		{"self dependency", NewTasks{Single: true, Tasks: []*Task{{ID: "me", Type: "x", DependsOn: []Dependency{{Task: "me"}}}}},
			"task is invalid: depends_on[0].task: a task cannot depend on itself"},
		{"type too long", NewTasks{Single: true, Tasks: []*Task{{Type: strings.Repeat("x", MaxTaskTypeLen+1)}}},
			"task is invalid: type: longer than 128 characters"},
		{"type with NUL", NewTasks{Single: true, Tasks: []*Task{{Type: "x\x00"}}},
			"task is invalid: type: holds the control character U+0000"},
		{"selector", NewTasks{Single: true, Tasks: []*Task{{Type: "x", Selector: Selector{Labels: map[string]string{"a=b": "x"}}}}},
			"task is invalid: selector.labels: key \"a=b\": must not contain '='"},
		{"empty batch", NewTasks{}, "task is invalid: tasks: at least one task is required"},
		{"batch too large", NewTasks{Tasks: many}, "task is invalid: tasks: at most 10000 tasks per request"},
		{"batch paths", NewTasks{Tasks: []*Task{{ID: "a", Type: "x"}, nil, {ID: "a"}}},
			"task is invalid: tasks[1].(task): must be an object; tasks[2].type: required; tasks[2].id: \"a\" is also the id of tasks[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.req.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeInvalid || e.Reason != tt.want {
				t.Fatalf("Validate = %v\nwant invalid: %s", err, tt.want)
			}
		})
	}
}
