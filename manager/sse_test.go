package manager

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sseEvent is one event of a text/event-stream.
type sseEvent struct {
	id, event, data string
	comment         bool
}

// readEvents reads events from an event stream until fn returns false or
// the stream ends.
func readEvents(t *testing.T, body io.Reader, fn func(sseEvent) bool) {
	t.Helper()
	sc := bufio.NewScanner(body)
	var ev sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev != (sseEvent{}) && !fn(ev) {
				return
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
			ev.comment = true
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			ev.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		}
	}
}

func (e *env) openEvents(t *testing.T, ctx context.Context, id string, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", e.ts.URL+"/api/v1/tasks/"+id+"/logs?follow=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdmin)
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

// TestLogEventStream follows a running task's log as Server-Sent Events:
// an id per line, lines as JSON strings (a carriage return survives),
// keep-alive comments while nothing comes, an end event once the task
// has ended, and a resume after Last-Event-ID.
func TestLogEventStream(t *testing.T) {
	old := sseKeepAlive.Load()
	sseKeepAlive.Store(int64(20 * time.Millisecond))
	t.Cleanup(func() { sseKeepAlive.Store(old) })
	e := newEnv(t)
	d := e.register("d1", nil)
	id, lease := e.leasedTask(d)
	e.appendLines(d, id, lease, 0, []string{"one", "50%\r100%", "<script>x</script>"})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := e.openEvents(t, ctx, id, nil)
	for k, want := range map[string]string{"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	var lines []string
	var ids []string
	pings, appended, ended := 0, false, false
	readEvents(t, resp.Body, func(ev sseEvent) bool {
		switch {
		case ev.comment:
			pings++
			if pings == 2 && !appended {
				appended = true
				e.appendLines(d, id, lease, 3, []string{"four"})
			}
		case ev.event == "end":
			ended = true
			if ev.data != `{"next":4}` {
				t.Errorf("end event data = %s", ev.data)
			}
			return false
		default:
			var l string
			if err := json.Unmarshal([]byte(ev.data), &l); err != nil {
				t.Errorf("data %q is not a JSON string: %v", ev.data, err)
			}
			lines, ids = append(lines, l), append(ids, ev.id)
			if len(lines) == 4 {
				e.succeed(d, id, lease)
			}
		}
		return true
	})
	if want := []string{"one", "50%\r100%", "<script>x</script>", "four"}; strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Errorf("lines = %q, want %q", lines, want)
	}
	if strings.Join(ids, ",") != "0,1,2,3" {
		t.Errorf("ids = %v", ids)
	}
	if pings < 2 || !ended {
		t.Errorf("pings = %d, ended = %v", pings, ended)
	}

	// A reconnect after line 1 gets lines 2 and 3, then the end.
	resp = e.openEvents(t, ctx, id, http.Header{"Last-Event-Id": {"1"}})
	var resumed []string
	readEvents(t, resp.Body, func(ev sseEvent) bool {
		if ev.event == "end" {
			return false
		}
		if !ev.comment {
			resumed = append(resumed, ev.id)
		}
		return true
	})
	if strings.Join(resumed, ",") != "2,3" {
		t.Errorf("after Last-Event-ID 1: ids %v, want 2,3", resumed)
	}
	resp = e.openEvents(t, ctx, id, http.Header{"Last-Event-Id": {"x"}})
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("Last-Event-ID x: %d, want 400", resp.StatusCode)
	}
	resp = e.openEvents(t, ctx, "01NOSUCHTASK0000000000000", nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown task: %d, want 404", resp.StatusCode)
	}
}

// TestRawLogRange downloads a log as text, whole and by byte range.
func TestRawLogRange(t *testing.T) {
	e := newEnv(t)
	d := e.register("d1", nil)
	id, lease := e.leasedTask(d)
	e.appendLines(d, id, lease, 0, []string{"alpha", "beta", "gamma"})
	get := func(rng string) (int, string, http.Header) {
		req, _ := http.NewRequest("GET", e.ts.URL+"/api/v1/tasks/"+id+"/logs", nil)
		req.Header.Set("Authorization", "Bearer "+testAdmin)
		req.Header.Set("Accept", "text/plain")
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	code, body, h := get("")
	if code != 200 || body != "alpha\nbeta\ngamma\n" || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Errorf("raw = %d %q %q", code, body, h.Get("Content-Type"))
	}
	if n, _ := strconv.Atoi(h.Get("Content-Length")); n != len(body) {
		t.Errorf("Content-Length = %q", h.Get("Content-Length"))
	}
	code, body, _ = get("bytes=6-9")
	if code != http.StatusPartialContent || body != "beta" {
		t.Errorf("range = %d %q, want 206 beta", code, body)
	}
	if code, _, _ = get("bytes=100-"); code != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("range past the end = %d, want 416", code)
	}
}
