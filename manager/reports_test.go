package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/store"
)

// A batch of reports is answered per report: applied, unchanged for a
// retry, refused with the code the single call would have returned; a
// refused report leaves the others applied.
func TestReportBatchAnswersEachReport(t *testing.T) {
	e := newEnv(t)
	d := e.register("d1", nil)
	other := e.register("d2", nil)
	for i := range 3 {
		e.create(&client.TaskSpec{ID: fmt.Sprintf("t%d", i), Type: "x"})
	}
	leased := map[string]string{}
	for _, tk := range e.acquire(d, "max=3").Tasks {
		leased[tk.ID] = tk.Lease.Token
	}
	mine := e.create(&client.TaskSpec{ID: "theirs", Type: "x"})
	theirs := e.acquire(other, "max=1").Tasks[0]
	batch := `{"reports":[
		{"task_id":"t0","lease":"` + leased["t0"] + `","state":"running"},
		{"task_id":"t1","lease":"stale","state":"succeeded"},
		{"task_id":"t0","lease":"` + leased["t0"] + `","state":"succeeded","result":{"ok":true}},
		{"task_id":"t2","lease":"` + leased["t2"] + `","state":"failed","error":{"code":"exit_code","reason":"exit 1"}},
		{"task_id":"t2","lease":"` + leased["t2"] + `","state":"failed","error":{"code":"exit_code","reason":"exit 1"}},
		{"task_id":"` + mine.ID + `","lease":"` + theirs.Lease.Token + `","state":"running"},
		{"task_id":"t1","lease":"` + leased["t1"] + `","state":"queued"},
		{"task_id":"","lease":"x","state":"running"},
		null,
		{"task_id":"nope","lease":"x","state":"running"}
	]}`
	var res client.ReportResults
	e.must(http.StatusOK, "POST", "/api/v1/delegates/"+d.id+"/reports", d.token, batch, &res)
	want := []struct{ status, state, code string }{
		{client.ReportApplied, "running", ""},
		{client.ReportRefused, "", errand.CodeLeaseLost},
		{client.ReportApplied, "succeeded", ""},
		{client.ReportApplied, "failed", ""},
		{client.ReportUnchanged, "failed", ""},
		{client.ReportRefused, "", errand.CodeForbidden},
		{client.ReportRefused, "", errand.CodeInvalid},
		{client.ReportRefused, "", errand.CodeInvalid},
		{client.ReportRefused, "", errand.CodeInvalid},
		{client.ReportRefused, "", errand.CodeNotFound},
	}
	if res.Kind != errand.KindReports || len(res.Results) != len(want) {
		t.Fatalf("answer = %+v, want %d results", res, len(want))
	}
	for i, w := range want {
		r := res.Results[i]
		code := ""
		if r.Error != nil {
			code = r.Error.Code
			if strings.TrimSpace(r.Error.Reason) == "" {
				t.Errorf("result %d refused without a reason", i)
			}
		}
		if r.Status != w.status || string(r.State) != w.state || code != w.code {
			t.Errorf("result %d = %+v (error %v), want %s %s %s", i, r, r.Error, w.status, w.state, w.code)
		}
	}
	if got := e.getTask("t0"); got.State != errand.StateSucceeded || string(got.Result) != `{"ok":true}` || got.StartedAt == nil {
		t.Errorf("t0 = %s result %s started %v", got.State, got.Result, got.StartedAt)
	}
	if got := e.getTask("t1"); got.State != errand.StateLeased {
		t.Errorf("t1 = %s; its refused reports moved it", got.State)
	}
	if got := e.getTask(mine.ID); got.State != errand.StateLeased || got.DelegateID != other.id {
		t.Errorf("another delegate's task = %s on %s", got.State, got.DelegateID)
	}

}

