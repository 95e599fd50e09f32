package manager

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/manager/logs"
)

// sseKeepAlive is how often (in nanoseconds) a log event stream sends a
// comment when no line comes, so that proxies and browsers keep an idle
// stream open. Tests shorten it.
var sseKeepAlive atomic.Int64

func init() { sseKeepAlive.Store(int64(30 * time.Second)) }

// maxRawLog bounds the log a raw download serves from memory.
const maxRawLog = 256 << 20

// accepts says whether the request's Accept header names media type mt.
func accepts(r *http.Request, mt string) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		t, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err == nil && t == mt {
			return true
		}
	}
	return false
}

// lastEventOffset returns the offset after the Last-Event-ID a
// reconnecting event stream sends (the offset of the last line it got),
// or offset when there is none.
func lastEventOffset(r *http.Request, offset int64) (int64, error) {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		return offset, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("Last-Event-ID: must be a non-negative integer")
	}
	return n + 1, nil
}

// followLogEvents streams a task's log as Server-Sent Events: one event
// per line whose id is the line's offset and whose data is the line as
// a JSON string (a line may hold a carriage return, which would end an
// event's data field), a comment every sseKeepAlive, and a final "end"
// event once the task has ended and every line was sent. A stream cut by
// the manager's shutdown ends without "end": the browser reconnects with
// Last-Event-ID and goes on where it stopped.
func (s *Server) followLogEvents(w http.ResponseWriter, r *http.Request, id string, offset int64) error {
	rc := http.NewResponseController(w)
	var mu sync.Mutex // serialises the keep-alive writer and the lines
	write := func(b []byte) error {
		mu.Lock()
		defer mu.Unlock()
		if _, err := w.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	stop := make(chan struct{})
	var pinger sync.WaitGroup
	defer func() {
		close(stop)
		pinger.Wait()
	}()
	begin := func() {
		h := w.Header()
		h.Set("Content-Type", "text/event-stream; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		h.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusOK)
		_ = write([]byte("retry: 2000\n\n"))
		pinger.Add(1)
		go func() {
			defer pinger.Done()
			t := time.NewTicker(time.Duration(sseKeepAlive.Load()))
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					if write([]byte(": ping\n\n")) != nil {
						return
					}
				}
			}
		}()
	}
	next := offset
	var buf bytes.Buffer
	emit := func(lines []string) error {
		buf.Reset()
		for _, l := range lines {
			data, err := json.Marshal(l)
			if err != nil {
				return fmt.Errorf("encode log line: %w", err)
			}
			buf.WriteString("id: ")
			buf.WriteString(strconv.FormatInt(next, 10))
			buf.WriteString("\ndata: ")
			buf.Write(data)
			buf.WriteString("\n\n")
			next++
		}
		return write(buf.Bytes())
	}
	err := s.logs.Follow(r.Context(), id, offset, begin, emit)
	if errors.Is(err, logs.ErrStreamBroken) {
		if r.Context().Err() == nil {
			s.log.WithFields(logrus.Fields{"task_id": id, "operation_id": operationID(r.Context())}).WithError(err).Error("log follow failed")
		}
		return nil
	}
	if err != nil {
		return err
	}
	if r.Context().Err() != nil {
		return nil
	}
	page, err := s.logs.Read(r.Context(), id, next, 1)
	if err != nil || !page.Complete {
		// Shutting down: the browser reconnects to another replica or
		// to this one once it is back.
		return nil
	}
	_ = write([]byte("event: end\ndata: {\"next\":" + strconv.FormatInt(next, 10) + "}\n\n"))
	return nil
}

// rawLog serves a task's whole log as text/plain, one line per line,
// with Range requests answered (a partial download resumes).
func (s *Server) rawLog(w http.ResponseWriter, r *http.Request, id string) error {
	var buf bytes.Buffer
	var offset int64
	for {
		page, err := s.logs.Read(r.Context(), id, offset, maxLogLimit)
		if err != nil {
			return err
		}
		for _, l := range page.Lines {
			buf.WriteString(l)
			buf.WriteByte('\n')
		}
		if buf.Len() > maxRawLog {
			return fmt.Errorf("raw log of task %s: larger than %d bytes", id, maxRawLog)
		}
		if len(page.Lines) < maxLogLimit || page.Complete {
			break
		}
		offset = page.Next
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(buf.Bytes()))
	return nil
}
