package manager

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/livelog"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/pipeline"
)

// Bounds of log reading and writing.
const (
	maxLinesPerAppend = 100000
	defaultLogLimit   = 1000
	maxLogLimit       = 10000
	// sealBatch is how many ended tasks' logs one seal pass moves.
	sealBatch = 100
)

// logKey is where object seq of a task's sealed log lives.
func logKey(taskID string, seq int) string {
	return "logs/" + taskID + "/" + strconv.Itoa(seq)
}

// normalizeLines drops one trailing line break per line and refuses line
// breaks inside a line: a line is the unit of offsets, so one element must
// be one line.
func normalizeLines(lines []string) error {
	var problems []string
	for i, l := range lines {
		l = strings.TrimSuffix(l, "\n")
		l = strings.TrimSuffix(l, "\r")
		if strings.ContainsAny(l, "\n") {
			problems = append(problems, fmt.Sprintf("lines[%d]: contains a line break; send one element per line", i))
			if len(problems) == 10 {
				break
			}
		}
		lines[i] = l
	}
	return invalid("log append", problems)
}

func (s *Server) appendLogs(w http.ResponseWriter, r *http.Request, p principal) error {
	id := r.PathValue("id")
	var a client.LogAppend
	if err := httphelper.DecodeJSON(r, &a, s.cfg.MaxBodyBytes); err != nil {
		return err
	}
	var problems []string
	if a.Lease == "" {
		problems = append(problems, "lease: required")
	}
	if a.Offset < 0 {
		problems = append(problems, "offset: must not be negative")
	}
	if len(a.Lines) > maxLinesPerAppend {
		problems = append(problems, fmt.Sprintf("lines: at most %d per request", maxLinesPerAppend))
	}
	if err := invalid("log append", problems); err != nil {
		return err
	}
	if err := normalizeLines(a.Lines); err != nil {
		return err
	}
	s.sched.Heard(p.delegateID)
	ctx := r.Context()
	m, err := s.sched.Masker(ctx, id)
	if err != nil {
		return fmt.Errorf("append %d log lines to task %s: %w", len(a.Lines), id, err)
	}
	scheduler.MaskLines(m, a.Lines)
	next, err := s.store.LogAppend(ctx, store.LogAppendParams{
		TaskID: id, DelegateID: p.delegateID, LeaseToken: a.Lease,
		Offset: a.Offset, Lines: a.Lines, Now: s.now(),
	})
	if errors.Is(err, errand.ErrLogOffset) {
		// Say where the log ends in a form clients can read back.
		if t, gerr := s.store.TaskGet(ctx, id); gerr == nil {
			return errand.Errorf(errand.CodeLogOffset, "offset %d leaves a gap; expected offset %d", a.Offset, t.LogLines)
		}
	}
	if err != nil {
		return fmt.Errorf("append %d log lines to task %s: %w", len(a.Lines), id, err)
	}
	httphelper.WriteJSON(w, &client.LogAppendResult{Kind: errand.KindLog, Next: next}, http.StatusOK)
	return nil
}

func (s *Server) readLogs(w http.ResponseWriter, r *http.Request, _ principal) error {
	id := r.PathValue("id")
	q := r.URL.Query()
	var offset int64
	if v := q.Get("offset"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return errand.Errorf(errand.CodeInvalid, "offset: must be a non-negative integer")
		}
		offset = n
	}
	limit := defaultLogLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLogLimit {
			return errand.Errorf(errand.CodeInvalid, "limit: must be an integer between 1 and %d", maxLogLimit)
		}
		limit = n
	}
	follow := false
	if v := q.Get("follow"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errand.Errorf(errand.CodeInvalid, "follow: must be true or false")
		}
		follow = b
	}
	ctx := r.Context()
	if follow {
		return s.followLog(ctx, w, id, offset)
	}
	t, err := s.store.TaskGet(ctx, id)
	if err != nil {
		return fmt.Errorf("read log of task %s: %w", id, err)
	}
	lines, err := s.readLines(ctx, t, offset, limit)
	if err != nil {
		return err
	}
	next := offset + int64(len(lines))
	httphelper.WriteJSON(w, &client.LogPage{
		Kind: errand.KindLog, TaskID: id, Offset: offset, Lines: lines, Next: next,
		Complete: t.State.Terminal() && next >= t.LogLines,
	}, http.StatusOK)
	return nil
}

