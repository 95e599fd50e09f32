package manager

import (
	"bytes"
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
	"github.com/errandci/errand/manager/logs"
)

// Bounds of log reading and writing.
const (
	maxLinesPerAppend = 100000
	defaultLogLimit   = 1000
	maxLogLimit       = logs.MaxReadLimit
)

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
	next, err := s.logs.Append(r.Context(), logs.Append{TaskID: id, DelegateID: p.delegateID, LeaseToken: a.Lease,
		Offset: a.Offset, Lines: a.Lines})
	if err != nil {
		return err
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
	if follow && accepts(r, "text/event-stream") {
		o, err := lastEventOffset(r, offset)
		if err != nil {
			return errand.Errorf(errand.CodeInvalid, "%v", err)
		}
		return s.followLogEvents(w, r, id, o)
	}
	if follow {
		return s.followLog(w, r, id, offset)
	}
	if accepts(r, "text/plain") {
		return s.rawLog(w, r, id)
	}
	page, err := s.logs.Read(r.Context(), id, offset, limit)
	if err != nil {
		return err
	}
	if page.Lines == nil {
		page.Lines = []string{}
	}
	httphelper.WriteJSON(w, &client.LogPage{
		Kind: errand.KindLog, TaskID: id, Offset: offset, Lines: page.Lines, Next: page.Next,
		Complete: page.Complete,
	}, http.StatusOK)
	return nil
}

// followLog streams a task's log as text, one line per line, flushed as
// lines arrive, until the task has ended and every line was sent.
func (s *Server) followLog(w http.ResponseWriter, r *http.Request, id string, offset int64) error {
	rc := http.NewResponseController(w)
	begin := func() {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		_ = rc.Flush()
	}
	var buf bytes.Buffer
	emit := func(lines []string) error {
		for _, l := range lines {
			buf.WriteString(l)
			buf.WriteByte('\n')
			if buf.Len() >= 32<<10 {
				if err := flushBuf(w, &buf); err != nil {
					return err
				}
			}
		}
		if err := flushBuf(w, &buf); err != nil {
			return err
		}
		_ = rc.Flush()
		return nil
	}
	err := s.logs.Follow(r.Context(), id, offset, begin, emit)
	if errors.Is(err, logs.ErrStreamBroken) {
		// The status is sent: the caller sees a truncated stream.
		if r.Context().Err() == nil {
			s.log.WithFields(logrus.Fields{"task_id": id, "operation_id": operationID(r.Context())}).WithError(err).Error("log follow failed")
		}
		return nil
	}
	return err
}

func flushBuf(w io.Writer, buf *bytes.Buffer) error {
	if buf.Len() == 0 {
		return nil
	}
	_, err := w.Write(buf.Bytes())
	buf.Reset()
	return err
}
