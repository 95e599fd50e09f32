package manager

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

func TestRegister(t *testing.T) {
	e := newEnv(t)
	var reg client.Registration
	e.must(http.StatusCreated, "POST", "/api/v1/delegates", testReg,
		&client.RegisterRequest{Name: "builder", Labels: map[string]string{"os": "linux"}, Capacity: 2}, &reg)
	if reg.ID == "" || !strings.HasPrefix(reg.Token, reg.ID+".") || reg.Kind != errand.KindDelegate ||
		reg.Href != "/api/v1/delegates/"+reg.ID || reg.HeartbeatInterval != errand.Duration(DefaultHeartbeatInterval) {
		t.Fatalf("registration = %+v", reg)
	}
	var d errand.Delegate
	e.must(http.StatusOK, "GET", "/api/v1/delegates/"+reg.ID, testAdmin, nil, &d)
	if d.Name != "builder" || d.Capacity != 2 || d.Labels["os"] != "linux" || d.State != errand.DelegateActive {
		t.Fatalf("stored delegate = %+v", d)
	}
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/delegates", testReg, &client.RegisterRequest{Capacity: -1})
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	a := e.register("a", nil)
	b := e.register("b", nil)
	cases := []struct {
		name, method, path, token string
		status                    int
		code                      string
	}{
		{"no token", "GET", "/api/v1/tasks", "", 401, errand.CodeUnauthorized},
		{"wrong token", "GET", "/api/v1/tasks", "not-the-admin-token", 401, errand.CodeUnauthorized},
		{"registration token as admin", "GET", "/api/v1/tasks", testReg, 401, errand.CodeUnauthorized},
		{"delegate token as admin", "GET", "/api/v1/tasks", a.token, 401, errand.CodeUnauthorized},
		{"admin token to register", "POST", "/api/v1/delegates", testAdmin, 401, errand.CodeUnauthorized},
		{"forged delegate token", "POST", "/api/v1/delegates/" + a.id + "/heartbeat", a.id + ".forged", 401, errand.CodeUnauthorized},
		{"no token on metrics", "GET", "/metrics", "", 401, errand.CodeUnauthorized},
		{"heartbeat of another delegate", "POST", "/api/v1/delegates/" + b.id + "/heartbeat", a.token, 403, errand.CodeForbidden},
		{"acquire for another delegate", "POST", "/api/v1/delegates/" + b.id + "/acquire", a.token, 403, errand.CodeForbidden},
		{"deregister another delegate", "DELETE", "/api/v1/delegates/" + b.id, a.token, 403, errand.CodeForbidden},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			e.fails(c.status, c.code, c.method, c.path, c.token, nil)
		})
	}
	e.t = t
	// The delegate's own token and the admin token both deregister.
	e.must(http.StatusNoContent, "DELETE", "/api/v1/delegates/"+a.id, a.token, nil, nil)
	e.fails(401, errand.CodeUnauthorized, "POST", "/api/v1/delegates/"+a.id+"/heartbeat", a.token, nil)
	e.must(http.StatusNoContent, "DELETE", "/api/v1/delegates/"+b.id, testAdmin, nil, nil)
	e.fails(404, errand.CodeNotFound, "GET", "/api/v1/delegates/"+b.id, testAdmin, nil)
}