// readLines returns up to limit lines of t's log from offset, from the
// store while the log is live and from object storage once sealed. t must
// have been read before the call: a log sealed in between is found.
func (s *Server) readLines(ctx context.Context, t *errand.Task, offset int64, limit int) ([]string, error) {
	if offset >= t.LogLines && !t.State.Terminal() {
		// Nothing new yet; a live log is read from the store below once
		// lines arrive.
		return []string{}, nil
	}
	lines, err := s.store.LogRead(ctx, store.LogReadParams{TaskID: t.ID, Offset: offset, Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("read log of task %s: %w", t.ID, err)
	}
	if len(lines) > 0 || offset >= t.LogLines {
		if lines == nil {
			lines = []string{}
		}
		return lines, nil
	}
	// The store holds nothing where lines should be: the log was sealed.
	var out []string
	err = s.readSealed(ctx, t.ID, offset, func(line string) bool {
		out = append(out, line)
		return len(out) < limit
	})
	if out == nil {
		out = []string{}
	}
	return out, err
}

// readSealed calls fn with each line of a sealed log from offset on,
// until fn returns false. A log that is not sealed yields nothing.
func (s *Server) readSealed(ctx context.Context, taskID string, offset int64, fn func(string) bool) error {
	objects, sealed, err := s.store.LogObjects(ctx, taskID)
	if err != nil {
		return fmt.Errorf("sealed log of task %s: %w", taskID, err)
	}
	if !sealed {
		return nil
	}
	for _, o := range objects {
		if o.FirstLine+o.Lines <= offset {
			continue
		}
		more, err := s.readObject(ctx, o, offset, fn)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

func (s *Server) readObject(ctx context.Context, o store.LogObject, offset int64, fn func(string) bool) (bool, error) {
	rc, err := s.objects.Get(ctx, o.Key)
	if err != nil {
		return false, fmt.Errorf("open log object %s: %w", o.Key, err)
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 64<<10)
	for n := o.FirstLine; n < o.FirstLine+o.Lines; n++ {
		line, err := br.ReadString('\n')
		if err != nil {
			return false, fmt.Errorf("read log object %s at line %d: %w", o.Key, n, err)
		}
		if n < offset {
			continue
		}
		if !fn(line[:len(line)-1]) {
			return false, nil
		}
	}
	return true, nil
}

// followLog streams a task's log as text, one line per line, flushed as
// lines arrive, until the task has ended and every line was sent.
func (s *Server) followLog(ctx context.Context, w http.ResponseWriter, id string, offset int64) error {
	wake, done := s.hub.follow(id)
	defer done()
	t, err := s.store.TaskGet(ctx, id)
	if err != nil {
		return fmt.Errorf("follow log of task %s: %w", id, err)
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	var buf bytes.Buffer
	write := func(line string) error {
		buf.WriteString(line)
		buf.WriteByte('\n')
		if buf.Len() >= 32<<10 {
			return flushBuf(w, &buf)
		}
		return nil
	}
	for {
		lines, err := s.readLines(ctx, t, offset, maxLogLimit)
		if err != nil {
			return s.endStream(ctx, id, err)
		}
		for _, l := range lines {
			if write(l) != nil {
				return nil
			}
		}
		offset += int64(len(lines))
		if buf.Len() > 0 {
			if flushBuf(w, &buf) != nil {
				return nil
			}
			_ = rc.Flush()
		}
		if t.State.Terminal() {
			// The log of an ended task grows no more; an empty read ends
			// the stream even if the count says otherwise.
			if len(lines) == 0 || offset >= t.LogLines {
				return nil
			}
			continue
		}
		if len(lines) < maxLogLimit {
			select {
			case <-wake:
			case <-ctx.Done():
				return nil
			case <-s.closing:
				return nil
			}
		}
		if t, err = s.store.TaskGet(ctx, id); err != nil {
			return s.endStream(ctx, id, err)
		}
	}
}

func flushBuf(w io.Writer, buf *bytes.Buffer) error {
	_, err := w.Write(buf.Bytes())
	buf.Reset()
	return err
}

// endStream logs an error met after the response started: the status is
// sent, so the caller sees a truncated stream.
func (s *Server) endStream(ctx context.Context, id string, err error) error {
	if ctx.Err() == nil {
		s.log.WithFields(logrus.Fields{"task_id": id, "operation_id": operationID(ctx)}).WithError(err).Error("log follow failed")
	}
	return nil
}

// checkSecretValues refuses secret values that cannot be masked safely:
// a value, or a line of it, shorter than livelog.MinSecretLen bytes. The
// error names each secret, never its value.
func checkSecretValues(cfg *pipeline.Config, values map[string]string) error {
	var errs pipeline.Errors
	for i, st := range cfg.Stages {
		for j, name := range st.Secrets {
			v, ok := values[name]
			if !ok || v == "" {
				continue
			}
			if _, short := livelog.SecretParts(v); short > 0 {
				errs = append(errs, pipeline.FieldError{
					Path:    fmt.Sprintf("stages[%d].secrets[%d]", i, j),
					Message: fmt.Sprintf("secret %s: its value (or a line of it) is shorter than %d bytes and cannot be masked in logs; use a longer value", name, livelog.MinSecretLen),
				})
			}
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}
