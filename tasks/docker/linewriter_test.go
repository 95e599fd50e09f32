package docker

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/errandci/errand/livelog"
)

// A container's line with no end is written in parts of bounded size,
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
