package scheduler

import "testing"

// A generated token is passed as `--token TOKEN` on command lines: one
// that starts with '-' would be read as a flag.
func TestNewSecretNeverLooksLikeAFlag(t *testing.T) {
	for range 2000 {
		s, err := NewSecret(32)
		if err != nil {
			t.Fatal(err)
		}
		if s[0] == '-' {
			t.Fatalf("NewSecret = %q: starts with '-'", s)
		}
		if len(s) != 43 {
			t.Fatalf("NewSecret = %q: %d characters, want 43", s, len(s))
		}
	}
}
