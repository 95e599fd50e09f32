package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/httphelper"
)

// newServer starts an httptest server on h and a client of it with short
// retry waits.
func newServer(t *testing.T, h http.HandlerFunc, opts ...Option) *HTTP {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c := New(srv.URL, "admin-token", opts...)
	c.retryFirst = time.Millisecond
	return c
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string // a JSON error body, or none
		want     error
		wantCode string
	}{
		{"invalid", 400, errBody(errand.CodeInvalid), ErrInvalid, errand.CodeInvalid},
		{"unauthorized", 401, errBody(errand.CodeUnauthorized), ErrUnauthorized, errand.CodeUnauthorized},
		{"forbidden", 403, errBody(errand.CodeForbidden), ErrForbidden, errand.CodeForbidden},
		{"not found", 404, errBody(errand.CodeNotFound), ErrNotFound, errand.CodeNotFound},
		{"conflict", 409, errBody(errand.CodeConflict), ErrConflict, errand.CodeConflict},
		{"lease lost", 409, errBody(errand.CodeLeaseLost), ErrLeaseLost, errand.CodeLeaseLost},
		{"illegal transition", 409, errBody(errand.CodeIllegalTransition), ErrIllegalTransition, errand.CodeIllegalTransition},
		{"log offset", 409, errBody(errand.CodeLogOffset), ErrLogOffset, errand.CodeLogOffset},
		{"too large", 413, errBody(errand.CodeTooLarge), ErrTooLarge, errand.CodeTooLarge},
		{"unavailable", 503, errBody(errand.CodeUnavailable), ErrUnavailable, errand.CodeUnavailable},
		{"internal", 500, errBody(errand.CodeInternal), nil, errand.CodeInternal},
		{"bare 401", 401, "", ErrUnauthorized, errand.CodeUnauthorized},
		{"bare 404", 404, "", ErrNotFound, errand.CodeNotFound},
		{"bare 409", 409, "", ErrConflict, errand.CodeConflict},
		{"bare 502", 502, "", ErrUnavailable, errand.CodeUnavailable},
		{"html 500", 500, "<html>oops</html>", nil, errand.CodeInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.body != "" {
					w.Header().Set("Content-Type", "application/json")
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			}, WithRetry(0))
			_, err := c.GetTask(context.Background(), "t1")
			if err == nil {
				t.Fatal("GetTask: no error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.want)
			}
			var e *errand.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v carries no *errand.Error", err)
			}
			if e.Code != tt.wantCode {
				t.Errorf("code = %q, want %q", e.Code, tt.wantCode)
			}
			if strings.HasPrefix(tt.body, "{") && e.Reason != "reason of "+tt.wantCode {
				t.Errorf("reason = %q, want the body's", e.Reason)
			}
			if !strings.Contains(err.Error(), "get task t1") {
				t.Errorf("error %q does not say what failed", err)
			}
		})
	}
}

func errBody(code string) string {
	b, _ := json.Marshal(httphelper.ErrorBody{Kind: errand.KindError, Code: code, Reason: "reason of " + code, OperationID: "op1"})
	return string(b)
}

func writeErr(w http.ResponseWriter, code string) {
	httphelper.WriteError(w, errand.Errorf(code, "reason of %s", code))
}

// fastRetrier is the delegate side's retry layer with short waits.
func fastRetrier() Retrier {
	return Retrier{NewBackOff: func() backoff.BackOff { return backoff.NewConstantBackOff(time.Millisecond) }}
}

// A report answered 503 is retried by its caller's retry layer until it
// is accepted.
func TestRetryOn503ThenSuccess(t *testing.T) {
	var calls atomic.Int32
	c := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		var u StatusUpdate
		if err := httphelper.DecodeJSON(r, &u, 0); err != nil {
			httphelper.WriteError(w, err)
			return
		}
		if calls.Add(1) <= 2 {
			writeErr(w, errand.CodeUnavailable)
			return
		}
		httphelper.WriteJSON(w, &Task{Kind: errand.KindTask, ID: "t1", State: u.State}, http.StatusOK)
	})
	var task *Task
	err := fastRetrier().Do(context.Background(), func() error {
		var err error
		task, err = c.UpdateStatus(context.Background(), "t1", &StatusUpdate{Lease: "l1", State: errand.StateRunning})
		return err
	})
	if err != nil {
		t.Fatalf("UpdateStatus: %v", err)
	}
	if task.State != errand.StateRunning || calls.Load() != 3 {
		t.Errorf("state %s after %d calls, want running after 3", task.State, calls.Load())
	}
}

