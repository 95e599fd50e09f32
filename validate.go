package errand

import (
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
