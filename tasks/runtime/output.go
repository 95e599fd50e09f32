package runtime

import (
	"bytes"
	"io"
	"sync"

	"github.com/errandci/errand/livelog"
)

// Output is where a step's output goes: the task's log, written whole
// lines at a time so that lines of two streams (stdout and stderr) never
// mix within one line, with the step's secrets masked in one pass when
// the log cannot mask them itself.
type Output struct {
	mu      sync.Mutex // serialises writes to w
	w       io.Writer
	masker  *livelog.Masker // nil when w masks
	streams []*lineWriter
}

// NewOutput returns the output of a step whose secrets are secrets,
// written to logs: the secrets are registered with logs when it masks
// (router.Masker), masked by the Output otherwise. The handlers make
// one for each step; a driver's own tests make theirs.
func NewOutput(logs io.Writer, secrets ...string) *Output {
	return &Output{w: logs, masker: maskerFor(logs, secrets)}
}

// Stream returns a writer for one output stream of the step. A stream is
// written by one goroutine at a time; what it holds of a last line with
// no end is written when the step ends.
func (o *Output) Stream() io.Writer {
	l := &lineWriter{mu: &o.mu, w: o.w, masker: o.masker}
	o.mu.Lock()
	o.streams = append(o.streams, l)
	o.mu.Unlock()
	return l
}

// Flush writes what the streams hold of their last lines. It is called
// once their writers are done: after the step's Destroy.
func (o *Output) Flush() {
	o.mu.Lock()
	streams := o.streams
	o.mu.Unlock()
	for _, l := range streams {
		l.flush()
	}
}

// lineWriter writes whole lines to a log shared with other streams. A
// line longer than livelog.DefaultMaxLineBytes is written in parts, so
// that output with no newline never grows without bound.
type lineWriter struct {
	mu      *sync.Mutex
	w       io.Writer
	masker  *livelog.Masker // nil when w masks
	partial []byte
}

func (l *lineWriter) mask(s string) string {
	if l.masker.Empty() {
		return s
	}
	return l.masker.Mask(s)
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.partial = append(l.partial, p...)
	var out string
	if i := bytes.LastIndexByte(l.partial, '\n'); i >= 0 {
		out = l.mask(string(l.partial[:i+1]))
		l.partial = append(l.partial[:0], l.partial[i+1:]...)
	} else if len(l.partial) > livelog.DefaultMaxLineBytes {
		// The part ends as a line of its own, so that the other stream
		// never continues it.
		cut := l.masker.SafeCut(string(l.partial))
		out = l.mask(string(l.partial[:cut])) + "\n"
		l.partial = append(l.partial[:0], l.partial[cut:]...)
	} else {
		return len(p), nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := io.WriteString(l.w, out); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (l *lineWriter) flush() {
	if len(l.partial) == 0 {
		return
	}
	out := l.mask(string(l.partial)) + "\n"
	l.partial = nil
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = io.WriteString(l.w, out)
}
