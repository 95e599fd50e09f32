package router_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/router"
)

func quietLogger() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func TestServe(t *testing.T) {
	// released lets the handler that ignores its context return once
	// the test is over, so that no goroutine outlives the package's tests.
	released := make(chan struct{})
	t.Cleanup(func() { close(released) })
	block := func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		httphelper.WriteError(w, errand.Errorf(errand.CodeTaskFailed, "stopped"))
	}
	cases := []struct {
		name       string
		taskType   string
		handler    http.HandlerFunc
		cancel     error // cause to cancel the task context with, after a moment
		wantState  errand.State
		wantCode   string
		wantResult string
	}{
		{
			name: "success",
			handler: func(w http.ResponseWriter, r *http.Request) {
				httphelper.WriteJSON(w, map[string]int{"n": 1}, http.StatusOK)
			},
			wantState: errand.StateSucceeded, wantResult: `{"n":1}`,
		},
		{
			name: "empty 204 succeeds without result",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusNoContent)
			},
			wantState: errand.StateSucceeded,
		},
		{
			name: "structured error",
			handler: func(w http.ResponseWriter, r *http.Request) {
				httphelper.WriteError(w, errand.Errorf(errand.CodeExitCode, "exit code 3"))
			},
			wantState: errand.StateFailed, wantCode: errand.CodeExitCode,
		},
		{
			name: "structured error with result",
			handler: func(w http.ResponseWriter, r *http.Request) {
				httphelper.WriteJSON(w, map[string]any{"kind": "error", "code": "exit_code", "reason": "exit code 2", "result": map[string]int{"exit_code": 2}}, 422)
			},
			wantState: errand.StateFailed, wantCode: errand.CodeExitCode, wantResult: `{"exit_code":2}`,
		},
		{
			name: "bad request from decode",
			handler: func(w http.ResponseWriter, r *http.Request) {
				var v struct{ Nope int }
				if err := httphelper.DecodeJSON(r, &v, 0); err != nil {
					httphelper.WriteError(w, err)
					return
				}
			},
			wantState: errand.StateFailed, wantCode: errand.CodeInvalid,
		},
		{
			name: "plain text 2xx is a bad result",
			handler: func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "all good")
			},
			wantState: errand.StateFailed, wantCode: errand.CodeBadResult,
		},
		{
			name: "plain 500 fails the task",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "boom", http.StatusInternalServerError)
			},
			wantState: errand.StateFailed, wantCode: errand.CodeTaskFailed,
		},
		{
			name: "panic",
			handler: func(w http.ResponseWriter, r *http.Request) {
				panic("kaboom")
			},
			wantState: errand.StateFailed, wantCode: errand.CodeHandlerPanic,
		},
		{
			name: "unknown type", taskType: "nope",
			wantState: errand.StateFailed, wantCode: errand.CodeUnknownTaskType,
		},
		{
			name: "cancel", handler: block, cancel: router.ErrCancelled,
			wantState: errand.StateCancelled, wantCode: errand.CodeCancelled,
		},
		{
			name: "timeout", handler: block, cancel: router.ErrTimedOut,
			wantState: errand.StateTimedOut, wantCode: errand.CodeTimedOut,
		},
		{
			name: "handler ignoring its context is abandoned",
			handler: func(w http.ResponseWriter, r *http.Request) {
				<-released // not r.Context().Done(): this handler ignores its task's end
				httphelper.WriteJSON(w, map[string]int{"late": 1}, http.StatusOK)
			},
			cancel:    router.ErrCancelled,
			wantState: errand.StateCancelled, wantCode: errand.CodeCancelled,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := router.New(router.WithGrace(100*time.Millisecond), router.WithLogger(quietLogger()))
			if tc.handler != nil {
				r.Handle("test", tc.handler)
			}
			typ := tc.taskType
			if typ == "" {
				typ = "test"
			}
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			if tc.cancel != nil {
				time.AfterFunc(20*time.Millisecond, func() { cancel(tc.cancel) })
			}
			start := time.Now()
			out := r.Serve(ctx, &errand.Task{ID: "t1", Type: typ}, io.Discard)
			if out.State != tc.wantState {
				t.Fatalf("state = %s (%v), want %s", out.State, out.Error, tc.wantState)
			}
			if tc.wantCode != "" && (out.Error == nil || out.Error.Code != tc.wantCode) {
				t.Fatalf("error = %v, want code %s", out.Error, tc.wantCode)
			}
			if tc.wantCode == "" && out.Error != nil {
				t.Fatalf("unexpected error %v", out.Error)
			}
			if string(out.Result) != tc.wantResult {
				t.Fatalf("result = %s, want %s", out.Result, tc.wantResult)
			}
			if tc.cancel != nil && time.Since(start) > time.Second {
				t.Fatalf("Serve took %s after cancel; want the grace period at most", time.Since(start))
			}
		})
	}
}

