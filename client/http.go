package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/httphelper"
)

// Defaults of an HTTP client.
const (
	// DefaultTimeout bounds one request that is not a long-poll.
	DefaultTimeout = 30 * time.Second
	// DefaultRetry bounds the time spent retrying one user call.
	DefaultRetry = 30 * time.Second
	// AcquireMargin is added to an acquire's wait to bound its request:
	// the manager answers when the wait ends, the margin covers the trip.
	AcquireMargin = 15 * time.Second
	// maxErrorBody bounds how much of an error response is read.
	maxErrorBody = 64 << 10
	// maxResponseBody bounds how much of a JSON response is read.
	maxResponseBody = 64 << 20
)

// HTTP is the client of a manager reached over HTTP: it implements
// DelegateClient, UserClient and RunClient. It is safe for concurrent use.
type HTTP struct {
	base     string
	token    string
	hc       *http.Client
	log      *logrus.Entry
	retryMax time.Duration
	timeout  time.Duration
	// retryFirst is the first retry wait; tests lengthen it.
	retryFirst time.Duration
}

var (
	_ DelegateClient = (*HTTP)(nil)
	_ UserClient     = (*HTTP)(nil)
)

// Option configures an HTTP client.
type Option func(*HTTP)

// WithHTTPClient sends requests through hc. Its Timeout should be zero:
// the client bounds each request itself, and a long-poll or a log follow
// lasts longer than a usual timeout.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *HTTP) { c.hc = hc }
}

// WithHandler routes every request in-process to h, with no network port:
// h serves each request in a goroutine and its response body streams back
// through a pipe, so long-polls and log follows work as they do over the
// network. Cancelling a request's context cancels the handler's request
// context and unblocks the reader.
func WithHandler(h http.Handler) Option {
	return func(c *HTTP) { c.hc = &http.Client{Transport: &handlerTransport{h: h}} }
}

// WithLogger logs retries and failures to log.
func WithLogger(log *logrus.Entry) Option {
	return func(c *HTTP) { c.log = log }
}

// WithRetry bounds the time spent retrying a user call that may be
// retried (DefaultRetry when not given); 0 disables retries. The
// delegate's calls are sent once whatever it says: their caller retries.
func WithRetry(max time.Duration) Option {
	return func(c *HTTP) { c.retryMax = max }
}

// WithTimeout bounds each request that is not a long-poll or a log follow
// (DefaultTimeout when not given).
func WithTimeout(d time.Duration) Option {
	return func(c *HTTP) { c.timeout = d }
}

// New returns a client of the manager at baseURL (e.g.
// http://127.0.0.1:7700) that sends token as its bearer token.
func New(baseURL, token string, opts ...Option) *HTTP {
	c := &HTTP{
		base:       strings.TrimRight(baseURL, "/"),
		token:      token,
		hc:         &http.Client{},
		log:        logrus.NewEntry(logrus.StandardLogger()),
		retryMax:   DefaultRetry,
		timeout:    DefaultTimeout,
		retryFirst: 100 * time.Millisecond,
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// WithToken returns a copy of c that sends another bearer token: a
// delegate switches to its own token after Register.
func (c *HTTP) WithToken(token string) *HTTP {
	cp := *c
	cp.token = token
	return &cp
}

// Authenticated returns WithToken(token) as a DelegateClient.
func (c *HTTP) Authenticated(token string) DelegateClient { return c.WithToken(token) }

// BaseURL returns the manager's base URL.
func (c *HTTP) BaseURL() string { return c.base }

// retryPolicy says which failures of a call HTTP retries itself.
type retryPolicy int

const (
	// sendOnce never retries: the delegate's calls, whose caller retries
	// what is safe to repeat.
	sendOnce retryPolicy = iota
	// retryNotSent retries only when the request surely never reached the
	// manager (connection refused): user calls that create.
	retryNotSent
	// retryIdempotent retries every passing failure (errand.Retryable):
	// user reads and actions the manager applies once.
	retryIdempotent
)

// call is one API call.
type call struct {
	method string
	path   string
	query  url.Values
	body   any
	// out receives the JSON response; nil discards it.
	out     any
	policy  retryPolicy
	timeout time.Duration
}

// Register registers a delegate with the registration token and returns
// its id and its own token.
func (c *HTTP) Register(ctx context.Context, r *RegisterRequest) (*Registration, error) {
	var out Registration
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/delegates", body: r, out: &out, policy: sendOnce})
	if err != nil {
		return nil, fmt.Errorf("register delegate %q: %w", r.Name, err)
	}
	return &out, nil
}

// Heartbeat tells the manager the delegate is alive.
func (c *HTTP) Heartbeat(ctx context.Context, delegateID string, r *HeartbeatRequest) (*HeartbeatResponse, error) {
	if r == nil {
		r = &HeartbeatRequest{}
	}
	var out HeartbeatResponse
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/delegates/" + url.PathEscape(delegateID) + "/heartbeat",
		body: r, out: &out, policy: sendOnce})
	if err != nil {
		return nil, fmt.Errorf("heartbeat of delegate %s: %w", delegateID, err)
	}
	return &out, nil
}

