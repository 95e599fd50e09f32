package runtime

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/errandci/errand/livelog"
)

// The fallback masker, for log writers that cannot mask, masks in one
// pass, never over-masks with a short secret, and holds a line with no
// end to a bounded size.
func TestMaskWriterBoundedOnePass(t *testing.T) {
	m, short := livelog.NewMasker("s3cr", "x")
	if short != 1 {
		t.Fatalf("short = %d, want the 1-byte secret left out", short)
	}
	var out bytes.Buffer
	w := &lineWriter{mu: &sync.Mutex{}, w: &out, masker: m}
	chunk := strings.Repeat("s3cr", 250) // 1000 bytes, no newline
	for range 200 {
		if _, err := w.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
		if len(w.partial) > livelog.DefaultMaxLineBytes+len(chunk) {
			t.Fatalf("held %d bytes of a line with no end", len(w.partial))
		}
	}
	w.flush()
	if strings.Trim(out.String(), "*\n") != "" {
		t.Fatalf("output holds more than masks: %q…", out.String()[:80])
	}
	if n := len(strings.ReplaceAll(out.String(), "\n", "")); n > 200*len(chunk)*3/2 {
		t.Errorf("output %d bytes for %d in", n, 200*len(chunk))
	}
	out.Reset()
	_, _ = w.Write([]byte("xylophone\n"))
	if out.String() != "xylophone\n" {
		t.Errorf("a 1-byte secret masked %q", out.String())
	}
}

// A stream's line with no end is written in parts of bounded size,
// masked in one pass when the log cannot mask, and a 1-byte secret
// masks nothing.
func TestLineWriterBoundedOnePass(t *testing.T) {
	for _, masked := range []bool{false, true} {
		var m *livelog.Masker
		if masked {
			m, _ = livelog.NewMasker("s3cr", "x")
		}
		var out bytes.Buffer
		w := &lineWriter{mu: &sync.Mutex{}, w: &out, masker: m}
		chunk := strings.Repeat("s3cr", 250)
		for range 200 {
			if _, err := w.Write([]byte(chunk)); err != nil {
				t.Fatal(err)
			}
			if len(w.partial) > livelog.DefaultMaxLineBytes+len(chunk) {
				t.Fatalf("masked=%v: held %d bytes of a line with no end", masked, len(w.partial))
			}
		}
		w.flush()
		got := out.String()
		if masked && strings.Trim(got, "*\n") != "" {
			t.Fatalf("output holds more than masks: %q…", got[:80])
		}
		if !masked && strings.ReplaceAll(got, "\n", "") != strings.Repeat(chunk, 200) {
			t.Fatalf("unmasked output changed: %d bytes", len(got))
		}
		out.Reset()
		_, _ = w.Write([]byte("xylophone\n"))
		if out.String() != "xylophone\n" {
			t.Errorf("masked=%v: %q", masked, out.String())
		}
	}
}
