package manager

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

// loadOpenAPI loads api/openapi.yaml and validates it as an OpenAPI 3
// document, the way a generator or a gateway would read it.
func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(filepath.Join("..", "api", "openapi.yaml"))
	if err != nil {
		t.Fatalf("load openapi.yaml: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("openapi.yaml is not a valid OpenAPI 3 document: %v", err)
	}
	return doc
}

// TestOpenAPIDocumentValid checks the document with kin-openapi: it
// parses, every reference resolves, every example and default matches its
// schema, and the operation ids are unique.
func TestOpenAPIDocumentValid(t *testing.T) {
	doc := loadOpenAPI(t)
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi = %q, want 3.x", doc.OpenAPI)
	}
	ids := map[string]string{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.OperationID == "" {
				t.Errorf("%s %s has no operationId", method, path)
				continue
			}
			if other, ok := ids[op.OperationID]; ok {
				t.Errorf("operationId %s is used by %s and %s %s", op.OperationID, other, method, path)
			}
			ids[op.OperationID] = method + " " + path
		}
	}
}

// TestRoutesMatchOpenAPI checks that the OpenAPI document describes every
// registered route and no other, and that every operation it describes
// has responses with a schema for every JSON body.
func TestRoutesMatchOpenAPI(t *testing.T) {
	doc := loadOpenAPI(t)
	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			documented[strings.ToUpper(method)+" "+path] = true
			if op.Responses == nil || op.Responses.Len() == 0 {
				t.Errorf("%s %s has no responses", method, path)
				continue
			}
			for status, ref := range op.Responses.Map() {
				if ref.Value == nil {
					t.Errorf("%s %s %s: unresolved response", method, path, status)
					continue
				}
				if mt := ref.Value.Content.Get("application/json"); mt != nil && mt.Schema == nil {
					t.Errorf("%s %s %s: JSON body without a schema", method, path, status)
				}
			}
		}
	}
	e := newEnv(t)
	registered := map[string]bool{}
	for _, r := range e.s.Routes() {
		// The mux's {$} anchors the root; OpenAPI has no such syntax.
		registered[r.Method+" "+strings.TrimSuffix(r.Pattern, "{$}")] = true
	}
	var missing, extra []string
	for k := range registered {
		if !documented[k] {
			missing = append(missing, k)
		}
	}
	for k := range documented {
		if !registered[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("routes missing from openapi.yaml: %v", missing)
	}
	if len(extra) > 0 {
		t.Errorf("openapi.yaml describes routes the server does not have: %v", extra)
	}
	if len(registered) < 18 {
		t.Errorf("only %d routes registered", len(registered))
	}
}

// apiValidator is an http.RoundTripper that checks every request and
// response against the OpenAPI document: the route must be described,
// a request the server accepts must match its operation, and every
// response must have a documented status and match its schema. Problems
// are collected, not reported, because the host delegate's calls run on
// goroutines of their own.
type apiValidator struct {
	router routers.Router
	base   http.RoundTripper

	mu   sync.Mutex
	seen map[string]map[int]bool // operation id → statuses answered
	errs []string
}

var registerHTMLDecoder sync.Once

func newAPIValidator(t *testing.T, baseURL string, base http.RoundTripper) *apiValidator {
	t.Helper()
	registerHTMLDecoder.Do(func() {
		openapi3filter.RegisterBodyDecoder("text/html", func(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
			b, err := io.ReadAll(body)
			return string(b), err
		})
	})
	doc := loadOpenAPI(t)
	doc.Servers = openapi3.Servers{{URL: baseURL}}
	r, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatalf("openapi router: %v", err)
	}
	return &apiValidator{router: r, base: base, seen: map[string]map[int]bool{}}
}

func (v *apiValidator) fail(format string, args ...any) {
	v.mu.Lock()
	v.errs = append(v.errs, fmt.Sprintf(format, args...))
	v.mu.Unlock()
}