func TestAcquireWakesOnCreate(t *testing.T) {
	e := newEnv(t)
	d := e.register("d", &client.RegisterRequest{TaskTypes: []string{"noop"}})
	got := make(chan *client.AcquireResponse, 1)
	go func() { got <- e.acquire(d, "wait=30s&max=4") }()
	e.waitAcquirers(1)
	// A task the delegate does not serve must not end the wait.
	e.create(&client.TaskSpec{Type: "other"})
	select {
	case a := <-got:
		t.Fatalf("acquire returned for a task of another type: %+v", a)
	case <-time.After(50 * time.Millisecond):
	}
	start := time.Now()
	task := e.create(&client.TaskSpec{Type: "noop", Data: json.RawMessage(`{"n":1}`)})
	select {
	case a := <-got:
		if elapsed := time.Since(start); elapsed > time.Second {
			t.Fatalf("acquire returned %v after the create", elapsed)
		}
		if len(a.Tasks) != 1 || a.Tasks[0].ID != task.ID || a.Tasks[0].Lease == nil || a.Tasks[0].Lease.Token == "" ||
			a.Tasks[0].State != errand.StateLeased || a.Tasks[0].Href != "/api/v1/tasks/"+task.ID {
			t.Fatalf("acquire = %+v", a.Tasks)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("acquire did not wake on the create")
	}
	// wait=0 returns at once with nothing.
	if a := e.acquire(d, "max=4"); len(a.Tasks) != 0 || a.Kind != errand.KindAcquire {
		t.Fatalf("second acquire = %+v", a)
	}
}

func TestStatusAndLogsFencedByLease(t *testing.T) {
	e := newEnv(t)
	a := e.register("a", nil)
	b := e.register("b", nil)
	task := e.create(&client.TaskSpec{Type: "noop"})
	acq := e.acquire(a, "max=1")
	if len(acq.Tasks) != 1 {
		t.Fatalf("acquire = %+v", acq)
	}
	lease := acq.Tasks[0].Lease.Token
	status := "/api/v1/tasks/" + task.ID + "/status"
	logs := "/api/v1/tasks/" + task.ID + "/logs"

	e.fails(409, errand.CodeLeaseLost, "POST", status, a.token, &client.StatusUpdate{Lease: "stale", State: errand.StateRunning})
	e.fails(403, errand.CodeForbidden, "POST", status, b.token, &client.StatusUpdate{Lease: lease, State: errand.StateRunning})
	e.fails(400, errand.CodeInvalid, "POST", status, a.token, &client.StatusUpdate{Lease: lease, State: errand.StateQueued})
	var running errand.Task
	e.must(200, "POST", status, a.token, &client.StatusUpdate{Lease: lease, State: errand.StateRunning}, &running)
	if running.State != errand.StateRunning {
		t.Fatalf("state = %s", running.State)
	}

	e.fails(409, errand.CodeLeaseLost, "POST", logs, a.token, &client.LogAppend{Lease: "stale", Lines: []string{"x"}})
	var res client.LogAppendResult
	e.must(200, "POST", logs, a.token, &client.LogAppend{Lease: lease, Offset: 0, Lines: []string{"one", "two", "three\n"}}, &res)
	if res.Next != 3 {
		t.Fatalf("next = %d, want 3", res.Next)
	}
	// A retry of the same append stores nothing twice.
	e.must(200, "POST", logs, a.token, &client.LogAppend{Lease: lease, Offset: 0, Lines: []string{"one", "two", "three"}}, &res)
	if res.Next != 3 {
		t.Fatalf("next after retry = %d, want 3", res.Next)
	}
	eb := e.fails(409, errand.CodeLogOffset, "POST", logs, a.token, &client.LogAppend{Lease: lease, Offset: 5, Lines: []string{"gap"}})
	if !strings.Contains(eb.Reason, "expected offset 3") {
		t.Fatalf("gap reason %q does not give the expected offset", eb.Reason)
	}
	e.fails(400, errand.CodeInvalid, "POST", logs, a.token, &client.LogAppend{Lease: lease, Offset: 3, Lines: []string{"two\nlines"}})

	var page client.LogPage
	e.must(200, "GET", logs+"?offset=1", testAdmin, nil, &page)
	if fmt.Sprint(page.Lines) != "[two three]" || page.Next != 3 || page.Complete {
		t.Fatalf("page = %+v", page)
	}

	var done errand.Task
	e.must(200, "POST", status, a.token, &client.StatusUpdate{Lease: lease, State: errand.StateSucceeded, Result: json.RawMessage(`{"ok":true}`)}, &done)
	if done.State != errand.StateSucceeded || string(done.Result) != `{"ok":true}` {
		t.Fatalf("task = %+v", done)
	}
	code, body := e.do("POST", status, a.token, &client.StatusUpdate{Lease: lease, State: errand.StateFailed})
	if code != 409 {
		t.Fatalf("report on an ended task = %d %s, want 409", code, body)
	}
	e.fails(409, errand.CodeLeaseLost, "POST", logs, a.token, &client.LogAppend{Lease: lease, Offset: 3, Lines: []string{"late"}})
	e.must(200, "GET", logs, testAdmin, nil, &page)
	if !page.Complete || page.Next != 3 {
		t.Fatalf("page of an ended task = %+v", page)
	}
}

// follow opens a follow stream and returns its lines on a channel that is
// closed when the stream ends.
func (e *env) follow(taskID string, offset int) <-chan string {
	e.t.Helper()
	req, err := http.NewRequest("GET", fmt.Sprintf("%s/api/v1/tasks/%s/logs?follow=true&offset=%d", e.ts.URL, taskID, offset), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdmin)
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		e.t.Fatalf("follow = %d %s", resp.StatusCode, b)
	}
	out := make(chan string, 10000)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			out <- sc.Text()
		}
	}()
	return out
}

