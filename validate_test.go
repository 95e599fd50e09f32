package errand

import (
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
