package errand

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds of the labels a delegate carries or a selector asks for.
const (
	// MaxLabels bounds the number of labels in one set.
	MaxLabels = 64
	// MaxLabelKeyLen and MaxLabelValueLen bound a label's key and value,
	// in bytes.
	MaxLabelKeyLen   = 128
	MaxLabelValueLen = 256
)

// TextProblem says why s cannot be a name, a task type, an id, a group, an
// architecture or a label: not UTF-8, U+FFFD (what a JSON decoder puts in
// place of invalid UTF-8), or a control character (NUL, a line break, …).
// It returns "" when s can.
func TextProblem(s string) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			return "holds U+FFFD, the replacement of invalid UTF-8"
		case unicode.IsControl(r):
			return fmt.Sprintf("holds the control character %U", r)
		}
	}
	return ""
}

// LabelProblems returns the problems of a set of labels, each starting
// with path ("labels", "selector.labels"): at most MaxLabels, keys of 1
// to MaxLabelKeyLen bytes without '=', values of at most MaxLabelValueLen
// bytes, all text that TextProblem accepts. Keys are checked in order, so
// that the problems read the same every time.
func LabelProblems(path string, labels map[string]string) []string {
	var problems []string
	if len(labels) > MaxLabels {
		problems = append(problems, fmt.Sprintf("%s: more than %d labels", path, MaxLabels))
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := labels[k]
		switch {
		case k == "":
			problems = append(problems, fmt.Sprintf("%s: a label needs a key", path))
		case len(k) > MaxLabelKeyLen:
			problems = append(problems, fmt.Sprintf("%s: key %.32q…: longer than %d bytes", path, k, MaxLabelKeyLen))
		case strings.Contains(k, "="):
			problems = append(problems, fmt.Sprintf("%s: key %q: must not contain '='", path, k))
		case TextProblem(k) != "":
			problems = append(problems, fmt.Sprintf("%s: key %q: %s", path, k, TextProblem(k)))
		}
		switch {
		case len(v) > MaxLabelValueLen:
			problems = append(problems, fmt.Sprintf("%s: %q: value longer than %d bytes", path, k, MaxLabelValueLen))
		case TextProblem(v) != "":
			problems = append(problems, fmt.Sprintf("%s: %q: value %s", path, k, TextProblem(v)))
		}
	}
	return problems
}

// SelectorProblems returns the problems of a task's selector, each
// starting with path ("selector").
func SelectorProblems(path string, s Selector) []string {
	problems := LabelProblems(path+".labels", s.Labels)
	if p := TextProblem(s.Arch); p != "" {
		problems = append(problems, fmt.Sprintf("%s.arch: %s", path, p))
	}
	if p := TextProblem(s.Group); p != "" {
		problems = append(problems, fmt.Sprintf("%s.group: %s", path, p))
	}
	return problems
}

// ValidateBatch checks a batch of tasks to create for what needs no
// store: each task's own fields, ids unique in the batch, conditions
// known, and no dependency cycle within the batch. Its error is an *Error
// (CodeInvalid, or CodeConflict for an id given twice) whose reason starts
// with the offending path ("tasks[2].depends_on[0].task"). What needs the
// store (ids that exist, dependencies outside the batch) is the store's.
func ValidateBatch(tasks []*Task) error {
	_, err := BatchOrder(tasks)
	return err
}