// Acquire long-polls for tasks.
func (c *HTTP) Acquire(ctx context.Context, delegateID string, r *AcquireRequest) (*AcquireResponse, error) {
	if r == nil {
		r = &AcquireRequest{Max: 1}
	}
	q := url.Values{}
	q.Set("wait", time.Duration(r.Wait).String())
	q.Set("max", strconv.Itoa(r.Max))
	var out AcquireResponse
	cl := call{method: http.MethodPost, path: "/api/v1/delegates/" + url.PathEscape(delegateID) + "/acquire",
		query: q, out: &out, policy: sendOnce, timeout: time.Duration(r.Wait) + AcquireMargin}
	if len(r.Reports) > 0 {
		cl.body = &ReportBatch{Reports: r.Reports}
	}
	if err := c.do(ctx, cl); err != nil {
		return nil, fmt.Errorf("acquire for delegate %s: %w", delegateID, err)
	}
	// The tasks leased are the delegate's whatever became of the
	// reports: a manager that left them unanswered is the caller's to
	// ask again.
	return &out, nil
}

// UpdateStatus reports a task's state under its lease. The manager applies
// a repeated report once, so its caller may retry it.
func (c *HTTP) UpdateStatus(ctx context.Context, taskID string, u *StatusUpdate) (*Task, error) {
	var out Task
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/tasks/" + url.PathEscape(taskID) + "/status",
		body: u, out: &out, policy: sendOnce})
	if err != nil {
		return nil, fmt.Errorf("report %s for task %s: %w", u.State, taskID, err)
	}
	return &out, nil
}

// AppendLogs appends log lines at an offset under the task's lease. An
// append at the same offset is stored once, so its caller may retry it.
func (c *HTTP) AppendLogs(ctx context.Context, taskID string, a *LogAppend) (*LogAppendResult, error) {
	var out LogAppendResult
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/tasks/" + url.PathEscape(taskID) + "/logs",
		body: a, out: &out, policy: sendOnce})
	if err != nil {
		return nil, fmt.Errorf("append %d log lines at %d to task %s: %w", len(a.Lines), a.Offset, taskID, err)
	}
	return &out, nil
}

// Deregister removes the delegate.
func (c *HTTP) Deregister(ctx context.Context, delegateID string) error {
	err := c.do(ctx, call{method: http.MethodDelete, path: "/api/v1/delegates/" + url.PathEscape(delegateID), policy: sendOnce})
	if err != nil {
		return fmt.Errorf("deregister delegate %s: %w", delegateID, err)
	}
	return nil
}

// CreateTasks enqueues tasks atomically: all or none. It is retried only
// when the manager surely did not see the request.
func (c *HTTP) CreateTasks(ctx context.Context, specs []*TaskSpec) ([]*Task, error) {
	var out TaskList
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/tasks", body: &TaskBatch{Tasks: specs}, out: &out, policy: retryNotSent})
	if err != nil {
		return nil, fmt.Errorf("create %d tasks: %w", len(specs), err)
	}
	return out.Items, nil
}

// GetTask returns one task.
func (c *HTTP) GetTask(ctx context.Context, id string) (*Task, error) {
	var out Task
	if err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/tasks/" + url.PathEscape(id), out: &out, policy: retryIdempotent}); err != nil {
		return nil, fmt.Errorf("get task %s: %w", id, err)
	}
	return &out, nil
}