func TestNoRetry(t *testing.T) {
	tests := []struct {
		name string
		code string
		call func(c *HTTP) error
		want error
	}{
		{"status lease lost", errand.CodeLeaseLost, func(c *HTTP) error {
			_, err := c.UpdateStatus(context.Background(), "t1", &StatusUpdate{Lease: "old", State: errand.StateSucceeded})
			return err
		}, ErrLeaseLost},
		{"logs offset", errand.CodeLogOffset, func(c *HTTP) error {
			_, err := c.AppendLogs(context.Background(), "t1", &LogAppend{Lease: "l", Offset: 9, Lines: []string{"x"}})
			return err
		}, ErrLogOffset},
		{"get not found", errand.CodeNotFound, func(c *HTTP) error {
			_, err := c.GetTask(context.Background(), "t1")
			return err
		}, ErrNotFound},
		{"create unavailable", errand.CodeUnavailable, func(c *HTTP) error {
			_, err := c.CreateTasks(context.Background(), []*TaskSpec{{Type: "x"}})
			return err
		}, ErrUnavailable},
		{"register unavailable", errand.CodeUnavailable, func(c *HTTP) error {
			_, err := c.Register(context.Background(), &RegisterRequest{Name: "d"})
			return err
		}, ErrUnavailable},
		{"acquire unavailable", errand.CodeUnavailable, func(c *HTTP) error {
			_, err := c.Acquire(context.Background(), "d1", &AcquireRequest{Max: 1})
			return err
		}, ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			c := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				writeErr(w, tt.code)
			})
			err := tt.call(c)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if n := calls.Load(); n != 1 {
				t.Errorf("%d calls, want 1 (no retry)", n)
			}
		})
	}
}

// Which failures each policy retries: the creations only what surely
// never left, the idempotent calls every passing failure; a delegate's
// call is never retried by the client (TestNoRetry), its caller retries.
func TestRetryable(t *testing.T) {
	refused := &transportError{err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	reset := &transportError{err: &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}}
	s503 := ErrUnavailable
	s500 := errand.Errorf(errand.CodeInternal, "x")
	s409 := ErrLeaseLost
	retried := func(policy retryPolicy, err error) bool {
		if policy == retryNotSent {
			return notSent(err)
		}
		return errand.Retryable(err)
	}
	tests := []struct {
		policy retryPolicy
		err    error
		want   bool
	}{
		{retryNotSent, refused, true},
		{retryNotSent, reset, false},
		{retryNotSent, s503, false},
		{retryIdempotent, refused, true},
		{retryIdempotent, reset, true},
		{retryIdempotent, s503, true},
		{retryIdempotent, s500, true},
		{retryIdempotent, s409, false},
		{retryIdempotent, fmt.Errorf("wrapped: %w", s409), false},
		{retryIdempotent, fmt.Errorf("wrapped: %w", context.Canceled), false},
	}
	for _, tt := range tests {
		if got := retried(tt.policy, tt.err); got != tt.want {
			t.Errorf("retried(%d, %v) = %v, want %v", tt.policy, tt.err, got, tt.want)
		}
	}
}

func TestRegisterRetriedWhenRefused(t *testing.T) {
	// Reserve a port, close it so that the first attempts are refused,
	// then serve on it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := New("http://"+addr, "reg")
	retry := Retrier{NewBackOff: func() backoff.BackOff { return backoff.NewConstantBackOff(50 * time.Millisecond) }}

	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httphelper.WriteJSON(w, &Registration{Delegate: Delegate{ID: "d1"}, Token: "own"}, http.StatusCreated)
	})}
	served := make(chan error, 1)
	go func() {
		time.Sleep(150 * time.Millisecond)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			served <- err
			return
		}
		served <- srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	var reg *Registration
	err = retry.Do(context.Background(), func() error {
		var err error
		reg, err = c.Register(context.Background(), &RegisterRequest{Name: "d"})
		if err != nil && !notSent(err) {
			return backoff.Permanent(err)
		}
		return err
	})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if reg.ID != "d1" || reg.Token != "own" {
		t.Errorf("registration %+v", reg)
	}
}

// waitHook closes waiting when the client logs that it waits to retry.
type waitHook struct {
	once    sync.Once
	waiting chan struct{}
}

func (h *waitHook) Levels() []logrus.Level { return []logrus.Level{logrus.DebugLevel} }

func (h *waitHook) Fire(e *logrus.Entry) error {
	if e.Message == "retrying manager call" {
		h.once.Do(func() { close(h.waiting) })
	}
	return nil
}