func recv(t *testing.T, ch <-chan string) (string, bool) {
	t.Helper()
	select {
	case l, ok := <-ch:
		return l, ok
	case <-time.After(5 * time.Second):
		t.Fatal("no line within 5s")
		return "", false
	}
}

func TestLogFollow(t *testing.T) {
	e := newEnv(t)
	d := e.register("d", nil)
	task := e.create(&client.TaskSpec{Type: "noop"})
	lease := e.acquire(d, "max=1").Tasks[0].Lease.Token
	logs := "/api/v1/tasks/" + task.ID + "/logs"
	e.must(200, "POST", logs, d.token, &client.LogAppend{Lease: lease, Lines: []string{"before"}}, nil)

	lines := e.follow(task.ID, 0)
	if l, _ := recv(t, lines); l != "before" {
		t.Fatalf("first line = %q", l)
	}
	for i := 1; i <= 3; i++ {
		e.must(200, "POST", logs, d.token, &client.LogAppend{Lease: lease, Offset: int64(i), Lines: []string{fmt.Sprint("live ", i)}}, nil)
		// Each line arrives before the next is written: the stream is live.
		if l, _ := recv(t, lines); l != fmt.Sprint("live ", i) {
			t.Fatalf("line %d = %q", i, l)
		}
	}
	e.must(200, "POST", logs, d.token, &client.LogAppend{Lease: lease, Offset: 4, Lines: []string{"last"}}, nil)
	e.must(200, "POST", "/api/v1/tasks/"+task.ID+"/status", d.token, &client.StatusUpdate{Lease: lease, State: errand.StateFailed,
		Error: &errand.Error{Code: errand.CodeExitCode, Reason: "exit 1"}}, nil)
	if l, _ := recv(t, lines); l != "last" {
		t.Fatalf("last line = %q", l)
	}
	if l, ok := recv(t, lines); ok {
		t.Fatalf("stream went on after the task ended: %q", l)
	}
	// Following an ended task from an offset gives the rest and ends.
	var rest []string
	for l := range e.follow(task.ID, 3) {
		rest = append(rest, l)
	}
	if fmt.Sprint(rest) != "[live 3 last]" {
		t.Fatalf("follow from 3 = %q", rest)
	}
}

func TestSealIntoObjectStorage(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LogObjectSize = 1024 })
	d := e.register("d", nil)
	task := e.create(&client.TaskSpec{Type: "noop"})
	lease := e.acquire(d, "max=1").Tasks[0].Lease.Token
	var want []string
	for i := range 400 {
		want = append(want, fmt.Sprintf("line %d %s", i, strings.Repeat("x", i%37)))
	}
	for off := 0; off < len(want); off += 150 {
		end := min(off+150, len(want))
		e.must(200, "POST", "/api/v1/tasks/"+task.ID+"/logs", d.token, &client.LogAppend{Lease: lease, Offset: int64(off), Lines: want[off:end]}, nil)
	}
	e.must(200, "POST", "/api/v1/tasks/"+task.ID+"/status", d.token, &client.StatusUpdate{Lease: lease, State: errand.StateSucceeded}, nil)
	n, err := e.s.logs.SealPass(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("sealPass = %d, %v; want 1 log sealed", n, err)
	}
	objs, err := e.objects.List(context.Background(), "logs/"+task.ID+"/")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) < 10 {
		t.Fatalf("%d objects for a log of ~10 KiB in 1 KiB objects", len(objs))
	}
	for _, o := range objs {
		if o.Size > 1024 {
			t.Errorf("object %s has %d bytes, more than 1024", o.Key, o.Size)
		}
	}
	var page client.LogPage
	e.must(200, "GET", "/api/v1/tasks/"+task.ID+"/logs?limit=10000", testAdmin, nil, &page)
	if fmt.Sprint(page.Lines) != fmt.Sprint(want) || !page.Complete {
		t.Fatalf("sealed log read back differs: %d lines, complete=%v", len(page.Lines), page.Complete)
	}
	e.must(200, "GET", "/api/v1/tasks/"+task.ID+"/logs?offset=123&limit=5", testAdmin, nil, &page)
	if fmt.Sprint(page.Lines) != fmt.Sprint(want[123:128]) || page.Next != 128 {
		t.Fatalf("page from 123 = %+v", page)
	}
	var followed []string
	for l := range e.follow(task.ID, 0) {
		followed = append(followed, l)
	}
	if fmt.Sprint(followed) != fmt.Sprint(want) {
		t.Fatalf("followed sealed log differs: %d lines", len(followed))
	}
	if n, err := e.s.logs.SealPass(context.Background()); err != nil || n != 0 {
		t.Fatalf("second sealPass = %d, %v; want nothing to do", n, err)
	}
}

