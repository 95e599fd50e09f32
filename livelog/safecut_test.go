package livelog

import "testing"

func TestSafeCut(t *testing.T) {
	m, _ := NewMasker("s3cret")
	cases := []struct {
		s    string
		want int
	}{
		{"hello world", len("hello world") - 5}, // the last 5 bytes may start s3cret
		{"xxxxxxxxxxs3cret", 10},                // 11 falls inside s3cret: cut before it
		{"s3cretxxxxx", len("s3cretxxxxx") - 5}, // a whole secret before the cut
		{"s3cr", 1},                             // at least one byte goes, the rest may start s3cret
		{"s3crets3cret", 6},                     // cut between two occurrences
	}
	for _, c := range cases {
		if got := m.SafeCut(c.s); got != c.want {
			t.Errorf("SafeCut(%q) = %d, want %d", c.s, got, c.want)
		}
	}
	var none *Masker
	if got := none.SafeCut("abc"); got != 3 {
		t.Errorf("nil masker SafeCut = %d, want 3", got)
	}
}