// BatchOrder validates a batch as ValidateBatch does and returns the
// indexes of its tasks in an order in which every task comes after the
// tasks of the batch it depends on: the order a store resolves them in.
func BatchOrder(tasks []*Task) ([]int, error) {
	index := make(map[string]int, len(tasks))
	for i, t := range tasks {
		switch {
		case t == nil:
			return nil, Errorf(CodeInvalid, "tasks[%d]: missing", i)
		case t.ID == "":
			return nil, Errorf(CodeInvalid, "tasks[%d].id: required", i)
		case t.Type == "" || len(t.Type) > MaxTaskTypeLen:
			return nil, Errorf(CodeInvalid, "tasks[%d].type: required, at most %d bytes", i, MaxTaskTypeLen)
		case t.MaxAttempts < 0 || t.MaxAttempts > MaxMaxAttempts:
			return nil, Errorf(CodeInvalid, "tasks[%d].max_attempts: must be 1..%d", i, MaxMaxAttempts)
		case t.Timeout < 0:
			return nil, Errorf(CodeInvalid, "tasks[%d].timeout: negative", i)
		case len(t.Data) > 0 && !json.Valid(t.Data):
			return nil, Errorf(CodeInvalid, "tasks[%d].data: not JSON", i)
		case t.Approvals < 0:
			return nil, Errorf(CodeInvalid, "tasks[%d].approvals: negative", i)
		case t.Approved != 0:
			return nil, Errorf(CodeInvalid, "tasks[%d].approved: set by the store, not at creation", i)
		}
		for j, d := range t.DependsOn {
			if !d.Condition.Valid() {
				return nil, Errorf(CodeInvalid, "tasks[%d].depends_on[%d].condition: unknown %q", i, j, d.Condition)
			}
		}
		if _, dup := index[t.ID]; dup {
			return nil, Errorf(CodeConflict, "tasks[%d].id: %s appears twice in the batch", i, t.ID)
		}
		index[t.ID] = i
	}
	// Depth-first topological sort; a grey node met again is a cycle.
	const (
		white = iota
		grey
		black
	)
	color := make([]int, len(tasks))
	order := make([]int, 0, len(tasks))
	var visit func(i int, path string) error
	visit = func(i int, path string) error {
		switch color[i] {
		case black:
			return nil
		case grey:
			return Errorf(CodeInvalid, "%s: dependency cycle through task %s", path, tasks[i].ID)
		}
		color[i] = grey
		for j, d := range tasks[i].DependsOn {
			if k, ok := index[d.Task]; ok {
				if err := visit(k, fmt.Sprintf("tasks[%d].depends_on[%d].task", i, j)); err != nil {
					return err
				}
			}
		}
		color[i] = black
		order = append(order, i)
		return nil
	}
	for i := range tasks {
		if err := visit(i, fmt.Sprintf("tasks[%d]", i)); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// ValidateRunBatch checks, beyond ValidateBatch, that the tasks of a
// pipeline run belong to run runID (an empty RunID is taken to) and refer
// only to each other.
func ValidateRunBatch(runID string, tasks []*Task) error {
	ids := make(map[string]bool, len(tasks))
	for _, t := range tasks {
		if t != nil {
			ids[t.ID] = true
		}
	}
	for i, t := range tasks {
		if t == nil {
			return Errorf(CodeInvalid, "tasks[%d]: missing", i)
		}
		if t.RunID != "" && t.RunID != runID {
			return Errorf(CodeInvalid, "tasks[%d].run_id: %s is not run %s", i, t.RunID, runID)
		}
		for j, d := range t.DependsOn {
			if !ids[d.Task] {
				return Errorf(CodeInvalid, "tasks[%d].depends_on[%d].task: %s is not a task of the run", i, j, d.Task)
			}
		}
		if t.Affinity != "" && !ids[t.Affinity] {
			return Errorf(CodeInvalid, "tasks[%d].affinity: %s is not a task of the run", i, t.Affinity)
		}
	}
	return ValidateBatch(tasks)
}

// Bounds of the tasks an author creates.
const (
	// MinPriority and MaxPriority bound a task's priority.
	MinPriority = -1000
	MaxPriority = 1000
	// MaxIDLen bounds a task's or a delegate's id, in bytes.
	MaxIDLen = 128
	// MaxBatch bounds the number of tasks created in one request.
	MaxBatch = 10000
)

// ValidID reports whether id may name a task or a delegate: 1 to
// MaxIDLen letters, digits, '.', '_', ':' or '-', starting with a letter
// or a digit. An id is a component of object keys (logs/<id>/0): it is
// never "." or "..", nor hidden, nor an option.
func ValidID(id string) bool {
	if id == "" || len(id) > MaxIDLen || !isAlnum(id[0]) {
		return false
	}
	for _, c := range []byte(id) {
		if !isAlnum(c) && c != '.' && c != '_' && c != ':' && c != '-' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// NewTasks is a request to create tasks, as its author wrote it: before
// defaults (an id, max_attempts), with data "null" given as none.
type NewTasks struct {
	// Tasks are the tasks to create; a nil one is a batch entry that was
	// not an object.
	Tasks []*Task
	// Single: the request is one task, not a batch: the problems' paths
	// name its fields alone ("type"), not "tasks[3].type".
	Single bool
}

// Validate checks a request to create tasks for what needs no store and
// reports every problem at once: an *Error (CodeInvalid) whose reason is
// "task is invalid: " and the problems, each starting with its path,
// joined by "; ". It returns nil when there is none.
func (n NewTasks) Validate() error {
	var problems []string
	switch {
	case !n.Single && len(n.Tasks) == 0:
		problems = append(problems, "tasks: at least one task is required")
	case len(n.Tasks) > MaxBatch:
		problems = append(problems, fmt.Sprintf("tasks: at most %d tasks per request", MaxBatch))
	}
	seen := make(map[string]int)
	for i, t := range n.Tasks {
		prefix := ""
		if !n.Single {
			prefix = fmt.Sprintf("tasks[%d].", i)
		}
		problems = append(problems, NewTaskProblems(prefix, t)...)
		if t != nil && t.ID != "" {
			if j, dup := seen[t.ID]; dup {
				problems = append(problems, fmt.Sprintf("%sid: %q is also the id of tasks[%d]", prefix, t.ID, j))
			}
			seen[t.ID] = i
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return Errorf(CodeInvalid, "task is invalid: %s", strings.Join(problems, "; "))
}

// NewTaskProblems returns the problems of one task to create, as its
// author wrote it, each with its path under prefix ("" for a single task,
// "tasks[3]." in a batch).
func NewTaskProblems(prefix string, t *Task) []string {
	var problems []string
	add := func(field, format string, args ...any) {
		problems = append(problems, prefix+field+": "+fmt.Sprintf(format, args...))
	}
	if t == nil {
		add("(task)", "must be an object")
		return problems
	}
	if t.ID != "" && !ValidID(t.ID) {
		add("id", "must be 1 to %d letters, digits, '.', '_', ':' or '-', starting with a letter or a digit", MaxIDLen)
	}
	switch {
	case t.Type == "":
		add("type", "required")
	case len(t.Type) > MaxTaskTypeLen:
		add("type", "longer than %d characters", MaxTaskTypeLen)
	case TextProblem(t.Type) != "":
		add("type", "%s", TextProblem(t.Type))
	}
	for _, p := range SelectorProblems("selector", t.Selector) {
		problems = append(problems, prefix+p)
	}
	if t.Timeout < 0 {
		add("timeout", "must not be negative")
	}
	if t.MaxAttempts < 0 || t.MaxAttempts > MaxMaxAttempts {
		add("max_attempts", "must be between 0 (default %d) and %d", DefaultMaxAttempts, MaxMaxAttempts)
	}
	if t.Priority < MinPriority || t.Priority > MaxPriority {
		add("priority", "must be between %d and %d", MinPriority, MaxPriority)
	}
	if data := bytes.TrimSpace(t.Data); len(data) > 0 && !bytes.Equal(data, []byte("null")) && data[0] != '{' {
		add("data", "must be a JSON object")
	}
	if t.Affinity != "" && !ValidID(t.Affinity) {
		add("affinity", "not a valid task id")
	}
	if t.Affinity != "" && t.Affinity == t.ID {
		add("affinity", "a task cannot follow itself")
	}
	for i, dep := range t.DependsOn {
		path := fmt.Sprintf("depends_on[%d]", i)
		switch {
		case dep.Task == "":
			add(path+".task", "required")
		case !ValidID(dep.Task):
			add(path+".task", "not a valid task id")
		case dep.Task == t.ID:
			add(path+".task", "a task cannot depend on itself")
		}
		if !dep.Condition.Valid() {
			add(path+".condition", "unknown condition %q (want on_success, on_failure, on_skipped or always)", dep.Condition)
		}
	}
	return problems
}