func TestCancelReachesLongPoll(t *testing.T) {
	e := newEnv(t)
	d := e.register("d", nil)
	task := e.create(&client.TaskSpec{Type: "noop"})
	lease := e.acquire(d, "max=1").Tasks[0].Lease.Token
	e.must(200, "POST", "/api/v1/tasks/"+task.ID+"/status", d.token, &client.StatusUpdate{Lease: lease, State: errand.StateRunning}, nil)

	got := make(chan *client.AcquireResponse, 1)
	go func() { got <- e.acquire(d, "wait=30s&max=0") }()
	e.waitAcquirers(1)
	start := time.Now()
	e.must(http.StatusNoContent, "POST", "/api/v1/tasks/"+task.ID+"/cancel", testAdmin, nil, nil)
	select {
	case a := <-got:
		if time.Since(start) > time.Second {
			t.Fatalf("cancel reached the delegate after %v", time.Since(start))
		}
		if fmt.Sprint(a.Cancel) != fmt.Sprint([]string{task.ID}) || len(a.Tasks) != 0 {
			t.Fatalf("acquire = %+v, want the cancel", a)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancel did not end the long-poll")
	}
	var hb client.HeartbeatResponse
	e.must(200, "POST", "/api/v1/delegates/"+d.id+"/heartbeat", d.token, &client.HeartbeatRequest{Running: []string{task.ID}}, &hb)
	if fmt.Sprint(hb.Cancel) != fmt.Sprint([]string{task.ID}) || hb.Kind != errand.KindHeartbeat {
		t.Fatalf("heartbeat = %+v", hb)
	}
	e.must(200, "POST", "/api/v1/tasks/"+task.ID+"/status", d.token, &client.StatusUpdate{Lease: lease, State: errand.StateCancelled}, nil)
	if st := e.getTask(task.ID).State; st != errand.StateCancelled {
		t.Fatalf("state = %s", st)
	}
	e.fails(409, errand.CodeIllegalTransition, "POST", "/api/v1/tasks/"+task.ID+"/cancel", testAdmin, nil)
	e.fails(404, errand.CodeNotFound, "POST", "/api/v1/tasks/nosuchtask/cancel", testAdmin, nil)
}

func TestDrainReachesLongPoll(t *testing.T) {
	e := newEnv(t)
	d := e.register("d", nil)
	got := make(chan *client.AcquireResponse, 1)
	go func() { got <- e.acquire(d, "wait=30s&max=2") }()
	e.waitAcquirers(1)
	e.must(http.StatusNoContent, "POST", "/api/v1/delegates/"+d.id+"/drain", testAdmin, nil, nil)
	select {
	case a := <-got:
		if !a.Drain {
			t.Fatalf("acquire = %+v, want drain", a)
		}
	case <-time.After(time.Second):
		t.Fatal("drain did not end the long-poll within a second")
	}
	// A draining delegate gets no more work.
	e.create(&client.TaskSpec{Type: "noop"})
	if a := e.acquire(d, "max=2"); len(a.Tasks) != 0 || !a.Drain {
		t.Fatalf("acquire while draining = %+v", a)
	}
}

func TestLeaseExpiry(t *testing.T) {
	clk := &clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	e := newEnv(t, func(c *Config) {
		c.Now = clk.Now
		c.HeartbeatInterval = 10 * time.Second
		c.LeaseTTL = 40 * time.Second
	})
	d := e.register("d", nil)
	task := e.create(&client.TaskSpec{Type: "noop", MaxAttempts: 2})
	lease := e.acquire(d, "max=1").Tasks[0].Lease.Token
	ctx := context.Background()

	// Heartbeats within the TTL that name the task keep its lease.
	clk.Add(30 * time.Second)
	e.must(200, "POST", "/api/v1/delegates/"+d.id+"/heartbeat", d.token, &client.HeartbeatRequest{Running: []string{task.ID}}, nil)
	if err := e.s.sched.FlushHeartbeats(ctx); err != nil {
		t.Fatal(err)
	}
	clk.Add(30 * time.Second)
	if res, err := e.s.sched.Sweep(ctx); err != nil || len(res.Requeued) != 0 {
		t.Fatalf("sweep after a heartbeat = %+v, %v; want nothing expired", res, err)
	}
	// Silence past the TTL loses it.
	clk.Add(11 * time.Second)
	res, err := e.s.sched.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res.Requeued) != fmt.Sprint([]string{task.ID}) || fmt.Sprint(res.LostDelegates) != fmt.Sprint([]string{d.id}) {
		t.Fatalf("sweep = %+v", res)
	}
	if got := e.getTask(task.ID); got.State != errand.StateQueued || got.Attempt != 1 {
		t.Fatalf("task after expiry = %s attempt %d", got.State, got.Attempt)
	}
	e.fails(409, errand.CodeLeaseLost, "POST", "/api/v1/tasks/"+task.ID+"/status", d.token, &client.StatusUpdate{Lease: lease, State: errand.StateRunning})
}

