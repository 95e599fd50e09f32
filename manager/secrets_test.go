package manager

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/tasks"
)

// Secrets in task data reach the delegate that acquires the task, and no
// user-side answer.
func TestSecretsMaskedOnUserSide(t *testing.T) {
	e := newEnv(t)
	d := e.register("d", nil)
	data := json.RawMessage(`{"commands":["deploy"],"secrets":{"DEPLOY_KEY":"hunter2","API":"xyzzy"}}`)
	created := e.create(&client.TaskSpec{Type: errand.TypeExecExecute, Data: data})

	var got errand.Task
	e.must(http.StatusOK, "GET", "/api/v1/tasks/"+created.ID, testAdmin, nil, &got)
	var list client.TaskList
	e.must(http.StatusOK, "GET", "/api/v1/tasks", testAdmin, nil, &list)
	for _, shown := range []json.RawMessage{created.Data, got.Data, list.Items[0].Data} {
		if strings.Contains(string(shown), "hunter2") || strings.Contains(string(shown), "xyzzy") {
			t.Fatalf("user side shows a secret: %s", shown)
		}
		var v struct {
			Commands []string          `json:"commands"`
			Secrets  map[string]string `json:"secrets"`
		}
		if err := json.Unmarshal(shown, &v); err != nil || v.Secrets["DEPLOY_KEY"] != "******" || v.Commands[0] != "deploy" {
			t.Fatalf("masked data = %s (%v)", shown, err)
		}
	}

	acq := e.acquire(d, "max=1")
	if len(acq.Tasks) != 1 || !strings.Contains(string(acq.Tasks[0].Data), `"DEPLOY_KEY":"hunter2"`) {
		t.Fatalf("the acquiring delegate gets %+v", acq.Tasks)
	}
}

// A pipeline's secrets are stored by name: the task and the run's plan
// hold no value, the delegate that leases a step gets the values, and a
// secret gone from the manager's source by then fails the step with
// secret_missing instead of handing it out without it.
func TestSecretsByNameInjectedAtLease(t *testing.T) {
	values := map[string]string{"DEPLOY_KEY": "hunter2-named"}
	e := newEnv(t, func(c *Config) {
		c.Secrets = scheduler.SecretFunc(func(name string) (string, bool) { v, ok := values[name]; return v, ok })
	})
	d := e.register("d", &client.RegisterRequest{Name: "d", Capacity: 4})
	config := "stages:\n  - name: s\n    secrets: [DEPLOY_KEY]\n    steps:\n      - name: x\n        commands: [echo]\n"
	run := e.submit(config)
	stored, err := e.s.store.RunGet(context.Background(), run.ID)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(stored.Plan), "hunter2") || !strings.Contains(string(stored.Plan), `secret_names`) {
		t.Fatalf("stored plan %s", stored.Plan)
	}
	init := e.acquire(d, "max=1").Tasks[0]
	e.must(200, "POST", "/api/v1/tasks/"+init.ID+"/status", d.token, &client.StatusUpdate{Lease: init.Lease.Token, State: errand.StateSucceeded}, nil)
	step := e.acquire(d, "max=1").Tasks[0]
	var data tasks.ExecuteData
	if err := httphelper.Unmarshal(step.Data, &data); err != nil || data.Secrets["DEPLOY_KEY"] != "hunter2-named" {
		t.Fatalf("leased step data %s (%v)", step.Data, err)
	}
	if got, err := e.s.store.TaskGet(context.Background(), step.ID); err != nil || strings.Contains(string(got.Data), "hunter2") {
		t.Fatalf("stored step data %s (%v)", got.Data, err)
	}

	// The source loses the secret before the next run's step is leased.
	run2 := e.submit(config)
	init = e.acquire(d, "max=1").Tasks[0]
	e.must(200, "POST", "/api/v1/tasks/"+init.ID+"/status", d.token, &client.StatusUpdate{Lease: init.Lease.Token, State: errand.StateSucceeded}, nil)
	delete(values, "DEPLOY_KEY")
	for _, t2 := range e.acquire(d, "max=2").Tasks {
		if t2.Type == errand.TypeExecExecute {
			t.Fatalf("a step whose secret is missing was handed out: %s", t2.Data)
		}
	}
	got := e.getTask(stage(e.getRun(run2.ID), "s").Steps[0].TaskID)
	if got.State != errand.StateFailed || got.Error == nil || got.Error.Code != errand.CodeSecretMissing ||
		!strings.Contains(got.Error.Reason, "DEPLOY_KEY") {
		t.Fatalf("step %s %+v", got.State, got.Error)
	}
}
