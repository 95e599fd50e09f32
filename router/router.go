// Package router maps task types to http.Handler implementations. It turns
// a task into an *http.Request, runs the handler and turns the handler's
// response into the task's outcome, so that anything written with net/http
// habits (middleware, httptest) works on tasks too.
//
// A handler reads the task from the request body (or from TaskFrom), writes
// its log to LogFrom, and answers like any HTTP handler: a 2xx JSON body is
// the task's result, an httphelper error body fails the task with its code
// and reason.
package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
)

// Defaults of a Router.
const (
	// DefaultGrace is how long a handler may keep running after its
	// context is done before the router abandons it.
	DefaultGrace = 10 * time.Second
	// DefaultMaxResult bounds the body a handler may answer with.
	DefaultMaxResult = 1 << 20
)

// Causes with which a task's context is cancelled. The poller cancels a
// task's context with one of them (context.WithCancelCause) so that the
// router reports what happened rather than what the handler made of it.
var (
	// ErrCancelled: a user cancelled the task, or the delegate stopped.
	ErrCancelled = errand.Errorf(errand.CodeCancelled, "task cancelled")
	// ErrTimedOut: the task ran past its timeout.
	ErrTimedOut = errand.Errorf(errand.CodeTimedOut, "task ran past its timeout")
)

// Outcome is what became of a task: the state to report with its result
// or error.
type Outcome struct {
	State  errand.State
	Result json.RawMessage
	Error  *errand.Error
}

// Masker is implemented by log writers that hide secret values: a handler
// that learns secrets from its task data registers them before it writes.
type Masker interface {
	Mask(values ...string)
}

// Option configures a Router.
type Option func(*Router)

// WithGrace sets how long a handler may run on after its context is done.
func WithGrace(d time.Duration) Option { return func(r *Router) { r.grace = d } }

// WithLogger sets where the router logs panics and abandoned handlers.
func WithLogger(l logrus.FieldLogger) Option { return func(r *Router) { r.log = l } }

// WithMaxResult bounds the size of a handler's response body.
func WithMaxResult(n int) Option { return func(r *Router) { r.maxResult = n } }

// Router routes tasks to handlers by type. It is safe for concurrent use.
type Router struct {
	mu        sync.RWMutex
	handlers  map[string]http.Handler
	grace     time.Duration
	maxResult int
	log       logrus.FieldLogger
}

// New returns an empty Router.
func New(opts ...Option) *Router {
	r := &Router{
		handlers:  map[string]http.Handler{},
		grace:     DefaultGrace,
		maxResult: DefaultMaxResult,
		log:       logrus.StandardLogger(),
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Handle registers h for tasks of taskType, replacing any earlier one.
func (r *Router) Handle(taskType string, h http.Handler) {
	if taskType == "" || h == nil {
		panic("router: Handle needs a task type and a handler")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handlers[taskType] = h
}

// HandleFunc registers f for tasks of taskType.
func (r *Router) HandleFunc(taskType string, f func(http.ResponseWriter, *http.Request)) {
	r.Handle(taskType, http.HandlerFunc(f))
}

// Types returns the registered task types.
func (r *Router) Types() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.handlers))
	for t := range r.handlers {
		out = append(out, t)
	}
	return out
}

type ctxKey int

const (
	taskKey ctxKey = iota
	logKey
)

// TaskFrom returns the task a handler is serving, or nil outside one.
func TaskFrom(ctx context.Context) *errand.Task {
	t, _ := ctx.Value(taskKey).(*errand.Task)
	return t
}

// LogFrom returns the task's log writer; io.Discard outside a task.
func LogFrom(ctx context.Context) io.Writer {
	if w, ok := ctx.Value(logKey).(io.Writer); ok {
		return w
	}
	return io.Discard
}

// NewContext returns ctx carrying the task and its log writer, as the
// request context of a handler does. Tests of handlers use it.
func NewContext(ctx context.Context, task *errand.Task, logs io.Writer) context.Context {
	if logs == nil {
		logs = io.Discard
	}
	ctx = context.WithValue(ctx, taskKey, task)
	return context.WithValue(ctx, logKey, logs)
}