func TestCancelStopsRetryWait(t *testing.T) {
	var calls atomic.Int32
	log := logrus.New()
	log.SetOutput(io.Discard)
	log.SetLevel(logrus.DebugLevel)
	hook := &waitHook{waiting: make(chan struct{})}
	log.AddHook(hook)
	c := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		writeErr(w, errand.CodeUnavailable)
	}, WithRetry(time.Hour), WithLogger(logrus.NewEntry(log)))
	c.retryFirst = 30 * time.Second // a wait that only ctx can cut short

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.GetTask(ctx, "t1")
		errc <- err
	}()
	<-hook.waiting
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
		if !strings.Contains(err.Error(), "unavailable") {
			t.Errorf("error %q does not carry the last failure", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("GetTask kept waiting to retry after its context was cancelled")
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

func TestRequestShapes(t *testing.T) {
	type seen struct {
		method, path, auth string
		query              map[string][]string
		body               string
	}
	got := make(chan seen, 1)
	c := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.URL.Query(), string(bytes.TrimSpace(b))}
		switch {
		case r.Method == http.MethodDelete || strings.HasSuffix(r.URL.Path, "/cancel") || strings.HasSuffix(r.URL.Path, "/drain"):
			w.WriteHeader(http.StatusNoContent)
		case r.URL.Path == "/api/v1/tasks" && r.Method == http.MethodPost:
			httphelper.WriteJSON(w, &TaskList{Kind: errand.KindTaskList, Items: []*Task{{ID: "a"}}}, http.StatusCreated)
		default:
			_, _ = io.WriteString(w, "{}")
		}
	})
	ctx := context.Background()
	d := c.WithToken("delegate-token")
	tests := []struct {
		name string
		call func() error
		want seen
	}{
		{"acquire", func() error {
			_, err := d.Acquire(ctx, "d1", &AcquireRequest{Wait: errand.Duration(2 * time.Second), Max: 3})
			return err
		}, seen{"POST", "/api/v1/delegates/d1/acquire", "Bearer delegate-token", map[string][]string{"wait": {"2s"}, "max": {"3"}}, ""}},
		{"heartbeat", func() error {
			_, err := d.Heartbeat(ctx, "d1", &HeartbeatRequest{Running: []string{"t1"}})
			return err
		}, seen{"POST", "/api/v1/delegates/d1/heartbeat", "Bearer delegate-token", map[string][]string{}, `{"running":["t1"]}`}},
		{"deregister", func() error { return d.Deregister(ctx, "d1") },
			seen{"DELETE", "/api/v1/delegates/d1", "Bearer delegate-token", map[string][]string{}, ""}},
		{"create", func() error {
			tasks, err := c.CreateTasks(ctx, []*TaskSpec{{ID: "a", Type: "x"}})
			if err == nil && (len(tasks) != 1 || tasks[0].ID != "a") {
				err = fmt.Errorf("tasks %v", tasks)
			}
			return err
		}, seen{"POST", "/api/v1/tasks", "Bearer admin-token", map[string][]string{}, `{"tasks":[{"id":"a","type":"x","selector":{}}]}`}},
		{"list", func() error {
			_, err := c.ListTasks(ctx, &TaskFilter{States: []errand.State{errand.StateQueued, errand.StateRunning}, Type: "x", After: "a", Limit: 5})
			return err
		}, seen{"GET", "/api/v1/tasks", "Bearer admin-token", map[string][]string{"state": {"queued", "running"}, "type": {"x"}, "after": {"a"}, "limit": {"5"}}, ""}},
		{"cancel", func() error { return c.CancelTask(ctx, "t/1") },
			seen{"POST", "/api/v1/tasks/t/1/cancel", "Bearer admin-token", map[string][]string{}, ""}},
		{"drain", func() error { return c.DrainDelegate(ctx, "d1") },
			seen{"POST", "/api/v1/delegates/d1/drain", "Bearer admin-token", map[string][]string{}, ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); err != nil {
				t.Fatal(err)
			}
			s := <-got
			if s.method != tt.want.method || s.path != tt.want.path || s.auth != tt.want.auth || s.body != tt.want.body {
				t.Errorf("request %+v, want %+v", s, tt.want)
			}
			if fmt.Sprint(s.query) != fmt.Sprint(tt.want.query) {
				t.Errorf("query %v, want %v", s.query, tt.want.query)
			}
		})
	}
}

func TestTaskLogsPages(t *testing.T) {
	lines := []string{"one", "two", "three", "four", "five"}
	var calls atomic.Int32
	c := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		off, _ := strconv.Atoi(r.URL.Query().Get("offset"))
		end := min(off+2, len(lines))
		httphelper.WriteJSON(w, &LogPage{Kind: errand.KindLog, Offset: int64(off), Lines: lines[off:end],
			Next: int64(end), Complete: end == len(lines)}, http.StatusOK)
	})
	var buf bytes.Buffer
	if err := c.TaskLogs(context.Background(), "t1", &LogOptions{Offset: 1}, &buf); err != nil {
		t.Fatal(err)
	}
	if want := "two\nthree\nfour\nfive\n"; buf.String() != want {
		t.Errorf("log %q, want %q", buf.String(), want)
	}
	if calls.Load() != 2 {
		t.Errorf("%d pages read, want 2", calls.Load())
	}
}