func (v *apiValidator) RoundTrip(req *http.Request) (*http.Response, error) {
	what := req.Method + " " + req.URL.RequestURI()
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		v.fail("%s: not in openapi.yaml: %v", what, err)
		return v.base.RoundTrip(req)
	}
	var reqBody []byte
	if req.Body != nil {
		reqBody, err = io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	probe := req.Clone(req.Context())
	probe.Body = io.NopCloser(bytes.NewReader(reqBody))
	if len(reqBody) > 0 && probe.Header.Get("Content-Type") == "" {
		// The server reads every body as JSON whatever its type; the
		// tests' raw requests do not always say so.
		probe.Header.Set("Content-Type", "application/json")
	}
	in := &openapi3filter.RequestValidationInput{Request: probe, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true}}
	reqErr := openapi3filter.ValidateRequest(req.Context(), in)

	send := req.Clone(req.Context())
	send.Body = io.NopCloser(bytes.NewReader(reqBody))
	if req.Body == nil {
		send.Body = nil
	}
	resp, err := v.base.RoundTrip(send)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		// A long-poll or follow cut short by the end of the test.
		return resp, nil
	}
	op := route.Operation.OperationID
	v.mu.Lock()
	if v.seen[op] == nil {
		v.seen[op] = map[int]bool{}
	}
	v.seen[op][resp.StatusCode] = true
	v.mu.Unlock()
	if reqErr != nil && resp.StatusCode < 300 {
		v.fail("%s (%s): the server accepted a request the document refuses: %v\nbody: %s", what, op, reqErr, reqBody)
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode,
		Header: resp.Header, Body: io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	if err := openapi3filter.ValidateResponse(req.Context(), out); err != nil {
		v.fail("%s (%s) answered %d, which the document does not describe: %v\nbody: %s", what, op, resp.StatusCode, err, body)
	}
	return resp, nil
}

// check reports what the validator found.
func (v *apiValidator) check(t *testing.T) {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range v.errs {
		t.Error(e)
	}
}

