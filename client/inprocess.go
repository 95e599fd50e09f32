package client

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
)

// handlerTransport is an http.RoundTripper that serves each request on a
// handler in-process. The handler runs in its own goroutine, which ends
// when the handler returns; its response body reaches the caller through
// an io.Pipe, so a handler that streams (a log follow) or blocks (a
// long-poll) behaves as it would behind a socket.
type handlerTransport struct {
	h http.Handler
}

// RoundTrip serves req on the handler and returns once the handler has
// written its header, or with the context's error if req's context ends
// first.
func (t *handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	pr, pw := io.Pipe()
	rw := &pipeWriter{header: make(http.Header), pw: pw, ready: make(chan struct{})}

	sreq := req.Clone(ctx)
	sreq.RequestURI = req.URL.RequestURI()
	sreq.RemoteAddr = "127.0.0.1:0"
	if sreq.Host == "" {
		sreq.Host = req.URL.Host
	}
	if sreq.Body == nil {
		sreq.Body = http.NoBody
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if req.Body != nil {
				_ = req.Body.Close()
			}
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					rw.abort(fmt.Errorf("handler aborted the response"))
					return
				}
				rw.abort(fmt.Errorf("handler panicked: %v", p))
				return
			}
			rw.finish()
		}()
		t.h.ServeHTTP(rw, sreq)
	}()
	// Unblock a reader stuck on the pipe when the request's context ends,
	// whatever the handler does; stop watching once the handler returned.
	go func() {
		select {
		case <-ctx.Done():
			_ = pr.CloseWithError(ctx.Err())
		case <-done:
		}
	}()

	select {
	case <-rw.ready:
	case <-ctx.Done():
		_ = pr.CloseWithError(ctx.Err())
		return nil, ctx.Err()
	}
	// A handler that returned because the request's context ended wrote
	// no answer worth reading: the caller gets the context's error, as
	// it would from a transport whose connection was closed.
	if err := ctx.Err(); err != nil {
		_ = pr.CloseWithError(err)
		return nil, err
	}
	if rw.err != nil {
		_ = pr.Close()
		return nil, rw.err
	}
	resp := &http.Response{
		Status:        strconv.Itoa(rw.status) + " " + http.StatusText(rw.status),
		StatusCode:    rw.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        rw.sent,
		Body:          pr,
		ContentLength: -1,
		Request:       req,
	}
	if cl := rw.sent.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil {
			resp.ContentLength = n
		}
	}
	return resp, nil
}

// pipeWriter is the http.ResponseWriter of an in-process request.
type pipeWriter struct {
	header http.Header
	pw     *io.PipeWriter

	once   sync.Once
	ready  chan struct{} // closed when the header is sent or the handler failed
	status int
	sent   http.Header
	err    error // set before ready is closed when no response exists
}

// Header returns the header to send.
func (w *pipeWriter) Header() http.Header { return w.header }

// WriteHeader sends the header with the status.
func (w *pipeWriter) WriteHeader(status int) {
	w.once.Do(func() {
		w.status = status
		w.sent = w.header.Clone()
		close(w.ready)
	})
}

// Write sends body bytes, blocking until the caller reads them.
func (w *pipeWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.pw.Write(b)
}

// Flush does nothing: every Write is handed over as it happens.
func (w *pipeWriter) Flush() { w.WriteHeader(http.StatusOK) }

// finish ends the body after the handler returned.
func (w *pipeWriter) finish() {
	w.WriteHeader(http.StatusOK)
	_ = w.pw.Close()
}

// abort ends the exchange with an error: the caller gets it from
// RoundTrip if no header was sent, else from reading the body.
func (w *pipeWriter) abort(err error) {
	w.once.Do(func() {
		w.err = err
		close(w.ready)
	})
	_ = w.pw.CloseWithError(err)
}