func TestCreateTasks(t *testing.T) {
	e := newEnv(t)
	var list client.TaskList
	e.must(201, "POST", "/api/v1/tasks", testAdmin, `{"tasks":[
		{"id":"init","type":"exec.initialize","data":{"a":1}},
		{"id":"step","type":"exec.execute","depends_on":[{"task":"init"}],"affinity":"init","priority":5,"timeout":"1m"},
		{"id":"clean","type":"exec.cleanup","depends_on":[{"task":"step","condition":"always"}],"max_attempts":1}]}`, &list)
	if list.Kind != errand.KindTaskList || len(list.Items) != 3 {
		t.Fatalf("batch = %+v", list)
	}
	want := []struct {
		state    errand.State
		attempts int
	}{{errand.StateQueued, 3}, {errand.StatePending, 3}, {errand.StatePending, 1}}
	for i, w := range want {
		it := list.Items[i]
		if it.State != w.state || it.MaxAttempts != w.attempts || it.Kind != errand.KindTask || it.Href != "/api/v1/tasks/"+it.ID {
			t.Errorf("items[%d] = %s, %d attempts, kind %q, href %q", i, it.State, it.MaxAttempts, it.Kind, it.Href)
		}
	}
	var page client.TaskList
	e.must(200, "GET", "/api/v1/tasks?state=pending&limit=1", testAdmin, nil, &page)
	if len(page.Items) != 1 || page.Items[0].ID != "step" || page.Next != "step" {
		t.Fatalf("page 1 = %+v", page)
	}
	e.must(200, "GET", "/api/v1/tasks?state=pending&limit=1&after=step", testAdmin, nil, &page)
	if len(page.Items) != 1 || page.Items[0].ID != "clean" {
		t.Fatalf("page 2 = %+v", page)
	}
	e.must(200, "GET", "/api/v1/tasks?type=exec.initialize", testAdmin, nil, &page)
	if len(page.Items) != 1 || page.Items[0].ID != "init" {
		t.Fatalf("by type = %+v", page)
	}
	e.fails(409, errand.CodeConflict, "POST", "/api/v1/tasks", testAdmin, `{"id":"init","type":"x"}`)
	e.fails(400, errand.CodeInvalid, "GET", "/api/v1/tasks?state=bogus", testAdmin, nil)
	e.fails(404, errand.CodeNotFound, "GET", "/api/v1/tasks/nope", testAdmin, nil)
}

