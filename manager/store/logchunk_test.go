package store

import (
	"bytes"
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

func TestChunkRefusesNonCanonicalLengths(t *testing.T) {
	for _, bad := range []string{"+1:a", "01:a", "00:", " 1:a", "1 :a", "99999999999999999999999:a"} {
		if _, err := DecodeLogChunk(nil, []byte(bad), 0, 100); err == nil {
			t.Errorf("decode of %q: no error", bad)
		}
	}
}

// FuzzLogChunk checks the log chunk codec: any lines (any bytes, line
// breaks and NUL included) come back byte for byte, and any body either
// decodes into lines that encode back into it or is an error, without a
// panic and without reading past it.
func FuzzLogChunk(f *testing.F) {
	f.Add([]byte("a\nb\x00c\n\xff\xfe\n"), []byte("5:hello0:3:a:b"), uint8(1), uint8(3))
	f.Add([]byte(""), []byte("x"), uint8(0), uint8(1))
	f.Add([]byte("12:34\n:\n0:"), []byte("+1:a01:a"), uint8(2), uint8(2))
	f.Add([]byte(strings.Repeat("z", 300)), []byte("2:ab9:"), uint8(0), uint8(9))
	f.Fuzz(func(t *testing.T, text, body []byte, skip, limit uint8) {
		lines := strings.Split(string(text), "\n")
		enc := EncodeLogChunk(lines)
		got, err := DecodeLogChunk(nil, enc, 0, len(lines)+1)
		if err != nil || !slices.Equal(got, lines) {
			t.Fatalf("round trip of %q = %q, %v", lines, got, err)
		}
		got, err = DecodeLogChunk(nil, enc, int64(skip), int(limit))
		if want := lines[min(int(skip), len(lines)):min(int(skip)+int(limit), len(lines))]; err != nil || !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("decode(skip %d, limit %d) of %q = %q, %v; want %q", skip, limit, lines, got, err, want)
		}

		all, err := DecodeLogChunk(nil, body, 0, len(body)+1)
		if err != nil {
			return
		}
		if re := EncodeLogChunk(all); !bytes.Equal(re, body) {
			t.Fatalf("body %q decodes to %q, which encodes to %q", body, all, re)
		}
	})
}