// ListTasks returns tasks matching the filter.
func (c *HTTP) ListTasks(ctx context.Context, f *TaskFilter) (*TaskList, error) {
	q := url.Values{}
	if f != nil {
		for _, s := range f.States {
			q.Add("state", string(s))
		}
		if f.Type != "" {
			q.Set("type", f.Type)
		}
		if f.RunID != "" {
			q.Set("run_id", f.RunID)
		}
		if f.Order != "" {
			q.Set("order", f.Order)
		}
		if f.After != "" {
			q.Set("after", f.After)
		}
		if f.Limit > 0 {
			q.Set("limit", strconv.Itoa(f.Limit))
		}
	}
	var out TaskList
	if err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/tasks", query: q, out: &out, policy: retryIdempotent}); err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	return &out, nil
}

// CancelTask cancels a task.
func (c *HTTP) CancelTask(ctx context.Context, id string) error {
	if err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/tasks/" + url.PathEscape(id) + "/cancel", policy: retryIdempotent}); err != nil {
		return fmt.Errorf("cancel task %s: %w", id, err)
	}
	return nil
}

// ListDelegates returns the registered delegates.
func (c *HTTP) ListDelegates(ctx context.Context) (*DelegateList, error) {
	var out DelegateList
	q := url.Values{}
	// The manager answers in pages; every caller wants them all.
	for range maxDelegatePages {
		var page DelegateList
		if err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/delegates", query: q, out: &page, policy: retryIdempotent}); err != nil {
			return nil, fmt.Errorf("list delegates: %w", err)
		}
		out.Kind, out.ManagerID = page.Kind, page.ManagerID
		out.Items = append(out.Items, page.Items...)
		if page.Next == "" || page.Next == q.Get("after") {
			return &out, nil
		}
		q.Set("after", page.Next)
	}
	return nil, fmt.Errorf("list delegates: more than %d pages", maxDelegatePages)
}

// maxDelegatePages bounds the pages ListDelegates reads (1000 delegates
// a page at most).
const maxDelegatePages = 1000

// GetDelegate returns one delegate.
func (c *HTTP) GetDelegate(ctx context.Context, id string) (*Delegate, error) {
	var out Delegate
	if err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/delegates/" + url.PathEscape(id), out: &out, policy: retryIdempotent}); err != nil {
		return nil, fmt.Errorf("get delegate %s: %w", id, err)
	}
	return &out, nil
}

// DrainDelegate asks a delegate to stop taking work.
func (c *HTTP) DrainDelegate(ctx context.Context, id string) error {
	if err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/delegates/" + url.PathEscape(id) + "/drain", policy: retryIdempotent}); err != nil {
		return fmt.Errorf("drain delegate %s: %w", id, err)
	}
	return nil
}

// TaskLogs writes a task's log lines from o.Offset to w, one per line.
// Without o.Follow it pages through the stored log and returns at its
// end; with o.Follow it streams lines as they arrive until the task has
// ended and every line was sent, resuming after the last line written if
// the connection breaks.
func (c *HTTP) TaskLogs(ctx context.Context, id string, o *LogOptions, w io.Writer) error {
	if o == nil {
		o = &LogOptions{}
	}
	var err error
	if o.Follow {
		err = c.followLogs(ctx, id, o.Offset, w)
	} else {
		err = c.pageLogs(ctx, id, o.Offset, w)
	}
	if err != nil {
		return fmt.Errorf("logs of task %s: %w", id, err)
	}
	return nil
}

func (c *HTTP) pageLogs(ctx context.Context, id string, offset int64, w io.Writer) error {
	for {
		q := url.Values{"offset": {strconv.FormatInt(offset, 10)}}
		var page LogPage
		if err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/tasks/" + url.PathEscape(id) + "/logs",
			query: q, out: &page, policy: retryIdempotent}); err != nil {
			return err
		}
		for _, l := range page.Lines {
			if _, err := io.WriteString(w, l+"\n"); err != nil {
				return fmt.Errorf("write log line: %w", err)
			}
		}
		if page.Complete || len(page.Lines) == 0 || page.Next <= offset {
			return nil
		}
		offset = page.Next
	}
}

