package store

import (
	"slices"
	"strings"
	"testing"
)

func TestChunkRoundTrip(t *testing.T) {
	cases := [][]string{
		{},
		{""},
		{"", "", ""},
		{"plain", "12:34", ":", "0:", "new\nline", "ünï ✓", strings.Repeat("z", 100000)},
	}
	for _, lines := range cases {
		body := EncodeLogChunk(lines)
		for skip := 0; skip <= len(lines); skip++ {
			for limit := 1; limit <= len(lines)+1; limit++ {
				got, err := DecodeLogChunk([]string{"before"}, body, int64(skip), limit+1)
				if err != nil {
					t.Fatalf("decode %q: %v", lines, err)
				}
				want := append([]string{"before"}, lines[skip:min(skip+limit, len(lines))]...)
				if !slices.Equal(got, want) {
					t.Fatalf("decode(skip %d, limit %d) of %q = %q, want %q", skip, limit, lines, got, want)
				}
			}
		}
	}
	for _, bad := range []string{"x", ":abc", "5:abc", "-1:", "3", "2:ab9:"} {
		if _, err := DecodeLogChunk(nil, []byte(bad), 0, 100); err == nil {
			t.Errorf("decode of corrupt body %q: no error", bad)
		}
	}
}
