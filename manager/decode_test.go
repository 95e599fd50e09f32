package manager

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
)

// countTasks returns how many tasks the server lists.
func (e *env) countTasks() int {
	e.t.Helper()
	var list client.TaskList
	e.must(http.StatusOK, "GET", "/api/v1/tasks?limit=1000", testAdmin, nil, &list)
	return len(list.Items)
}

// A body with anything after its JSON value is refused on every route
// that reads one, even when what follows starts with ']' or '}', which
// encoding/json's More does not see.
func TestTrailingDataRefusedOnEveryRoute(t *testing.T) {
	e := newEnv(t)
	d := e.register("d1", nil)
	task := e.create(&client.TaskSpec{Type: "x"})
	a := e.acquire(d, "max=1")
	if len(a.Tasks) != 1 {
		t.Fatalf("acquired %d tasks", len(a.Tasks))
	}
	lease := a.Tasks[0].Lease.Token
	run := e.submit("stages:\n  - name: s\n    approval: {approvers: 1}\n    steps:\n      - name: x\n        commands: [\"true\"]\n")
	before := e.countTasks()
	routes := []struct {
		path, token, body string
	}{
		{"/api/v1/tasks", testAdmin, `{"type":"x"}`},
		{"/api/v1/tasks", testAdmin, `{"tasks":[{"type":"x"}]}`},
		{"/api/v1/delegates", testReg, `{"name":"d2"}`},
		{"/api/v1/delegates/" + d.id + "/heartbeat", d.token, `{"running":[]}`},
		{"/api/v1/tasks/" + task.ID + "/logs", d.token, `{"lease":"` + lease + `","offset":0,"lines":["a"]}`},
		{"/api/v1/tasks/" + task.ID + "/status", d.token, `{"lease":"` + lease + `","state":"running"}`},
		{"/api/v1/runs", testAdmin, `{"config":"stages: []","filename":"config.yml"}`},
		{"/api/v1/runs/" + run.ID + "/stages/s/approve", testAdmin, `{"approver":"a"}`},
	}
	for _, r := range routes {
		for _, tail := range []string{"]not json", "}", " ]", "\n}}", "x", `{"name":"again"}`} {
			eb := e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", r.path, r.token, r.body+tail)
			if !strings.Contains(eb.Reason, "more than one JSON value") {
				t.Errorf("POST %s with %q after the body: reason %q", r.path, tail, eb.Reason)
			}
		}
	}
	// What was refused left nothing behind.
	if n := e.countTasks(); n != before {
		t.Errorf("%d tasks after refused creations, want %d", n, before)
	}
	if got := e.getTask(task.ID); got.State != errand.StateLeased || got.LogLines != 0 {
		t.Errorf("task after refused reports: %s with %d log lines", got.State, got.LogLines)
	}
	// The bodies themselves are fine.
	e.must(http.StatusCreated, "POST", "/api/v1/tasks", testAdmin, `{"type":"x"}`+" \r\n\t", nil)
}

// The reserved-label check of registration cannot be bypassed by a body
// that the label probe cannot read but the decoder accepted.
func TestRegistrationReservedLabelWithTrailingData(t *testing.T) {
	e := newEnv(t)
	for _, body := range []string{
		`{"name":"evil","labels":{"` + InternalLabelPrefix + "internal" + `":"approval"}}}`,
		`{"name":"evil","labels":{"` + InternalLabelPrefix + "internal" + `":"approval"}}]not json`,
		`{"name":"evil","labels":{"` + InternalLabelPrefix + "internal" + `":"approval"}}`,
	} {
		e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/delegates", testReg, body)
	}
	var list client.DelegateList
	e.must(http.StatusOK, "GET", "/api/v1/delegates", testAdmin, nil, &list)
	if len(list.Items) != 0 {
		t.Errorf("%d delegates registered, want none", len(list.Items))
	}
}

func nested(depth int) string {
	return strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
}

// Task data, results and every other body nested deeper than
// httphelper.MaxJSONDepth are refused, with the limit named, before they
// are stored: 9,998 levels used to be stored and then could not be read
// back by the delegate inside its acquire answer.
func TestDeepJSONRefused(t *testing.T) {
	e := newEnv(t)
	d := e.register("d1", nil)
	limit := fmt.Sprintf("deeper than %d levels", httphelper.MaxJSONDepth)
	for _, depth := range []int{9998, httphelper.MaxJSONDepth} {
		eb := e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/tasks", testAdmin, `{"type":"x","data":`+nested(depth)+`}`)
		if !strings.Contains(eb.Reason, limit) {
			t.Errorf("data %d deep: reason %q, want %q", depth, eb.Reason, limit)
		}
	}
	if n := e.countTasks(); n != 0 {
		t.Fatalf("%d tasks stored", n)
	}
	// Data as deep as the limit allows reaches the delegate.
	e.must(http.StatusCreated, "POST", "/api/v1/tasks", testAdmin, `{"type":"x","data":`+nested(httphelper.MaxJSONDepth-2)+`}`, nil)
	a := e.acquire(d, "max=1")
	if len(a.Tasks) != 1 {
		t.Fatalf("acquired %d tasks", len(a.Tasks))
	}
	id, lease := a.Tasks[0].ID, a.Tasks[0].Lease.Token
	eb := e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/tasks/"+id+"/status", d.token,
		`{"lease":"`+lease+`","state":"succeeded","result":`+nested(9998)+`}`)
	if !strings.Contains(eb.Reason, limit) {
		t.Errorf("result: reason %q", eb.Reason)
	}
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/delegates", testReg, `{"name":"x","labels":`+nested(200)+`}`)
}