// Serve runs the task's handler and returns the outcome. ctx is the task's
// context: the poller cancels it (with ErrCancelled or ErrTimedOut as the
// cause) when the task is cancelled or times out; the outcome then says
// so, whatever the handler answered. A handler that does not return within
// the grace period after that is abandoned. Serve never panics because a
// handler did.
func (r *Router) Serve(ctx context.Context, task *errand.Task, logs io.Writer) Outcome {
	r.mu.RLock()
	h, ok := r.handlers[task.Type]
	r.mu.RUnlock()
	if !ok {
		return failed(errand.Errorf(errand.CodeUnknownTaskType, "no handler for task type %q on this delegate", task.Type))
	}
	body, err := json.Marshal(task)
	if err != nil {
		return failed(errand.Errorf(errand.CodeInvalid, "encode task: %v", err))
	}
	ctx = NewContext(ctx, task, logs)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "/"+task.Type, bytes.NewReader(body))
	if err != nil {
		return failed(errand.Errorf(errand.CodeInvalid, "build request for task type %q: %v", task.Type, err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Errand-Task-Id", task.ID)
	req.Header.Set("X-Errand-Attempt", strconv.Itoa(task.Attempt))
	req.RequestURI = req.URL.RequestURI()

	rec := &recorder{header: http.Header{}, max: r.maxResult}
	done := make(chan *errand.Error, 1)
	log := r.log.WithFields(logrus.Fields{"task_id": task.ID, "task_type": task.Type})
	go func() {
		done <- r.run(h, rec, req, log)
	}()

	var panicked *errand.Error
	select {
	case panicked = <-done:
	case <-ctx.Done():
		timer := time.NewTimer(r.grace)
		select {
		case panicked = <-done:
			timer.Stop()
		case <-timer.C:
			rec.close()
			log.WithField("grace", r.grace).Warn("handler did not return after its task ended; abandoned")
			return Stopped(ctx)
		}
	}
	if ctx.Err() != nil {
		return Stopped(ctx)
	}
	if panicked != nil {
		return failed(panicked)
	}
	return rec.outcome()
}

// run calls the handler, turning a panic into an error.
func (r *Router) run(h http.Handler, w *recorder, req *http.Request, log logrus.FieldLogger) (perr *errand.Error) {
	defer func() {
		if v := recover(); v != nil {
			log.WithFields(logrus.Fields{"panic": fmt.Sprint(v), "stack": string(debug.Stack())}).Error("task handler panicked")
			perr = errand.Errorf(errand.CodeHandlerPanic, "handler panicked: %v", v)
		}
		w.close()
	}()
	h.ServeHTTP(w, req)
	return nil
}

// TimedOut is the cause a task's context is cancelled with when it runs
// past its timeout d: ErrTimedOut, with a reason that states d.
func TimedOut(d time.Duration) *errand.Error {
	return errand.Errorf(errand.CodeTimedOut, "task ran past its timeout of %s", d)
}

// Stopped is the outcome of a task whose context ended: timed_out or
// cancelled, after the cause the context was cancelled with.
func Stopped(ctx context.Context) Outcome {
	cause := context.Cause(ctx)
	if errors.Is(cause, ErrTimedOut) || errors.Is(cause, context.DeadlineExceeded) {
		var e *errand.Error
		if errors.As(cause, &e) && e.Code == errand.CodeTimedOut && e.Reason != "" {
			return Outcome{State: errand.StateTimedOut, Error: e}
		}
		return Outcome{State: errand.StateTimedOut, Error: errand.Errorf(errand.CodeTimedOut, "task ran past its timeout")}
	}
	reason := "task cancelled"
	var e *errand.Error
	if errors.As(cause, &e) && e.Code == errand.CodeCancelled && e.Reason != "" {
		reason = e.Reason
	}
	return Outcome{State: errand.StateCancelled, Error: errand.Errorf(errand.CodeCancelled, "%s", reason)}
}

func failed(e *errand.Error) Outcome { return Outcome{State: errand.StateFailed, Error: e} }

// recorder is the handler's ResponseWriter. Unlike httptest's it bounds
// the body and refuses writes once the handler was abandoned.
type recorder struct {
	mu       sync.Mutex
	header   http.Header
	status   int
	body     bytes.Buffer
	max      int
	overflow bool
	closed   bool
}

func (w *recorder) Header() http.Header { return w.header }

func (w *recorder) WriteHeader(status int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.status == 0 && !w.closed {
		w.status = status
	}
}

func (w *recorder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, http.ErrHandlerTimeout
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.body.Len()+len(p) > w.max {
		w.overflow = true
		return 0, fmt.Errorf("task result is larger than %d bytes", w.max)
	}
	return w.body.Write(p)
}

// Flush lets handlers that flush, as streaming HTTP handlers do, run
// unchanged.
func (w *recorder) Flush() {}

func (w *recorder) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
}

// errorBody is an httphelper.ErrorBody that may carry a result too, as
// exec.execute's does with its exit code.
type errorBody struct {
	Kind   string          `json:"kind"`
	Code   string          `json:"code"`
	Reason string          `json:"reason"`
	Result json.RawMessage `json:"result"`
}

func (w *recorder) outcome() Outcome {
	w.mu.Lock()
	defer w.mu.Unlock()
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	body := bytes.TrimSpace(w.body.Bytes())
	if w.overflow {
		return failed(errand.Errorf(errand.CodeBadResult, "handler answered with more than %d bytes", w.max))
	}
	if status >= 200 && status < 300 {
		if len(body) == 0 {
			return Outcome{State: errand.StateSucceeded}
		}
		if !json.Valid(body) {
			return failed(errand.Errorf(errand.CodeBadResult, "handler answered %d with a body that is not JSON: %.200q", status, body))
		}
		return Outcome{State: errand.StateSucceeded, Result: append(json.RawMessage(nil), body...)}
	}
	var eb errorBody
	if json.Unmarshal(body, &eb) == nil && eb.Code != "" {
		out := failed(&errand.Error{Code: eb.Code, Reason: eb.Reason})
		if len(eb.Result) > 0 && string(eb.Result) != "null" {
			out.Result = eb.Result
		}
		return out
	}
	reason := string(body)
	if len(reason) > 512 {
		reason = reason[:512] + "…"
	}
	if reason == "" {
		reason = http.StatusText(status)
	}
	return failed(errand.Errorf(errand.CodeTaskFailed, "handler answered %d: %s", status, reason))
}
