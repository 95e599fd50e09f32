package livelog_test

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/errandci/errand/livelog"
)

func TestMaskerOnePass(t *testing.T) {
	cases := []struct {
		name    string
		secrets []string
		in      string
		want    string
	}{
		{"none", nil, "plain", "plain"},
		{"every occurrence", []string{"s3cr"}, "s3cr s3cr", "****** ******"},
		{"overlapping secrets are one mask", []string{"abcd", "cdef"}, "xabcdefx", "x******x"},
		{"longest wins", []string{"abcd", "abcdefgh"}, "abcdefgh", "******"},
		{"adjacent occurrences", []string{"abcd"}, "abcdabcd", "************"},
		{"the mask as a secret is not masked again", []string{"******"}, "******", "******"},
		{"a secret inside the mask", []string{"****"}, strings.Repeat("*", 20), "******"},
		{"one-character secret does not over-mask", []string{"x"}, "xylophone", "xylophone"},
		{"short secrets are ignored", []string{"**", "abc"}, "** abc", "** abc"},
		{"multi-line value by line", []string{"line1\r\nline2\n"}, "a line1 b line2", "a ****** b ******"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := livelog.NewMasker(tc.secrets...)
			if got := m.Mask(tc.in); got != tc.want {
				t.Fatalf("Mask(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
	if _, short := livelog.NewMasker("x", "abcd", "ok\nlonger"); short != 2 {
		t.Fatalf("short = %d, want 2", short)
	}
}

// A delegate printing many '*' without a newline, with a secret made of
// '*', used to re-mask its own mask until it ran out of memory.
func TestMaskingDoesNotGrow(t *testing.T) {
	// "**" last, and only if the others pass: on a masker that re-masks
	// its mask it grows without bound.
	for _, secret := range []string{"****", "******", "**"} {
		ok := t.Run(secret, func(t *testing.T) {
			s := &store{}
			w := livelog.New(context.Background(), s, livelog.Config{
				TaskID: "t", Secrets: []string{secret}, MaxLineBytes: 1024, NewBackOff: fast, Log: quiet(),
			})
			in := strings.Repeat("*", 1500)
			if _, err := io.WriteString(w, in); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			total := 0
			for _, l := range s.lines {
				total += len(l)
				if len(l) > 1024 {
					t.Fatalf("a line of %d bytes; want at most 1024", len(l))
				}
			}
			if total > len(in) {
				t.Fatalf("%d bytes of '*' became %d bytes in %d lines", len(in), total, len(s.lines))
			}
		})
		if !ok {
			return
		}
	}
	// The reported case: 200,000 '*' and the secret "**".
	s := &store{}
	w := livelog.New(context.Background(), s, livelog.Config{TaskID: "t", Secrets: []string{"**"}, NewBackOff: fast, Log: quiet()})
	_, _ = io.WriteString(w, strings.Repeat("*", 200000))
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := s.text(); len(got) > 200000+10 || strings.Trim(got, "*\n") != "" {
		t.Fatalf("200000 '*' became %d bytes", len(got))
	}
}

func TestShortSecretWarnsAndIsNotMasked(t *testing.T) {
	log, hook := test.NewNullLogger()
	s := &store{}
	w := livelog.New(context.Background(), s, livelog.Config{TaskID: "t", Secrets: []string{"x", "longer"}, Interval: time.Millisecond, NewBackOff: fast, Log: log})
	_, _ = io.WriteString(w, "xylophone longer\n")
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := s.text(); got != "xylophone ******" {
		t.Fatalf("log = %q", got)
	}
	warned := false
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel && strings.Contains(e.Message, "shorter") {
			warned = true
			for _, v := range e.Data {
				if v == "x" {
					t.Fatalf("the warning names the value: %v", e.Data)
				}
			}
		}
	}
	if !warned {
		t.Fatal("no warning about the short secret")
	}
}

func TestLongLineBounded(t *testing.T) {
	s := &store{}
	w := livelog.New(context.Background(), s, livelog.Config{TaskID: "t", Secrets: []string{"SECRETVALUE"}, MaxLineBytes: 100, NewBackOff: fast, Log: quiet()})
	// One write of a long line with a newline in the middle: both parts
	// are split.
	line := strings.Repeat("a", 95) + "SECRETVALUE" + strings.Repeat("ü", 200)
	_, _ = io.WriteString(w, line+"\n"+line)
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		if len(l) > 100 || !utf8.ValidString(l) || strings.Contains(l, "SECRET") || strings.Contains(l, "VALUE") {
			t.Fatalf("line %q: longer than 100 bytes, cut in a character, or leaks", l)
		}
	}
	if got := strings.Count(strings.Join(s.lines, ""), livelog.Mask); got != 2 {
		t.Fatalf("%d masks, want 2: %q", got, s.lines)
	}
}

func TestInvalidUTF8Replaced(t *testing.T) {
	s := &store{}
	w := livelog.New(context.Background(), s, livelog.Config{TaskID: "t", NewBackOff: fast, Log: quiet()})
	_, _ = w.Write([]byte("a\xffb\x00c\n"))
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := s.text(); got != "a\uFFFDb\x00c" {
		t.Fatalf("log = %q", got)
	}
}

// naiveMask masks the union of all occurrences, overlapping ones merged,
// by brute force.
func naiveMask(secrets []string, in string) string {
	cover := make([]bool, len(in))
	for _, sec := range secrets {
		for i := 0; i+len(sec) <= len(in); i++ {
			if in[i:i+len(sec)] == sec {
				for j := i; j < i+len(sec); j++ {
					cover[j] = true
				}
			}
		}
	}
	// A mask starts where a covered byte follows an uncovered one.
	var b strings.Builder
	for i := 0; i < len(in); i++ {
		if !cover[i] {
			b.WriteByte(in[i])
			continue
		}
		if i == 0 || !cover[i-1] {
			b.WriteString(livelog.Mask)
		}
	}
	return b.String()
}

func fuzzSecrets(raw string) []string {
	var out []string
	for _, s := range strings.Split(raw, "|") {
		if len(s) >= livelog.MinSecretLen && !strings.ContainsAny(s, "*\n\r\uFFFD") && utf8.ValidString(s) {
			out = append(out, s)
		}
	}
	return out
}

// FuzzMask checks the masker: no secret of MinSecretLen bytes or more
// (and no '*' in it) is left in its output, the output is at most 1.5
// times the input, and a Writer that splits long lines does the same.
func FuzzMask(f *testing.F) {
	f.Add("hunter2|s3cr3t", "pw=hunter2 s3cr3ts3cr3t", uint8(16))
	f.Add("abcd|cdef|bcde", "xabcdefabcdx", uint8(5))
	f.Add("****|**", strings.Repeat("*", 300), uint8(7))
	f.Add("x|xylophone", "xylophone x", uint8(3))
	f.Add("ünï✓|abcd", "aaüünï✓abcdab\xffcd", uint8(4))
	f.Fuzz(func(t *testing.T, rawSecrets, in string, lineBytes uint8) {
		secrets := fuzzSecrets(rawSecrets)
		m, _ := livelog.NewMasker(secrets...)
		out := m.Mask(in)
		if len(out) > len(in)*3/2 {
			t.Fatalf("Mask grew %d bytes to %d", len(in), len(out))
		}
		for _, sec := range secrets {
			if strings.Contains(out, sec) {
				t.Fatalf("secret %q left in %q (from %q)", sec, out, in)
			}
		}
		// Where no two occurrences touch, the output is the brute-force one.
		if want := naiveMask(secrets, in); strings.Count(out, livelog.Mask) == strings.Count(want, livelog.Mask) && out != want {
			t.Fatalf("Mask(%q) = %q, brute force %q", in, out, want)
		}

		limit := int(lineBytes)%64 + 8
		s := &store{}
		w := livelog.New(context.Background(), s, livelog.Config{TaskID: "t", Secrets: secrets, MaxLineBytes: limit, MaxBuffered: 1 << 20, NewBackOff: fast, Log: quiet()})
		data := []byte(in)
		for i := 0; len(data) > 0; i++ {
			n := min(len(data), 1+i%7)
			if _, err := w.Write(data[:n]); err != nil {
				t.Fatal(err)
			}
			data = data[n:]
		}
		if err := w.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		joined := strings.Join(s.lines, "")
		if len(joined) > len(livelog.ValidUTF8(in))*3/2 {
			t.Fatalf("Writer grew %d bytes to %d", len(in), len(joined))
		}
		for _, sec := range secrets {
			if len(sec) > limit+1 || bytes.ContainsAny([]byte(in), "\r\xff") {
				continue
			}
			for _, l := range s.lines {
				if strings.Contains(l, sec) {
					t.Fatalf("secret %q left in line %q", sec, l)
				}
			}
			if !strings.Contains(in, "\n") && strings.Contains(joined, sec) {
				t.Fatalf("secret %q left across split lines %q", sec, s.lines)
			}
		}
	})
}
