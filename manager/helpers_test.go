package manager

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/manager/ost/posix"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/sqlite"
)

const (
	testAdmin = "admin-token-0123456789"
	testReg   = "registration-token-0123456789"
)

// clock is a settable clock for tests of expiry.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// env is a server over a real SQLite store and a real posix object
// storage, served by httptest.
type env struct {
	t       testing.TB
	s       *Server
	ts      *httptest.Server
	objects *posix.Storage
	http    *http.Client
}

func quietLogger() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func newEnv(t testing.TB, mods ...func(*Config)) *env {
	t.Helper()
	return newEnvOver(t, nil, mods...)
}

// newEnvOver is newEnv with the store wrapped by wrap (when not nil).
func newEnvOver(t testing.TB, wrap func(store.Store) store.Store, mods ...func(*Config)) *env {
	t.Helper()
	dir := t.TempDir()
	opened, err := sqlite.Open(context.Background(), filepath.Join(dir, "errand.db"))
	if err != nil {
		t.Fatal(err)
	}
	var st store.Store = opened
	if wrap != nil {
		st = wrap(st)
	}
	objects, err := posix.New(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{AdminToken: testAdmin, RegistrationToken: testReg, Log: quietLogger()}
	for _, m := range mods {
		m(&cfg)
	}
	s, err := New(cfg, st, objects)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	e := &env{t: t, s: s, ts: ts, objects: objects, http: ts.Client()}
	t.Cleanup(func() {
		s.shutdownWaiters()
		ts.Close()
		if err := s.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
		_ = opened.Close()
		_ = objects.Close()
	})
	return e
}

// do sends a request; body is JSON-encoded unless it is a string or
// []byte, sent as is.
func (e *env) do(method, path, token string, body any) (int, []byte) {
	e.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.ts.URL+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, out
}

// must sends a request and decodes the answer into out, failing unless
// the status is want.
func (e *env) must(want int, method, path, token string, body, out any) {
	e.t.Helper()
	code, b := e.do(method, path, token, body)
	if code != want {
		e.t.Fatalf("%s %s = %d %s, want %d", method, path, code, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			e.t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
}

// fails sends a request and checks the structured error it gets.
func (e *env) fails(wantStatus int, wantCode, method, path, token string, body any) httphelper.ErrorBody {
	e.t.Helper()
	code, b := e.do(method, path, token, body)
	var eb httphelper.ErrorBody
	if err := json.Unmarshal(b, &eb); err != nil {
		e.t.Fatalf("%s %s = %d %s: not a JSON error: %v", method, path, code, b, err)
	}
	if code != wantStatus || eb.Code != wantCode || eb.Kind != errand.KindError || eb.OperationID == "" {
		e.t.Fatalf("%s %s = %d %s, want %d with code %s and an operation id", method, path, code, b, wantStatus, wantCode)
	}
	return eb
}

type delegate struct {
	id, token string
}

func (e *env) register(name string, req *client.RegisterRequest) delegate {
	e.t.Helper()
	if req == nil {
		req = &client.RegisterRequest{}
	}
	req.Name = name
	var reg client.Registration
	e.must(http.StatusCreated, "POST", "/api/v1/delegates", testReg, req, &reg)
	return delegate{id: reg.ID, token: reg.Token}
}

func (e *env) create(spec *client.TaskSpec) *errand.Task {
	e.t.Helper()
	var t errand.Task
	e.must(http.StatusCreated, "POST", "/api/v1/tasks", testAdmin, spec, &t)
	return &t
}

func (e *env) acquire(d delegate, query string) *client.AcquireResponse {
	e.t.Helper()
	var a client.AcquireResponse
	e.must(http.StatusOK, "POST", "/api/v1/delegates/"+d.id+"/acquire?"+query, d.token, nil, &a)
	return &a
}

func (e *env) getTask(id string) *errand.Task {
	e.t.Helper()
	var t errand.Task
	e.must(http.StatusOK, "GET", "/api/v1/tasks/"+id, testAdmin, nil, &t)
	return &t
}

// waitAcquirers waits until n long-polls are registered with the hub.
func (e *env) waitAcquirers(n int) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		got := e.s.sched.Waiting()
		if got >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	e.t.Fatalf("%d long-polls never started", n)
}