// A run needs a config: a null or empty body is refused instead of
// creating a run that can only fail.
func TestRunWithoutConfigRefused(t *testing.T) {
	e := newEnv(t)
	for _, body := range []string{`null`, `{}`, `{"filename":"config.yml"}`, `{"config":"  \n"}`} {
		eb := e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/runs", testAdmin, body)
		if !strings.Contains(eb.Reason, "config: required") {
			t.Errorf("%s: reason %q", body, eb.Reason)
		}
	}
	var list client.RunList
	e.must(http.StatusOK, "GET", "/api/v1/runs", testAdmin, nil, &list)
	if len(list.Items) != 0 {
		t.Errorf("%d runs created", len(list.Items))
	}
}

// Labels with an empty key, a key holding '=' or a value holding a line
// break, and names, types, groups and ids holding NUL or invalid UTF-8,
// are refused at registration and at task creation instead of being
// stored changed.
func TestLabelsAndTextRefused(t *testing.T) {
	e := newEnv(t)
	registrations := map[string]string{
		"empty label key":          `{"name":"d","labels":{"":"x"}}`,
		"label key with =":         `{"name":"d","labels":{"a=b":"x"}}`,
		"label value with newline": `{"name":"d","labels":{"a":"x\ny"}}`,
		"label value with NUL":     `{"name":"d","labels":{"a":"x\u0000"}}`,
		"name with NUL":            `{"name":"d\u0000x"}`,
		"name not UTF-8":           "{\"name\":\"d\xff\"}",
		"name with lone surrogate": `{"name":"d\ud800"}`,
		"group with newline":       `{"name":"d","group":"g\n"}`,
		"task type with NUL":       `{"name":"d","task_types":["x\u0000"]}`,
		"arch with NUL":            `{"name":"d","archs":["amd64\u0000"]}`,
	}
	for what, body := range registrations {
		eb := e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/delegates", testReg, body)
		if !strings.Contains(eb.Reason, "delegate registration is invalid") {
			t.Errorf("%s: reason %q", what, eb.Reason)
		}
	}
	tasks := map[string]string{
		"selector empty label key":   `{"type":"x","selector":{"labels":{"":"x"}}}`,
		"selector label key with =":  `{"type":"x","selector":{"labels":{"a=b":"x"}}}`,
		"selector value with CR":     `{"type":"x","selector":{"labels":{"a":"x\r"}}}`,
		"type with NUL":              `{"type":"x\u0000"}`,
		"type not UTF-8":             "{\"type\":\"x\xc3\x28\"}",
		"selector group with NUL":    `{"type":"x","selector":{"group":"g\u0000"}}`,
		"id with NUL":                `{"type":"x","id":"a\u0000"}`,
		"batch selector with =":      `{"tasks":[{"type":"x","selector":{"labels":{"=":"x"}}}]}`,
		"dependency id not UTF-8":    "{\"type\":\"x\",\"depends_on\":[{\"task\":\"a\xff\"}]}",
		"selector arch with newline": `{"type":"x","selector":{"arch":"amd64\n"}}`,
	}
	for what, body := range tasks {
		eb := e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/tasks", testAdmin, body)
		if !strings.Contains(eb.Reason, "task is invalid") {
			t.Errorf("%s: reason %q", what, eb.Reason)
		}
	}
	if n := e.countTasks(); n != 0 {
		t.Errorf("%d tasks stored", n)
	}
	// Labels and names in other scripts are text like any other.
	d := e.register("délégué-✓", &client.RegisterRequest{Labels: map[string]string{"région": "île-de-france", "os": ""}})
	e.create(&client.TaskSpec{Type: "x", Selector: errand.Selector{Labels: map[string]string{"région": "île-de-france"}}})
	if a := e.acquire(d, "max=1"); len(a.Tasks) != 1 {
		t.Errorf("the delegate with unicode labels acquired %d tasks", len(a.Tasks))
	}
}
