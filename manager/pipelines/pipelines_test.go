package pipelines

import "testing"

func TestParseRunName(t *testing.T) {
	for _, c := range []struct {
		in   string
		name string
		n    int64
		ok   bool
	}{
		{"api#42", "api", 42, true}, {"a-b_c#1", "a-b_c", 1, true},
		{"api#0", "", 0, false}, {"api#-1", "", 0, false}, {"api#01", "", 0, false}, {"Api#1", "", 0, false},
		{"api", "", 0, false}, {"#1", "", 0, false}, {"api#1x", "", 0, false}, {"01M8VE60TYB4P8Y2G83T05421M", "", 0, false},
	} {
		name, n, ok := ParseRunName(c.in)
		if name != c.name || n != c.n || ok != c.ok {
			t.Errorf("ParseRunName(%q) = %q, %d, %v; want %q, %d, %v", c.in, name, n, ok, c.name, c.n, c.ok)
		}
	}
}

func TestBranchOf(t *testing.T) {
	for ref, want := range map[string]string{"refs/heads/main": "main", "main": "main", "refs/tags/v1": "", "refs/pull/1/head": "", "": ""} {
		if got := branchOf(ref); got != want {
			t.Errorf("branchOf(%q) = %q, want %q", ref, got, want)
		}
	}
}