func TestRequestCarriesTaskAndLog(t *testing.T) {
	r := router.New()
	r.HandleFunc("echo", func(w http.ResponseWriter, req *http.Request) {
		var got errand.Task
		if err := json.NewDecoder(req.Body).Decode(&got); err != nil {
			httphelper.WriteBadRequest(w, err)
			return
		}
		fromCtx := router.TaskFrom(req.Context())
		fmt.Fprintf(router.LogFrom(req.Context()), "hello from %s\n", fromCtx.ID)
		httphelper.WriteJSON(w, map[string]any{
			"body_id": got.ID, "ctx_id": fromCtx.ID, "lease": fromCtx.Lease.Token,
			"method": req.Method, "data": got.Data,
		}, http.StatusOK)
	})
	var logs bytes.Buffer
	task := &errand.Task{ID: "t42", Type: "echo", Data: json.RawMessage(`{"x":1}`), Lease: &errand.Lease{Token: "L"}}
	out := r.Serve(context.Background(), task, &logs)
	want := `{"body_id":"t42","ctx_id":"t42","data":{"x":1},"lease":"L","method":"POST"}`
	if out.State != errand.StateSucceeded || string(out.Result) != want {
		t.Fatalf("outcome = %+v %s, want %s", out, out.Result, want)
	}
	if logs.String() != "hello from t42\n" {
		t.Fatalf("log = %q", logs.String())
	}
}

func TestMiddleware(t *testing.T) {
	var seen []string
	mw := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen = append(seen, r.Header.Get("X-Errand-Task-Id"))
			w.Header().Set("X-Wrapped", "yes")
			next.ServeHTTP(w, r)
		})
	}
	r := router.New()
	r.Handle("t", mw(http.TimeoutHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		httphelper.WriteJSON(w, true, http.StatusCreated)
	}), time.Second, `{"kind":"error","code":"timed_out","reason":"slow"}`)))
	out := r.Serve(context.Background(), &errand.Task{ID: "m1", Type: "t"}, nil)
	if out.State != errand.StateSucceeded || string(out.Result) != "true" {
		t.Fatalf("outcome = %+v", out)
	}
	if strings.Join(seen, ",") != "m1" {
		t.Fatalf("middleware saw %v", seen)
	}
}

func TestResultTooLarge(t *testing.T) {
	r := router.New(router.WithMaxResult(10))
	r.HandleFunc("big", func(w http.ResponseWriter, _ *http.Request) {
		httphelper.WriteJSON(w, strings.Repeat("x", 100), http.StatusOK)
	})
	out := r.Serve(context.Background(), &errand.Task{ID: "b", Type: "big"}, nil)
	if out.State != errand.StateFailed || !errors.Is(out.Error, &errand.Error{Code: errand.CodeBadResult}) {
		t.Fatalf("outcome = %+v", out)
	}
}

func TestPanicKeepsRouterUsable(t *testing.T) {
	r := router.New(router.WithLogger(quietLogger()))
	r.HandleFunc("p", func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) })
	r.HandleFunc("ok", func(w http.ResponseWriter, _ *http.Request) { httphelper.WriteJSON(w, 1, 200) })
	for i := 0; i < 3; i++ {
		if out := r.Serve(context.Background(), &errand.Task{Type: "p"}, nil); out.Error == nil || out.Error.Code != errand.CodeHandlerPanic {
			t.Fatalf("panic outcome = %+v", out)
		}
	}
	if out := r.Serve(context.Background(), &errand.Task{Type: "ok"}, nil); out.State != errand.StateSucceeded {
		t.Fatalf("after panics: %+v", out)
	}
}

// A task handler is tested like any HTTP handler: httptest and a request
// whose context carries the task.
func TestHandlerWithHTTPTest(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		task := router.TaskFrom(r.Context())
		fmt.Fprintf(router.LogFrom(r.Context()), "running %s\n", task.ID)
		httphelper.WriteJSON(w, map[string]string{"id": task.ID}, http.StatusOK)
	})
	var logs bytes.Buffer
	req := httptest.NewRequest(http.MethodPost, "/x", strings.NewReader(`{}`))
	req = req.WithContext(router.NewContext(req.Context(), &errand.Task{ID: "h1"}, &logs))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != `{"id":"h1"}` || logs.String() != "running h1\n" {
		t.Fatalf("code %d body %q log %q", rec.Code, rec.Body.String(), logs.String())
	}
}