// A batch of more reports than one call may carry is refused whole,
// naming the limit; so is a body that is not a batch.
func TestReportBatchBounds(t *testing.T) {
	e := newEnv(t)
	d := e.register("d1", nil)
	var b strings.Builder
	b.WriteString(`{"reports":[`)
	for i := range client.MaxReports + 1 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"task_id":"t","lease":"l","state":"running"}`)
	}
	b.WriteString(`]}`)
	eb := e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/delegates/"+d.id+"/reports", d.token, b.String())
	if !strings.Contains(eb.Reason, fmt.Sprint(client.MaxReports)) {
		t.Errorf("reason %q does not name the limit", eb.Reason)
	}
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/delegates/"+d.id+"/reports", d.token, `{"reports":[],"extra":1}`)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/delegates/"+d.id+"/acquire?max=1", d.token, `{"reports":{}}`)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/delegates/"+d.id+"/acquire?max=1", d.token, b.String())
}

// An acquire may carry the reports of the tasks that just ended: they
// are applied, answered in the acquire's answer, and the acquire does
// not wait when no task is ready.
func TestAcquireCarriesReports(t *testing.T) {
	e := newEnv(t)
	d := e.register("d1", nil)
	e.create(&client.TaskSpec{ID: "a", Type: "x"})
	e.create(&client.TaskSpec{ID: "b", Type: "x", DependsOn: []errand.Dependency{{Task: "a"}}})
	a := e.acquire(d, "max=1").Tasks[0]
	var got client.AcquireResponse
	body := &client.ReportBatch{Reports: []*client.Report{
		{TaskID: "a", Lease: a.Lease.Token, State: errand.StateRunning},
		{TaskID: "a", Lease: a.Lease.Token, State: errand.StateSucceeded},
	}}
	// Its dependent is queued in the same transaction, and leased by the
	// same acquire.
	e.must(http.StatusOK, "POST", "/api/v1/delegates/"+d.id+"/acquire?max=1&wait=60s", d.token, body, &got)
	if len(got.Reports) != 2 || got.Reports[0].Status != client.ReportApplied || got.Reports[1].State != errand.StateSucceeded {
		t.Fatalf("carried reports answered %+v", got.Reports)
	}
	if len(got.Tasks) != 1 || got.Tasks[0].ID != "b" {
		t.Fatalf("acquire leased %+v, want b", got.Tasks)
	}
	b := got.Tasks[0]
	// Nothing is left to lease: the answer comes at once, not after the
	// 60s wait (the client gives up long before).
	e.http.Timeout = 30 * time.Second
	body = &client.ReportBatch{Reports: []*client.Report{{TaskID: "b", Lease: b.Lease.Token, State: errand.StateSucceeded}}}
	e.must(http.StatusOK, "POST", "/api/v1/delegates/"+d.id+"/acquire?max=1&wait=60s", d.token, body, &got)
	if len(got.Tasks) != 0 || len(got.Reports) != 1 || got.Reports[0].Status != client.ReportApplied {
		t.Fatalf("second acquire = %+v", got)
	}
	if st := e.getTask("b").State; st != errand.StateSucceeded {
		t.Fatalf("b = %s", st)
	}
}

// FuzzDecodeReportBatch decodes arbitrary bodies as a batch of reports:
// never a panic; a batch accepted holds at most client.MaxReports
// reports, each well-formed or refused on its own.
func FuzzDecodeReportBatch(f *testing.F) {
	for _, s := range []string{
		`{"reports":[]}`,
		`{"reports":[{"task_id":"t","lease":"l","state":"running"}]}`,
		`{"reports":[{"task_id":"t","lease":"l","state":"succeeded","result":{"a":[1,2]}},null,{}]}`,
		`{"reports":[{"task_id":"t","lease":"l","state":"failed","error":{"code":"exit_code","reason":"x"}}]}`,
		`{"reports":[{"task_id":"` + strings.Repeat("x", 200) + `","lease":"","state":"queued"}]}`,
		`{"reports":null}`, `null`, `[]`, `{"reports":[1,"x",true]}`, `{"reports":[{"task_id":"t","extra":1}]}`,
		nested(80),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		reports, refused, err := decodeReportBatch(data)
		if err != nil {
			if errand.ErrorCode(err) != errand.CodeInvalid {
				t.Fatalf("decode %q: %v, want an invalid error", data, err)
			}
			return
		}
		if len(reports) > client.MaxReports || len(refused) != len(reports) {
			t.Fatalf("decode %q: %d reports, %d verdicts", data, len(reports), len(refused))
		}
		for i, r := range reports {
			if refused[i] != nil {
				if errand.ErrorCode(refused[i]) != errand.CodeInvalid {
					t.Fatalf("report %d refused with %v", i, refused[i])
				}
				continue
			}
			if _, ok := errand.EventForReport(r.State); !ok || r.Lease == "" || !validID(r.TaskID) {
				t.Fatalf("report %d accepted: %+v", i, r)
			}
		}
	})
}

// getCountingStore counts TaskGet.
type getCountingStore struct {
	store.Store
	gets atomic.Int64
}

func (c *getCountingStore) TaskGet(ctx context.Context, id string) (*errand.Task, error) {
	c.gets.Add(1)
	return c.Store.TaskGet(ctx, id)
}

// The reports of a task whose data holds and names no secret read no
// task to learn what to mask; those of one with a secret still mask it.
func TestReportsOfTaskWithoutSecretsReadNoTask(t *testing.T) {
	var c *getCountingStore
	e := newEnvOver(t, func(st store.Store) store.Store {
		c = &getCountingStore{Store: st}
		return c
	})
	d := e.register("d1", nil)
	e.create(&client.TaskSpec{ID: "plain", Type: "x", Data: json.RawMessage(`{"n":1}`)})
	e.create(&client.TaskSpec{ID: "secret", Type: "x", Data: json.RawMessage(`{"secrets":{"K":"hunter2-value"}}`)})
	leased := e.acquire(d, "max=2").Tasks
	if len(leased) != 2 {
		t.Fatalf("acquired %d tasks", len(leased))
	}
	before := c.gets.Load()
	var reports []*client.Report
	for _, tk := range leased {
		reports = append(reports, &client.Report{TaskID: tk.ID, Lease: tk.Lease.Token, State: errand.StateSucceeded,
			Result: json.RawMessage(`{"out":"hunter2-value"}`)})
	}
	var res client.ReportResults
	e.must(http.StatusOK, "POST", "/api/v1/delegates/"+d.id+"/reports", d.token, &client.ReportBatch{Reports: reports}, &res)
	for _, r := range res.Results {
		if r.Status != client.ReportApplied {
			t.Fatalf("results %+v", res.Results)
		}
	}
	if got := c.gets.Load() - before; got != 1 {
		t.Errorf("the reports read %d tasks, want 1 (the one with a secret)", got)
	}
	if got := string(e.getTask("secret").Result); strings.Contains(got, "hunter2-value") {
		t.Errorf("the secret's value was stored unmasked: %s", got)
	}
	if got := string(e.getTask("plain").Result); got != `{"out":"hunter2-value"}` {
		t.Errorf("the plain task's result = %s", got)
	}
}
