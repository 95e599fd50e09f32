package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/manager/store"
)

// Task ids are components of object keys: "." and ".." made sealing
// fail for ever.
func TestTaskIDsSafeAsKeyComponents(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{".", "..", ".hidden", "-rf", "_x", ":x", "a/b", "a b"} {
		eb := e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/tasks", testAdmin, &client.TaskSpec{ID: id, Type: "noop"})
		if !strings.Contains(eb.Reason, "id") {
			t.Errorf("id %q refused without naming the id: %s", id, eb.Reason)
		}
	}
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/tasks", testAdmin,
		`{"tasks":[{"id":"ok","type":"noop","depends_on":[{"task":".."}]}]}`)
	for _, id := range []string{"a", "a.b", "A1:x-y_z..", "0" + strings.Repeat("z", 127)} {
		if got := e.create(&client.TaskSpec{ID: id, Type: "noop"}); got.ID != id {
			t.Fatalf("created %q, want %q", got.ID, id)
		}
	}
}

// A log that cannot be sealed (here: the task of an older database whose
// id is "..") is skipped and retried later; it does not stop the others,
// and a metric says it fails.
func TestSealSkipsFailingLog(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	d := e.register("d", nil)
	if _, err := e.s.store.TaskCreate(ctx, store.TaskCreateParams{
		Tasks: []*errand.Task{{ID: "..", Type: "noop", MaxAttempts: 1}}, Now: e.s.now()}); err != nil {
		t.Fatal(err)
	}
	bad := e.acquire(d, "max=1").Tasks[0]
	good := e.create(&client.TaskSpec{Type: "noop"})
	goodLease := e.acquire(d, "max=1").Tasks[0].Lease.Token
	if _, err := e.s.store.LogAppend(ctx, store.LogAppendParams{TaskID: "..", DelegateID: d.id, LeaseToken: bad.Lease.Token, Lines: []string{"x"}, Now: e.s.now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.store.TaskReport(ctx, store.TaskReportParams{TaskID: "..", DelegateID: d.id, LeaseToken: bad.Lease.Token, State: errand.StateSucceeded, Now: e.s.now()}); err != nil {
		t.Fatal(err)
	}
	e.must(200, "POST", "/api/v1/tasks/"+good.ID+"/logs", d.token, &client.LogAppend{Lease: goodLease, Lines: []string{"kept"}}, nil)
	e.must(200, "POST", "/api/v1/tasks/"+good.ID+"/status", d.token, &client.StatusUpdate{Lease: goodLease, State: errand.StateSucceeded}, nil)

	for pass := 0; pass < 2; pass++ {
		n, err := e.s.logs.SealPass(ctx)
		if err != nil || n != 1-pass {
			t.Fatalf("sealPass %d = %d, %v; want the good log sealed once and no error", pass, n, err)
		}
	}
	if _, sealed, err := e.s.store.LogObjects(ctx, good.ID); err != nil || !sealed {
		t.Fatalf("the good log is not sealed (%v)", err)
	}
	_, b := e.do("GET", "/metrics", testAdmin, nil)
	for _, want := range []string{"errand_log_seal_failures_total 1\n", "errand_log_seals_failing 1\n"} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("metrics lack %q:\n%s", strings.TrimSpace(want), grepLines(string(b), "errand_log_seal"))
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// The manager masks the task's secret values in what a delegate sends:
// log lines, the error's reason and the result.
func TestManagerMasksWhatDelegatesSend(t *testing.T) {
	e := newEnv(t)
	d := e.register("d", nil)
	data := json.RawMessage(`{"commands":["deploy"],"secrets":{"DEPLOY_KEY":"hunter2-key","PEM":"first-line\nsecond-line\n","TINY":"x"}}`)
	failing := e.create(&client.TaskSpec{Type: errand.TypeExecExecute, Data: data})
	lease := e.acquire(d, "max=1").Tasks[0].Lease.Token
	e.must(200, "POST", "/api/v1/tasks/"+failing.ID+"/logs", d.token, &client.LogAppend{Lease: lease, Lines: []string{
		"key=hunter2-key", "pem first-line and second-line", "xylophone", "a\x00b",
	}}, nil)
	e.must(200, "POST", "/api/v1/tasks/"+failing.ID+"/status", d.token, &client.StatusUpdate{Lease: lease, State: errand.StateFailed,
		Error: &errand.Error{Code: "step_failed", Reason: "could not use hunter2-key"}}, nil)

	var page client.LogPage
	e.must(200, "GET", "/api/v1/tasks/"+failing.ID+"/logs", testAdmin, nil, &page)
	want := []string{"key=******", "pem ****** and ******", "xylophone", "a\x00b"}
	if fmt.Sprint(page.Lines) != fmt.Sprint(want) {
		t.Fatalf("log = %q, want %q", page.Lines, want)
	}
	if got := e.getTask(failing.ID); got.Error == nil || got.Error.Reason != "could not use ******" {
		t.Fatalf("error = %+v", got.Error)
	}

	succeeding := e.create(&client.TaskSpec{Type: errand.TypeExecExecute, Data: data})
	lease = e.acquire(d, "max=1").Tasks[0].Lease.Token
	e.must(200, "POST", "/api/v1/tasks/"+succeeding.ID+"/status", d.token, &client.StatusUpdate{Lease: lease, State: errand.StateSucceeded,
		Result: json.RawMessage(`{"out":"hunter2-key","n":12345678901234567890,"list":[{"hunter2-key":true}]}`)}, nil)
	got := e.getTask(succeeding.ID)
	if strings.Contains(string(got.Result), "hunter2") || !strings.Contains(string(got.Result), `"out":"******"`) ||
		!strings.Contains(string(got.Result), "12345678901234567890") || !strings.Contains(string(got.Result), `{"******":true}`) {
		t.Fatalf("result = %s", got.Result)
	}
}

// A pipeline secret too short to be masked is refused when the run is
// created, by name and never by value.
func TestRunRefusesShortSecret(t *testing.T) {
	values := map[string]string{"LONG_ENOUGH": "abcd", "SHORT": "q7z"}
	e := newEnv(t, func(c *Config) {
		c.Secrets = scheduler.SecretFunc(func(name string) (string, bool) { v, ok := values[name]; return v, ok })
	})
	run := e.submit("stages:\n  - name: s\n    secrets: [LONG_ENOUGH, SHORT]\n    steps:\n      - name: x\n        commands: [echo]\n")
	if run.Phase != "setuperror" || len(run.SetupErrors) != 1 {
		t.Fatalf("run = %s %+v, want a setup error", run.Phase, run.SetupErrors)
	}
	se := run.SetupErrors[0]
	if se.Path != "stages[0].secrets[1]" || !strings.Contains(se.Message, "SHORT") || strings.Contains(se.Message, "q7z") {
		t.Fatalf("setup error = %+v", se)
	}
	values["SHORT"] = "long enough"
	if run := e.submit("stages:\n  - name: s\n    secrets: [LONG_ENOUGH, SHORT]\n    steps:\n      - name: x\n        commands: [echo]\n"); run.Phase == "setuperror" {
		t.Fatalf("run with long secrets = %+v", run.SetupErrors)
	}
}