// lineSignal is a writer that reports each line written.
type lineSignal struct{ lines chan string }

func (l *lineSignal) Write(b []byte) (int, error) {
	l.lines <- string(b)
	return len(b), nil
}

func TestWithHandlerStreamsFollow(t *testing.T) {
	step := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("follow") != "true" || r.URL.Query().Get("offset") != "3" {
			writeErr(w, errand.CodeInvalid)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "line %d\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-step: // the test saw the line before the next is written
			case <-r.Context().Done():
				return
			}
		}
	})
	c := New("http://manager.invalid", "tok", WithHandler(h))
	out := &lineSignal{lines: make(chan string)}
	errc := make(chan error, 1)
	go func() { errc <- c.TaskLogs(context.Background(), "t1", &LogOptions{Offset: 3, Follow: true}, out) }()
	for i := 0; i < 3; i++ {
		select {
		case l := <-out.lines:
			if want := fmt.Sprintf("line %d\n", i); l != want {
				t.Fatalf("line %q, want %q", l, want)
			}
		case err := <-errc:
			t.Fatalf("TaskLogs ended early: %v", err)
		}
		step <- struct{}{}
	}
	if err := <-errc; err != nil {
		t.Fatalf("TaskLogs: %v", err)
	}
}

func TestWithHandlerLongPoll(t *testing.T) {
	release := make(chan struct{})
	handlerDone := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			writeErr(w, errand.CodeUnauthorized)
			return
		}
		select {
		case <-release:
			httphelper.WriteJSON(w, &AcquireResponse{Kind: errand.KindAcquire, Tasks: []*Task{{ID: "t1"}}}, http.StatusOK)
			handlerDone <- nil
		case <-r.Context().Done():
			handlerDone <- r.Context().Err()
		}
	})
	c := New("http://manager.invalid", "tok", WithHandler(h))

	t.Run("answer", func(t *testing.T) {
		go func() { release <- struct{}{} }()
		resp, err := c.Acquire(context.Background(), "d1", &AcquireRequest{Wait: errand.Duration(time.Minute), Max: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Tasks) != 1 || resp.Tasks[0].ID != "t1" {
			t.Errorf("tasks %v", resp.Tasks)
		}
		if err := <-handlerDone; err != nil {
			t.Errorf("handler: %v", err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := c.Acquire(ctx, "d1", &AcquireRequest{Wait: errand.Duration(time.Minute), Max: 1})
			errc <- err
		}()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("Acquire error %v, want context.Canceled", err)
		}
		if err := <-handlerDone; !errors.Is(err, context.Canceled) {
			t.Errorf("handler saw %v, want its request context cancelled", err)
		}
	})
	t.Run("error", func(t *testing.T) {
		_, err := c.WithToken("wrong").Acquire(context.Background(), "d1", nil)
		if !errors.Is(err, ErrUnauthorized) {
			t.Errorf("error %v, want unauthorized", err)
		}
	})
}

func TestWithHandlerPanic(t *testing.T) {
	c := New("http://manager.invalid", "", WithHandler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom")
	})), WithRetry(0))
	_, err := c.GetTask(context.Background(), "t1")
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("error %v, want the panic", err)
	}
}

func TestWithTokenCopies(t *testing.T) {
	c := New("http://x/", "a")
	d := c.WithToken("b")
	if c.token != "a" || d.token != "b" || d.base != "http://x" {
		t.Errorf("tokens %q %q base %q", c.token, d.token, d.base)
	}
}

// The delegate side's retry layer waits on ctx: a cancel during its wait
// returns at once with the last failure.
func TestRetrierStopsWaitOnCancel(t *testing.T) {
	var calls atomic.Int32
	c := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		writeErr(w, errand.CodeUnavailable)
	})
	waiting := make(chan struct{})
	var once sync.Once
	retry := Retrier{
		NewBackOff: func() backoff.BackOff { return backoff.NewConstantBackOff(30 * time.Second) },
		Notify:     func(error, time.Duration) { once.Do(func() { close(waiting) }) },
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- retry.Do(ctx, func() error {
			_, err := c.Heartbeat(ctx, "d1", nil)
			return err
		})
	}()
	<-waiting
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "unavailable") {
			t.Fatalf("error %v, want context.Canceled with the last failure", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the retry kept waiting after its context was cancelled")
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

// A failure that is not passing stops the retries at once.
func TestRetrierStopsOnFinalAnswer(t *testing.T) {
	n := 0
	err := fastRetrier().Do(context.Background(), func() error {
		n++
		if n < 3 {
			return ErrUnavailable
		}
		return fmt.Errorf("report: %w", ErrLeaseLost)
	})
	if !errors.Is(err, ErrLeaseLost) || n != 3 {
		t.Fatalf("Do = %v after %d attempts, want lease lost after 3", err, n)
	}
}