func TestCreateInvalid(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBodyBytes = 4096 })
	e.create(&client.TaskSpec{ID: "exists", Type: "noop"})
	cases := []struct {
		name   string
		body   string
		status int
		code   string
		reason []string
	}{
		{"malformed", "{\"type\":\n\"x\",,}", 400, errand.CodeInvalid, []string{"line 2"}},
		{"empty", "", 400, errand.CodeInvalid, []string{"empty"}},
		{"unknown field", `{"type":"x","colour":"red"}`, 400, errand.CodeInvalid, []string{"colour"}},
		{"unknown field in batch", `{"tasks":[{"type":"x","colour":"red"}]}`, 400, errand.CodeInvalid, []string{"colour"}},
		{"oversized", `{"type":"x","data":{"pad":"` + strings.Repeat("p", 5000) + `"}}`, 413, errand.CodeTooLarge, nil},
		{"negative timeout", `{"type":"x","timeout":"-1s"}`, 400, errand.CodeInvalid, []string{"timeout"}},
		{"every problem listed", `{"type":"","max_attempts":101,"priority":5000,"data":[1]}`, 400, errand.CodeInvalid,
			[]string{"type: required", "max_attempts", "priority", "data: must be a JSON object"}},
		{"long type", `{"type":"` + strings.Repeat("t", 129) + `"}`, 400, errand.CodeInvalid, []string{"type"}},
		{"bad condition", `{"type":"x","depends_on":[{"task":"exists","condition":"sometimes"}]}`, 400, errand.CodeInvalid, []string{"depends_on[0].condition"}},
		{"self dependency", `{"id":"me","type":"x","depends_on":[{"task":"me"}]}`, 400, errand.CodeInvalid, []string{"depends_on[0].task"}},
		{"batch paths", `{"tasks":[{"type":"x"},{"type":"x","timeout":"-2s"}]}`, 400, errand.CodeInvalid, []string{"tasks[1].timeout"}},
		{"duplicate ids", `{"tasks":[{"id":"d","type":"x"},{"id":"d","type":"x"}]}`, 400, errand.CodeInvalid, []string{"tasks[1].id"}},
		{"empty batch", `{"tasks":[]}`, 400, errand.CodeInvalid, []string{"at least one"}},
		{"unknown dependency", `{"tasks":[{"id":"ok","type":"x"},{"type":"x","depends_on":[{"task":"ghost"}]}]}`, 400, errand.CodeInvalid, []string{"ghost"}},
		{"cycle", `{"tasks":[{"id":"a","type":"x","depends_on":[{"task":"b"}]},{"id":"b","type":"x","depends_on":[{"task":"a"}]}]}`, 400, errand.CodeInvalid, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			eb := e.fails(c.status, c.code, "POST", "/api/v1/tasks", testAdmin, c.body)
			for _, r := range c.reason {
				if !strings.Contains(eb.Reason, r) {
					t.Errorf("reason %q does not mention %q", eb.Reason, r)
				}
			}
		})
	}
	e.t = t
	var list client.TaskList
	e.must(200, "GET", "/api/v1/tasks", testAdmin, nil, &list)
	if len(list.Items) != 1 || list.Items[0].ID != "exists" {
		t.Fatalf("refused requests stored tasks: %+v", list.Items)
	}
}

func TestServiceEndpoints(t *testing.T) {
	e := newEnv(t)
	e.create(&client.TaskSpec{Type: "noop"})
	for _, c := range []struct {
		path, token string
		status      int
		contains    string
	}{
		{"/healthz", "", 200, "ok"},
		{"/readyz", "", 200, "ready"},
		{"/", "", 200, "/api/v1/tasks"},
		{"/metrics", testAdmin, 200, `errand_tasks_created_total{state="queued"} 1`},
	} {
		code, body := e.do("GET", c.path, c.token, nil)
		if code != c.status || !strings.Contains(string(body), c.contains) {
			t.Errorf("GET %s = %d %.200s, want %d containing %q", c.path, code, body, c.status, c.contains)
		}
	}
	e.fails(404, errand.CodeNotFound, "GET", "/api/v2/nothing", testAdmin, nil)
	e.fails(405, errand.CodeMethodNotAllowed, "PUT", "/api/v1/tasks", testAdmin, nil)
	code, body := e.do("GET", "/metrics", testAdmin, nil)
	if code != 200 || !strings.Contains(string(body), `errand_http_request_duration_seconds_count{code="201",method="POST",route="POST /api/v1/tasks"} 1`) {
		t.Errorf("request durations missing from metrics")
	}
}