// TestOpenAPIResponses drives a real server on loopback through every
// operation, successes and errors, with a real host delegate running a
// pipeline run, and checks every request and response against the
// document.
func TestOpenAPIResponses(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBodyBytes = 64 << 10 })
	v := newAPIValidator(t, e.ts.URL, e.ts.Client().Transport)
	e.http = &http.Client{Transport: v}

	// Delegates, driven by hand so that every answer is deterministic.
	d1 := e.register("one", &client.RegisterRequest{Group: "g1", Capacity: 2,
		Labels: map[string]string{"only": "one"}, Archs: []string{"amd64"}, Version: "test"})
	d2 := e.register("two", &client.RegisterRequest{Group: "g2", Dynamic: true})
	e.must(http.StatusOK, "POST", "/api/v1/delegates/"+d1.id+"/heartbeat", d1.token, nil, nil)
	e.must(http.StatusOK, "POST", "/api/v1/delegates/"+d1.id+"/heartbeat", d1.token, &client.HeartbeatRequest{Overloaded: true}, nil)
	e.must(http.StatusOK, "POST", "/api/v1/delegates/"+d1.id+"/heartbeat", d1.token, &client.HeartbeatRequest{}, nil)
	e.fails(http.StatusForbidden, errand.CodeForbidden, "POST", "/api/v1/delegates/"+d2.id+"/heartbeat", d1.token, nil)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/delegates/"+d1.id+"/heartbeat", d1.token, `{"nope":1}`)

	// Direct tasks: one, then a batch whose second task runs whether the
	// first succeeds or fails.
	only := errand.Selector{Labels: map[string]string{"only": "one"}}
	first := e.create(&client.TaskSpec{Type: "test.echo", Selector: only, Data: []byte(`{"say":"hi"}`),
		Timeout: errand.Duration(time.Minute)})
	var batch client.TaskList
	e.must(http.StatusCreated, "POST", "/api/v1/tasks", testAdmin, &client.TaskBatch{Tasks: []*client.TaskSpec{
		{ID: "batch-a", Type: "test.echo", Selector: only},
		{ID: "batch-b", Type: "test.echo", Selector: only, Priority: 5,
			DependsOn: []errand.Dependency{{Task: "batch-a", Condition: errand.AnyOf(errand.OnSuccess, errand.OnFailure)}}},
	}}, &batch)
	e.fails(http.StatusConflict, errand.CodeConflict, "POST", "/api/v1/tasks", testAdmin, &client.TaskSpec{ID: "batch-a", Type: "test.echo"})
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/tasks", testAdmin, `{"type":`)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/tasks", testAdmin, &client.TaskSpec{Type: "test.echo", Priority: 5000})
	e.fails(http.StatusRequestEntityTooLarge, errand.CodeTooLarge, "POST", "/api/v1/tasks", testAdmin,
		`{"type":"test.echo","data":{"x":"`+strings.Repeat("x", 70<<10)+`"}}`)
	e.fails(http.StatusUnauthorized, errand.CodeUnauthorized, "GET", "/api/v1/tasks", "", nil)
	e.fails(http.StatusUnauthorized, errand.CodeUnauthorized, "GET", "/api/v1/tasks", "wrong", nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "GET", "/api/v1/tasks/nope", testAdmin, nil)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "GET", "/api/v1/tasks?state=bogus", testAdmin, nil)
	e.must(http.StatusOK, "GET", "/api/v1/tasks", testAdmin, nil, nil)
	e.must(http.StatusOK, "GET", "/api/v1/tasks?state=queued,pending&type=test.echo&limit=2", testAdmin, nil, nil)
	e.must(http.StatusOK, "GET", "/api/v1/tasks?order=desc&state=queued,pending&type=test.echo&limit=1", testAdmin, nil, nil)
	e.must(http.StatusOK, "GET", "/api/v1/tasks?order=asc&after=batch-a", testAdmin, nil, nil)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "GET", "/api/v1/tasks?order=newest", testAdmin, nil)
	e.getTask(first.ID)

	// The delegate runs the first task: acquire, running, logs, success.
	got := e.acquire(d1, "wait=0&max=1")
	if len(got.Tasks) != 1 {
		t.Fatalf("acquired %d tasks, want 1", len(got.Tasks))
	}
	task := got.Tasks[0]
	status := func(want int, id, lease string, st errand.State, extra map[string]any) {
		t.Helper()
		body := map[string]any{"lease": lease, "state": st}
		for k, v := range extra {
			body[k] = v
		}
		e.must(want, "POST", "/api/v1/tasks/"+id+"/status", d1.token, body, nil)
	}
	status(http.StatusOK, task.ID, task.Lease.Token, errand.StateRunning, nil)
	e.fails(http.StatusConflict, errand.CodeLeaseLost, "POST", "/api/v1/tasks/"+task.ID+"/status", d1.token,
		map[string]any{"lease": "stale", "state": "succeeded"})
	e.fails(http.StatusForbidden, errand.CodeForbidden, "POST", "/api/v1/tasks/"+task.ID+"/status", d2.token,
		map[string]any{"lease": task.Lease.Token, "state": "succeeded"})
	e.must(http.StatusOK, "POST", "/api/v1/tasks/"+task.ID+"/logs", d1.token,
		&client.LogAppend{Lease: task.Lease.Token, Offset: 0, Lines: []string{"hello", "world"}}, nil)
	e.fails(http.StatusConflict, errand.CodeLogOffset, "POST", "/api/v1/tasks/"+task.ID+"/logs", d1.token,
		&client.LogAppend{Lease: task.Lease.Token, Offset: 10, Lines: []string{"gap"}})
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/tasks/"+task.ID+"/logs", d1.token,
		&client.LogAppend{Lease: task.Lease.Token, Offset: 2, Lines: []string{"two\nlines"}})
	// The heartbeat and the acquire of a delegate that holds a task.
	e.must(http.StatusOK, "POST", "/api/v1/delegates/"+d1.id+"/heartbeat", d1.token, &client.HeartbeatRequest{Running: []string{task.ID}}, nil)
	status(http.StatusOK, task.ID, task.Lease.Token, errand.StateSucceeded, map[string]any{"result": map[string]any{"ok": true}})
	e.fails(http.StatusConflict, errand.CodeIllegalTransition, "POST", "/api/v1/tasks/"+task.ID+"/status", d1.token,
		map[string]any{"lease": task.Lease.Token, "state": "running"})
	e.must(http.StatusOK, "GET", "/api/v1/tasks/"+task.ID+"/logs", testAdmin, nil, nil)
	e.must(http.StatusOK, "GET", "/api/v1/tasks/"+task.ID+"/logs?offset=1&limit=10", testAdmin, nil, nil)
	if code, b := e.do("GET", "/api/v1/tasks/"+task.ID+"/logs?follow=true", testAdmin, nil); code != http.StatusOK || string(b) != "hello\nworld\n" {
		t.Errorf("followed log = %d %q", code, b)
	}

	// The batch: the first fails with an error, the second is released
	// by its condition and runs; then a queued task is cancelled.
	got = e.acquire(d1, "wait=1s&max=2")
	if len(got.Tasks) != 1 || got.Tasks[0].ID != "batch-a" {
		t.Fatalf("acquired %+v, want batch-a", got.Tasks)
	}
	a := got.Tasks[0]
	status(http.StatusOK, a.ID, a.Lease.Token, errand.StateFailed, map[string]any{"error": map[string]any{"code": "task_failed", "reason": "no"}})
	got = e.acquire(d1, "wait=1s&max=2")
	if len(got.Tasks) != 1 || got.Tasks[0].ID != "batch-b" || len(got.Tasks[0].Dependencies) != 1 {
		t.Fatalf("acquired %+v, want batch-b with its dependency's outcome", got.Tasks)
	}
	queued := e.create(&client.TaskSpec{Type: "test.echo", Selector: only})
	e.must(http.StatusNoContent, "POST", "/api/v1/tasks/"+queued.ID+"/cancel", testAdmin, nil, nil)
	e.fails(http.StatusConflict, errand.CodeIllegalTransition, "POST", "/api/v1/tasks/"+queued.ID+"/cancel", testAdmin, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "POST", "/api/v1/tasks/nope/cancel", testAdmin, nil)
	// A held task cancelled: the delegate hears of it in its heartbeat.
	b := got.Tasks[0]
	e.must(http.StatusNoContent, "POST", "/api/v1/tasks/"+b.ID+"/cancel", testAdmin, nil, nil)
	var hb client.HeartbeatResponse
	e.must(http.StatusOK, "POST", "/api/v1/delegates/"+d1.id+"/heartbeat", d1.token, &client.HeartbeatRequest{Running: []string{b.ID}}, &hb)
	if len(hb.Cancel) != 1 {
		t.Errorf("heartbeat = %+v, want the cancel of %s", hb, b.ID)
	}
	e.acquire(d1, "wait=0&max=0")
	status(http.StatusOK, b.ID, b.Lease.Token, errand.StateCancelled, nil)

	// Delegates seen by the admin and by a delegate of a group.
	e.must(http.StatusOK, "GET", "/api/v1/delegates", testAdmin, nil, nil)
	e.must(http.StatusOK, "GET", "/api/v1/delegates?state=active,draining&group=g1", testAdmin, nil, nil)
	e.must(http.StatusOK, "GET", "/api/v1/delegates?group=g1", d1.token, nil, nil)
	e.fails(http.StatusForbidden, errand.CodeForbidden, "GET", "/api/v1/delegates?group=g2", d1.token, nil)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "GET", "/api/v1/delegates?state=bogus", testAdmin, nil)
	e.must(http.StatusOK, "GET", "/api/v1/delegates/"+d1.id, testAdmin, nil, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "GET", "/api/v1/delegates/nope", testAdmin, nil)
	e.fails(http.StatusUnauthorized, errand.CodeUnauthorized, "GET", "/api/v1/delegates/"+d1.id, d1.token, nil)
	e.fails(http.StatusUnauthorized, errand.CodeUnauthorized, "POST", "/api/v1/delegates", testAdmin, &client.RegisterRequest{Name: "x"})
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/delegates", testReg, `{"name":"x","bogus":true}`)
	e.must(http.StatusNoContent, "POST", "/api/v1/delegates/"+d2.id+"/drain", testAdmin, nil, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "POST", "/api/v1/delegates/nope/drain", testAdmin, nil)
	e.must(http.StatusOK, "POST", "/api/v1/delegates/"+d2.id+"/acquire?wait=0&max=1", d2.token, nil, nil)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/delegates/"+d1.id+"/acquire?max=-1", d1.token, nil)
	e.fails(http.StatusForbidden, errand.CodeForbidden, "POST", "/api/v1/delegates/"+d2.id+"/acquire", d1.token, nil)
	e.fails(http.StatusForbidden, errand.CodeForbidden, "DELETE", "/api/v1/delegates/"+d2.id, d1.token, nil)
	e.must(http.StatusNoContent, "DELETE", "/api/v1/delegates/"+d2.id, d2.token, nil, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "DELETE", "/api/v1/delegates/"+d2.id, testAdmin, nil)

	// A pipeline run, run by a real host delegate whose every call is
	// checked too, with a stage that waits for an approval.
	e.startValidatedHostDelegate(v)
	run := e.submit(`stages:
  - name: build
    steps:
      - name: hello
        commands: [echo hello]
  - name: deploy
    depends:
      - stage: build
        conditions: [on_success, on_failure]
    approval: {approvers: 1}
    steps:
      - name: ship
        commands: [echo ship]
`)
	e.waitRun(run.ID, "waiting for approval", func(r *client.Run) bool {
		s := stage(r, "deploy")
		return s != nil && s.State == "waiting"
	})
	e.fails(http.StatusNotFound, errand.CodeNotFound, "POST", "/api/v1/runs/"+run.ID+"/stages/nope/approve", testAdmin, nil)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/runs/"+run.ID+"/stages/deploy/approve", testAdmin, `{"who":"me"}`)
	e.must(http.StatusNoContent, "POST", "/api/v1/runs/"+run.ID+"/stages/deploy/approve", testAdmin, &client.ApproveRequest{Approver: "alice"}, nil)
	done := e.waitRun(run.ID, "finished", finished)
	if done.Result != "success" {
		t.Errorf("run = %s, want success", summary(done))
	}
	e.fails(http.StatusConflict, errand.CodeConflict, "POST", "/api/v1/runs/"+run.ID+"/stages/deploy/approve", testAdmin, nil)
	setupErr := e.submit("stages:\n  - name: x\n    steps: []\n    bogus: 1\n")
	if setupErr.Phase != "setuperror" {
		t.Errorf("run = %+v, want setuperror", setupErr)
	}
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/runs", testAdmin, `{"config":1}`)
	e.must(http.StatusOK, "GET", "/api/v1/runs", testAdmin, nil, nil)
	e.must(http.StatusOK, "GET", "/api/v1/runs?limit=1", testAdmin, nil, nil)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "GET", "/api/v1/runs?limit=0", testAdmin, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "GET", "/api/v1/runs/nope", testAdmin, nil)
	e.fails(http.StatusConflict, errand.CodeConflict, "POST", "/api/v1/runs/"+setupErr.ID+"/cancel", testAdmin, nil)
	gated := e.submit("stages:\n  - name: gate\n    approval: {approvers: 1}\n    steps: [{name: s, commands: [\"true\"]}]\n")
	e.must(http.StatusNoContent, "POST", "/api/v1/runs/"+gated.ID+"/cancel", testAdmin, nil, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "POST", "/api/v1/runs/nope/cancel", testAdmin, nil)
	e.must(http.StatusOK, "GET", "/api/v1/tasks?run_id="+run.ID, testAdmin, nil, nil)

	// A stored pipeline, its numbered runs, their stages and steps, and
	// a restart.
	e.createPipeline(&client.PipelineSpec{Name: "api", Config: "stages:\n  - name: build\n    steps: [{name: hello, commands: [\"false\"]}]\n",
		Variables: map[string]string{"A": "1"}, Notify: []client.PipelineNotify{{Slack: &client.NotifySlack{URLSecret: "SLACK", On: []string{"failed"}}}}})
	e.fails(http.StatusConflict, errand.CodeConflict, "POST", "/api/v1/pipelines", testAdmin, &client.PipelineSpec{Name: "api", Config: "stages: []"})
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/pipelines", testAdmin, `{"name":"API"}`)
	e.must(http.StatusOK, "GET", "/api/v1/pipelines?prefix=a&limit=5", testAdmin, nil, nil)
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/api", testAdmin, nil, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "GET", "/api/v1/pipelines/nope", testAdmin, nil)
	e.must(http.StatusOK, "PUT", "/api/v1/pipelines/api", testAdmin, &client.PipelineSpec{Config: "stages:\n  - name: build\n    steps: [{name: hello, commands: [\"false\"]}]\n"}, nil)
	prun := e.startPipelineRun("api", &client.PipelineRunRequest{Ref: "main", Commit: "abc", Variables: map[string]string{"B": "2"}})
	e.waitRun(prun.ID, "finished", finished)
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/api/runs?result=failed&limit=5", testAdmin, nil, nil)
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/api/runs/1", testAdmin, nil, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "GET", "/api/v1/pipelines/api/runs/7", testAdmin, nil)
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/api/runs/1/stages?state=failed", testAdmin, nil, nil)
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/api/runs/1/stages/build", testAdmin, nil, nil)
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/api/runs/1/stages/build/steps", testAdmin, nil, nil)
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/api/runs/1/stages/build/steps/hello", testAdmin, nil, nil)
	var restarted client.Run
	e.must(http.StatusCreated, "POST", "/api/v1/runs/"+prun.ID+"/restart", testAdmin, &client.RestartRequest{From: "failed"}, &restarted)
	waiting := e.submit("stages:\n  - name: gate\n    approval: {approvers: 1}\n    steps: [{name: s, commands: [\"true\"]}]\n")
	e.fails(http.StatusConflict, errand.CodeConflict, "POST", "/api/v1/runs/"+waiting.ID+"/restart", testAdmin, nil)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/runs/"+prun.ID+"/restart", testAdmin, `{"from":"middle"}`)
	e.waitRun(restarted.ID, "finished", finished)
	e.must(http.StatusNoContent, "DELETE", "/api/v1/pipelines/api", testAdmin, nil, nil)

	// Webhooks: a hook secret, deliveries signed, unsigned, replayed,
	// ignored and oversized, the list, a redelivery and the end of the
	// previous secret.
	e.createPipeline(&client.PipelineSpec{Name: "hooked", Config: "stages:\n  - name: gate\n    approval: {approvers: 1}\n    steps: [{name: s, commands: [\"true\"]}]\n",
		Triggers: &client.PipelineTriggers{Webhook: &client.WebhookTrigger{}}})
	var hs client.HookSecret
	e.must(http.StatusCreated, "POST", "/api/v1/pipelines/hooked/hook-secret", testAdmin, &client.HookSecretRequest{PreviousValidFor: "1h"}, &hs)
	e.must(http.StatusCreated, "POST", "/api/v1/pipelines/hooked/hook-secret", testAdmin, nil, nil)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/pipelines/hooked/hook-secret", testAdmin, `{"previous_valid_for":"1y"}`)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "POST", "/api/v1/pipelines/nope/hook-secret", testAdmin, nil)
	hookBody := []byte(`{"ref":"refs/heads/main","commit":"abc","event":"push","variables":{"X":"1"}}`)
	sig := "sha256=" + hookHMAC(hs.Secret, hookBody)
	if code, _, b := e.hook("hooked", hookBody, "X-Errand-Signature-256", sig, "X-Errand-Delivery", "d-1"); code != http.StatusCreated {
		t.Fatalf("signed hook = %d %s", code, b)
	}
	if code, _, _ := e.hook("hooked", hookBody, "X-Errand-Signature-256", sig); code != http.StatusConflict {
		t.Errorf("replayed hook = %d", code)
	}
	if code, _, _ := e.hook("hooked", hookBody, "X-Errand-Signature-256", "sha256="+hookHMAC("wrong", hookBody)); code != http.StatusUnauthorized {
		t.Errorf("wrong signature = %d", code)
	}
	ping := []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`)
	if code, _, _ := e.hook("hooked", ping, "X-GitHub-Event", "ping", "X-Hub-Signature-256", "sha256="+hookHMAC(hs.Secret, ping)); code != http.StatusAccepted {
		t.Errorf("ping = %d", code)
	}
	bad := []byte(`{"ref":"main","nope":1}`)
	if code, _, _ := e.hook("hooked", bad, "X-Errand-Signature-256", "sha256="+hookHMAC(hs.Secret, bad)); code != http.StatusBadRequest {
		t.Errorf("unknown field = %d", code)
	}
	big := append([]byte(`{"ref":"`), bytes.Repeat([]byte("x"), 70<<10)...)
	if code, _, _ := e.hook("hooked", big, "X-Errand-Signature-256", "sha256="+hookHMAC(hs.Secret, big)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized hook = %d", code)
	}
	var dl client.DeliveryList
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/hooked/deliveries?limit=10&direction=hook", testAdmin, nil, &dl)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "GET", "/api/v1/pipelines/hooked/deliveries?direction=sideways", testAdmin, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "GET", "/api/v1/pipelines/nope/deliveries", testAdmin, nil)
	var accepted string
	for _, d := range dl.Deliveries {
		if d.State == "accepted" {
			accepted = d.ID
		}
	}
	e.must(http.StatusCreated, "POST", "/api/v1/pipelines/hooked/deliveries/"+accepted+"/redeliver", testAdmin, nil, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "POST", "/api/v1/pipelines/hooked/deliveries/nope/redeliver", testAdmin, nil)
	e.must(http.StatusOK, "DELETE", "/api/v1/pipelines/hooked/hook-secret/previous", testAdmin, nil, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "DELETE", "/api/v1/pipelines/nope/hook-secret/previous", testAdmin, nil)

	// Users, tokens and the audit trail.
	var alice client.User
	e.must(http.StatusCreated, "POST", "/api/v1/users", testAdmin, &client.UserRequest{Name: "alice", Role: "viewer"}, &alice)
	e.fails(http.StatusConflict, errand.CodeConflict, "POST", "/api/v1/users", testAdmin, &client.UserRequest{Name: "alice", Role: "viewer"})
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/users", testAdmin, `{"name":"bob","role":"root"}`)
	e.must(http.StatusOK, "GET", "/api/v1/users", testAdmin, nil, nil)
	e.must(http.StatusOK, "GET", "/api/v1/users/alice", testAdmin, nil, nil)
	var tok client.Token
	e.must(http.StatusCreated, "POST", "/api/v1/tokens", testAdmin, &client.TokenRequest{Name: "ci", User: "alice", ExpiresIn: "1h"}, &tok)
	e.must(http.StatusOK, "GET", "/api/v1/tokens", tok.Secret, nil, nil)
	e.fails(http.StatusForbidden, errand.CodeForbidden, "GET", "/api/v1/users", tok.Secret, nil)
	e.must(http.StatusOK, "DELETE", "/api/v1/tokens/"+tok.ID, tok.Secret, nil, nil)
	e.fails(http.StatusUnauthorized, errand.CodeUnauthorized, "GET", "/api/v1/tokens", tok.Secret, nil)
	e.must(http.StatusOK, "GET", "/api/v1/audit?limit=2", testAdmin, nil, nil)
	e.must(http.StatusOK, "DELETE", "/api/v1/users/alice", testAdmin, nil, nil)

	exerciseArtifacts(t, e, d1, only, run.ID)

	// The service routes.
	e.must(http.StatusOK, "GET", "/metrics", testAdmin, nil, nil)
	e.fails(http.StatusUnauthorized, errand.CodeUnauthorized, "GET", "/metrics", "", nil)
	e.must(http.StatusOK, "GET", "/healthz", "", nil, nil)
	e.must(http.StatusOK, "GET", "/readyz", "", nil, nil)
	e.must(http.StatusOK, "GET", "/", "", nil, nil)

	v.check(t)
	// Every operation was exercised with a success, and every error
	// status the API documents was answered at least once.
	v.mu.Lock()
	defer v.mu.Unlock()
	statuses := map[int]bool{}
	for path, item := range loadOpenAPI(t).Paths.Map() {
		for method, op := range item.Operations() {
			ok := false
			for code := range v.seen[op.OperationID] {
				statuses[code] = true
				ok = ok || code < 300
			}
			if !ok {
				t.Errorf("%s %s (%s) was never answered with a success", method, path, op.OperationID)
			}
		}
	}
	for _, code := range []int{400, 401, 403, 404, 409, 413} {
		if !statuses[code] {
			t.Errorf("no response with status %d was checked", code)
		}
	}
}

// startValidatedHostDelegate runs a real poller with the exec handlers
// whose every call to the manager goes through v.
func (e *env) startValidatedHostDelegate(v *apiValidator) {
	e.t.Helper()
	e.startHostDelegate(client.WithHTTPClient(&http.Client{Transport: v}))
}