func (c *HTTP) followLogs(ctx context.Context, id string, offset int64, w io.Writer) error {
	op := func() error {
		q := url.Values{"offset": {strconv.FormatInt(offset, 10)}, "follow": {"true"}}
		resp, err := c.send(ctx, call{method: http.MethodGet, path: "/api/v1/tasks/" + url.PathEscape(id) + "/logs", query: q})
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadString('\n')
			if len(line) > 0 && strings.HasSuffix(line, "\n") {
				if _, werr := io.WriteString(w, line); werr != nil {
					return backoff.Permanent(fmt.Errorf("write log line: %w", werr))
				}
				offset++
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				// The stream broke: resume after the last whole line.
				return &transportError{err: err}
			}
		}
	}
	return c.retrier("GET follow logs", retryIdempotent).Do(ctx, op)
}

// do sends a call, retrying it as its policy allows, and decodes the
// response into c.out.
func (c *HTTP) do(ctx context.Context, cl call) error {
	if cl.timeout == 0 {
		cl.timeout = c.timeout
	}
	if cl.policy == sendOnce {
		return c.once(ctx, cl)
	}
	return c.retrier(cl.method+" "+cl.path, cl.policy).Do(ctx, func() error {
		err := c.once(ctx, cl)
		if err != nil && cl.policy == retryNotSent && !notSent(err) {
			return backoff.Permanent(err)
		}
		return err
	})
}

// retrier retries a user call within the retry budget; what names it in
// the log.
func (c *HTTP) retrier(what string, policy retryPolicy) Retrier {
	return Retrier{
		NewBackOff: func() backoff.BackOff {
			if c.retryMax <= 0 || policy == sendOnce {
				return &backoff.StopBackOff{}
			}
			return backoff.NewExponentialBackOff(
				backoff.WithInitialInterval(c.retryFirst),
				backoff.WithMaxInterval(5*time.Second),
				backoff.WithMaxElapsedTime(c.retryMax),
			)
		},
		Notify: func(err error, wait time.Duration) {
			c.log.WithFields(logrus.Fields{"call": what, "wait": wait, "error": err}).Debug("retrying manager call")
		},
	}
}

// notSent reports whether err is a failure of a request that surely never
// reached the manager: the connection was refused.
func notSent(err error) bool {
	var te *transportError
	if !errors.As(err, &te) {
		return false
	}
	if errors.Is(te.err, syscall.ECONNREFUSED) {
		return true
	}
	var op *net.OpError
	return errors.As(te.err, &op) && op.Op == "dial"
}

// transportError is a failure before a whole response arrived.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// once sends one attempt of a call and decodes its answer.
func (c *HTTP) once(ctx context.Context, cl call) error {
	ctx, cancel := context.WithTimeout(ctx, cl.timeout)
	defer cancel()
	resp, err := c.send(ctx, cl)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if cl.out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return &transportError{err: fmt.Errorf("read response: %w", err)}
	}
	if err := json.Unmarshal(body, cl.out); err != nil {
		return errand.Errorf(errand.CodeInternal,
			"manager answered %d with a body that is not the JSON expected: %v", resp.StatusCode, err)
	}
	return nil
}

// send sends a request and returns a 2xx response, whose body the caller
// closes, or an error: *transportError before a response, the
// *errand.Error of the answer for other statuses.
func (c *HTTP) send(ctx context.Context, cl call) (*http.Response, error) {
	u := c.base + cl.path
	if len(cl.query) > 0 {
		u += "?" + cl.query.Encode()
	}
	var body io.Reader
	if cl.body != nil {
		b, err := json.Marshal(cl.body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w: %w", errand.ErrInvalid, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, u, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w: %w", errand.ErrInvalid, err)
	}
	if cl.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, &transportError{err: err}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, decodeError(resp)
}

// decodeError rebuilds the *errand.Error of a non-2xx response: the one in
// its JSON body, or one with the code its status implies.
func decodeError(resp *http.Response) *errand.Error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var eb httphelper.ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Code != "" {
		return eb.Err()
	}
	reason := fmt.Sprintf("manager answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	if s := strings.TrimSpace(string(b)); s != "" && len(s) < 200 && !strings.ContainsAny(s, "{<") {
		reason += ": " + s
	}
	return &errand.Error{Code: httphelper.CodeForStatus(resp.StatusCode), Reason: reason}
}
