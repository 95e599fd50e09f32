package errand

import (
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
