package storetest

import (
	"fmt"
	"sync"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

func testAcquireConcurrent(h *harness) {
	const (
		acquirers = 50
		tasks     = 400
	)
	batch := make([]*errand.Task, tasks)
	for i := range batch {
		batch[i] = task(fmt.Sprintf("t%03d", i))
	}
	h.create(batch...)
	delegates := make([]*errand.Delegate, acquirers)
	for i := range delegates {
		delegates[i] = h.register(fmt.Sprintf("d%02d", i))
	}
	var (
		mu    sync.Mutex
		owner = map[string]string{}
		dups  []string
		wg    sync.WaitGroup
		errs  = make(chan error, acquirers)
	)
	for i, d := range delegates {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				got, err := h.s.TaskAcquire(h.ctx, store.TaskAcquireParams{Delegate: d, Max: 1 + i%4, Now: h.now})
				if err != nil {
					errs <- fmt.Errorf("acquire for %s: %w", d.ID, err)
					return
				}
				if len(got) == 0 {
					return
				}
				if len(got) > 1+i%4 {
					errs <- fmt.Errorf("%s asked for %d, got %d", d.ID, 1+i%4, len(got))
					return
				}
				mu.Lock()
				for _, tk := range got {
					if prev, ok := owner[tk.ID]; ok {
						dups = append(dups, fmt.Sprintf("%s to %s and %s", tk.ID, prev, d.ID))
					}
					owner[tk.ID] = d.ID
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		h.t.Fatal(err)
	}
	if len(dups) > 0 {
		h.t.Fatalf("tasks leased twice: %v", dups)
	}
	if len(owner) != tasks {
		h.t.Fatalf("%d tasks leased, want %d", len(owner), tasks)
	}
	for id, d := range owner {
		tk := h.get(id)
		if tk.State != errand.StateLeased || tk.DelegateID != d || tk.Attempt != 1 {
			h.t.Fatalf("task %s: state %s delegate %s attempt %d, want leased to %s on attempt 1",
				id, tk.State, tk.DelegateID, tk.Attempt, d)
		}
	}
}

func testAcquireHeartbeat(h *harness) {
	d := h.register("d1")
	h.tick(time.Minute)
	h.acquire(d, 1) // nothing queued: still a sign of life
	got, err := h.s.DelegateGet(h.ctx, "d1")
	if err != nil {
		h.t.Fatal(err)
	}
	if !got.LastHeartbeat.Equal(h.now) {
		h.t.Fatalf("last heartbeat %v after acquire at %v", got.LastHeartbeat, h.now)
	}
	// A lost delegate that acquires is alive again.
	h.tick(time.Hour)
	if res := h.sweep(time.Minute, 0); !sameStrings(res.LostDelegates, []string{"d1"}) {
		h.t.Fatalf("lost %v, want [d1]", res.LostDelegates)
	}
	h.acquire(d, 1)
	if got, _ := h.s.DelegateGet(h.ctx, "d1"); got.State != errand.DelegateActive {
		h.t.Fatalf("delegate %s after acquire, want active", got.State)
	}
}

func testAcquireUnknownDelegate(h *harness) {
	h.create(task("t"))
	_, err := h.s.TaskAcquire(h.ctx, store.TaskAcquireParams{Delegate: &errand.Delegate{ID: "ghost"}, Max: 1, Now: h.now})
	wantCode(h.t, "acquire by unregistered delegate", err, errand.ErrNotFound)
	h.wantState("t", errand.StateQueued)
}

func testReportLeaseChecks(h *harness) {
	d1, d2 := h.register("d1"), h.register("d2")
	h.create(task("t"))
	leased := h.acquireOne(d1, "t")

	stale := *leased
	stale.Lease = &errand.Lease{Token: "00000000000000000000000000000000", DelegateID: "d1"}
	_, err := h.reportErr(&stale, errand.StateRunning, "", nil)
	wantCode(h.t, "stale token", err, errand.ErrLeaseLost)

	foreign := *leased
	foreign.Lease = &errand.Lease{Token: leased.Lease.Token, DelegateID: d2.ID}
	_, err = h.reportErr(&foreign, errand.StateRunning, "", nil)
	wantCode(h.t, "right token, other delegate", err, errand.ErrForbidden)

	tk := h.wantState("t", errand.StateLeased)
	if tk.DelegateID != "d1" {
		h.t.Fatalf("delegate %s, want d1", tk.DelegateID)
	}
	h.tick(time.Second)
	running := h.report(leased, errand.StateRunning)
	if running.StartedAt == nil || !running.StartedAt.Equal(h.now) {
		h.t.Fatalf("started_at %v, want %v", running.StartedAt, h.now)
	}
	_, err = h.s.TaskReport(h.ctx, store.TaskReportParams{TaskID: "missing", DelegateID: "d1", LeaseToken: "x", State: errand.StateRunning, Now: h.now})
	wantCode(h.t, "report on missing task", err, errand.ErrNotFound)
}

func testReportIllegal(h *harness) {
	d := h.register("d1")
	h.create(task("t"))
	leased := h.run(d, "t", errand.StateSucceeded)
	before := h.get("t")
	for _, st := range []errand.State{errand.StateRunning, errand.StateFailed, errand.StateCancelled} {
		_, err := h.reportErr(leased, st, "", nil)
		wantCode(h.t, "report "+string(st)+" on succeeded task", err, errand.ErrIllegalTransition)
	}
	after := h.get("t")
	if after.State != before.State || string(after.Result) != string(before.Result) ||
		!after.FinishedAt.Equal(*before.FinishedAt) || after.Error != nil {
		h.t.Fatalf("refused reports changed the task: before %+v after %+v", before, after)
	}
	_, err := h.reportErr(leased, errand.StateQueued, "", nil)
	wantCode(h.t, "report queued", err, errand.ErrInvalid)
}

func testReportIdempotent(h *harness) {
	d := h.register("d1")
	h.create(task("t"))
	leased := h.acquireOne(d, "t")
	h.report(leased, errand.StateRunning)
	h.tick(time.Second)
	again := h.report(leased, errand.StateRunning)
	if !again.StartedAt.Equal(t0) {
		h.t.Fatalf("repeated running moved started_at to %v", again.StartedAt)
	}
	if _, err := h.reportErr(leased, errand.StateSucceeded, `{"v":1}`, nil); err != nil {
		h.t.Fatal(err)
	}
	h.tick(time.Second)
	retry, err := h.reportErr(leased, errand.StateSucceeded, `{"v":1}`, nil)
	if err != nil {
		h.t.Fatalf("retried succeeded report: %v", err)
	}
	if retry.State != errand.StateSucceeded || string(retry.Result) != `{"v":1}` || !retry.FinishedAt.Equal(t0.Add(time.Second)) {
		h.t.Fatalf("retried report returned %+v", retry)
	}
}

func testReportOutcomes(h *harness) {
	d := h.register("d1")
	cases := []struct {
		state    errand.State
		result   string
		err      *errand.Error
		wantCode string
	}{
		{errand.StateSucceeded, `{"network":"n1"}`, nil, ""},
		{errand.StateFailed, "", &errand.Error{Code: errand.CodeExitCode, Reason: "exit 2"}, errand.CodeExitCode},
		{errand.StateFailed, "", nil, errand.CodeTaskFailed},
		{errand.StateTimedOut, "", nil, errand.CodeTimedOut},
	}
	for i, c := range cases {
		id := fmt.Sprintf("t%d", i)
		h.create(task(id))
		leased := h.acquireOne(d, id)
		h.report(leased, errand.StateRunning)
		h.tick(time.Second)
		out, err := h.reportErr(leased, c.state, c.result, c.err)
		if err != nil {
			h.t.Fatalf("%s: %v", c.state, err)
		}
		for _, tk := range []*errand.Task{out, h.get(id)} {
			if tk.State != c.state || string(tk.Result) != c.result || tk.FinishedAt == nil || !tk.FinishedAt.Equal(h.now) {
				h.t.Fatalf("%s: task %+v", c.state, tk)
			}
			code := ""
			if tk.Error != nil {
				code = tk.Error.Code
			}
			if code != c.wantCode {
				h.t.Fatalf("%s: error code %q, want %q", c.state, code, c.wantCode)
			}
			if c.err != nil && tk.Error.Reason != c.err.Reason {
				h.t.Fatalf("%s: reason %q, want %q", c.state, tk.Error.Reason, c.err.Reason)
			}
		}
	}
}

func testPriorityFIFO(h *harness) {
	d := h.register("d1")
	low1 := task("low1")
	mid := task("mid")
	mid.Priority = 5
	h.create(low1, mid)
	h.tick(time.Second)
	h.create(task("low2"), task("low3"))
	h.tick(time.Second)
	high := task("high")
	high.Priority = 10
	neg := task("neg")
	neg.Priority = -1
	h.create(neg, high)
	h.tick(time.Second)
	h.create(task("low4"))
	var order []string
	for {
		got := h.acquire(d, 1)
		if len(got) == 0 {
			break
		}
		order = append(order, got[0].ID)
	}
	want := []string{"high", "mid", "low1", "low2", "low3", "low4", "neg"}
	if !sameStrings(order, want) {
		h.t.Fatalf("acquire order %v, want %v", order, want)
	}
	// Max takes the head of the queue in order.
	h.create(task("a"), task("b"), task("c"))
	if got := h.acquire(d, 2); !sameStrings(ids(got), []string{"a", "b"}) {
		h.t.Fatalf("acquire max 2 = %v, want [a b]", ids(got))
	}
}

func testSelectorMatching(h *harness) {
	cases := []struct {
		name     string
		delegate errand.Delegate
		task     errand.Task
		want     bool
	}{
		{"empty selector, any delegate", errand.Delegate{}, errand.Task{}, true},
		{"label match", errand.Delegate{Labels: map[string]string{"os": "linux", "gpu": "yes"}},
			errand.Task{Selector: errand.Selector{Labels: map[string]string{"os": "linux"}}}, true},
		{"label value differs", errand.Delegate{Labels: map[string]string{"os": "darwin"}},
			errand.Task{Selector: errand.Selector{Labels: map[string]string{"os": "linux"}}}, false},
		{"label missing", errand.Delegate{},
			errand.Task{Selector: errand.Selector{Labels: map[string]string{"os": "linux"}}}, false},
		{"arch among several", errand.Delegate{Archs: []string{"amd64", "arm64"}},
			errand.Task{Selector: errand.Selector{Arch: "arm64"}}, true},
		{"arch not served", errand.Delegate{Archs: []string{"amd64"}},
			errand.Task{Selector: errand.Selector{Arch: "arm64"}}, false},
		{"group match", errand.Delegate{Group: "ci"}, errand.Task{Selector: errand.Selector{Group: "ci"}}, true},
		{"group differs", errand.Delegate{Group: "prod"}, errand.Task{Selector: errand.Selector{Group: "ci"}}, false},
		{"type served", errand.Delegate{TaskTypes: []string{"other", "custom.type"}}, errand.Task{Type: "custom.type"}, true},
		{"type not served", errand.Delegate{TaskTypes: []string{"other"}}, errand.Task{Type: "custom.type"}, false},
		{"all of them", errand.Delegate{Group: "ci", Archs: []string{"amd64"}, TaskTypes: []string{"custom.type"},
			Labels: map[string]string{"a": "1"}},
			errand.Task{Type: "custom.type", Selector: errand.Selector{Group: "ci", Arch: "amd64",
				Labels: map[string]string{"a": "1"}}}, true},
	}
	for i, c := range cases {
		dl := c.delegate
		d := h.register(fmt.Sprintf("d%d", i), func(x *errand.Delegate) {
			x.Group, x.Labels, x.Archs, x.TaskTypes = dl.Group, dl.Labels, dl.Archs, dl.TaskTypes
		})
		tk := c.task
		tk.ID = fmt.Sprintf("t%d", i)
		tk.MaxAttempts = 1
		if tk.Type == "" {
			tk.Type = "test.noop"
		}
		h.create(&tk)
		got := h.acquire(d, 5)
		if (len(got) == 1) != c.want || len(got) > 1 {
			h.t.Fatalf("%s: acquired %v, want match %v", c.name, ids(got), c.want)
		}
		if !c.want {
			h.cancel(tk.ID)
		} else {
			h.report(got[0], errand.StateSucceeded)
		}
	}
}

func testAffinity(h *harness) {
	a := h.register("a", func(d *errand.Delegate) { d.Group = "g1" })
	b := h.register("b", func(d *errand.Delegate) { d.Group = "g1" })
	c := h.register("c", func(d *errand.Delegate) { d.Group = "g2" })
	follow := func(id, init string, cond errand.Condition) *errand.Task {
		tk := task(id, dep(init, cond))
		tk.Affinity = init
		return tk
	}

	// The holder of the affinity task runs its followers; nobody else.
	h.create(task("init1"), follow("exec1", "init1", ""))
	h.run(a, "init1", errand.StateSucceeded)
	h.acquireNone(b)
	h.acquireNone(c)
	h.run(a, "exec1", errand.StateSucceeded)

	// A follower of a task whose holder is lost goes to the same group.
	h.create(task("init2"), follow("exec2", "init2", errand.Always))
	h.run(a, "init2", errand.StateFailed)
	h.tick(time.Minute)
	h.touch("b", "c")
	if res := h.sweep(30*time.Second, 0); !sameStrings(res.LostDelegates, []string{"a"}) {
		h.t.Fatalf("lost %v, want [a]", res.LostDelegates)
	}
	h.acquireNone(c)
	h.acquireOne(b, "exec2")

	// A follower of a task that was never leased has no constraint.
	h.create(task("init3"), follow("exec3", "init3", errand.Always))
	h.cancel("init3")
	h.acquireOne(c, "exec3")
}

func testHeartbeat(h *harness) {
	d := h.register("d1")
	h.create(task("t"))
	leased := h.acquireOne(d, "t")
	h.report(leased, errand.StateRunning)
	for i := 0; i < 5; i++ {
		h.tick(20 * time.Second)
		h.touch("unknown-is-ignored")
		h.touchRunning("d1", "t")
		if res := h.sweep(30*time.Second, 0); len(res.LostDelegates)+len(res.Requeued)+len(res.Failed) != 0 {
			h.t.Fatalf("sweep after heartbeat expired %+v", res)
		}
	}
	got, _ := h.s.DelegateGet(h.ctx, "d1")
	if !got.LastHeartbeat.Equal(h.now) || got.State != errand.DelegateActive {
		h.t.Fatalf("delegate after touch: %s at %v", got.State, got.LastHeartbeat)
	}
	h.report(leased, errand.StateSucceeded)

	// Touching a lost delegate makes it active again.
	h.tick(time.Minute)
	h.sweep(30*time.Second, 0)
	if got, _ := h.s.DelegateGet(h.ctx, "d1"); got.State != errand.DelegateLost {
		h.t.Fatalf("silent delegate is %s, want lost", got.State)
	}
	h.touch("d1")
	if got, _ := h.s.DelegateGet(h.ctx, "d1"); got.State != errand.DelegateActive {
		h.t.Fatalf("touched lost delegate is %s, want active", got.State)
	}
}

func testSweepAttempts(h *harness) {
	d1, d2 := h.register("d1"), h.register("d2")
	one := task("one")
	one.MaxAttempts = 1
	h.create(task("three"), one)
	three := h.acquireOne(d1, "three")
	h.report(three, errand.StateRunning)
	h.acquireOne(d1, "one")
	h.tick(20 * time.Second)
	h.touch("d2")
	if res := h.sweep(30*time.Second, 0); len(res.LostDelegates) != 0 {
		h.t.Fatalf("lost %v before the TTL", res.LostDelegates)
	}
	h.tick(11 * time.Second)
	h.touch("d2")
	res := h.sweep(30*time.Second, 0)
	if !sameStrings(res.LostDelegates, []string{"d1"}) || !sameStrings(res.Requeued, []string{"three"}) ||
		!sameStrings(res.Failed, []string{"one"}) || len(res.Cancelled)+len(res.TimedOut) != 0 {
		h.t.Fatalf("sweep = %+v", res)
	}
	tk := h.wantState("three", errand.StateQueued)
	if tk.Attempt != 1 || tk.QueuedAt == nil || !tk.QueuedAt.Equal(h.now) {
		h.t.Fatalf("requeued task attempt %d queued_at %v", tk.Attempt, tk.QueuedAt)
	}
	failed := h.wantState("one", errand.StateFailed)
	if failed.Error == nil || failed.Error.Code != errand.CodeDelegateLost {
		h.t.Fatalf("failed task error %+v, want delegate_lost", failed.Error)
	}
	if got, _ := h.s.DelegateGet(h.ctx, "d1"); got.State != errand.DelegateLost {
		h.t.Fatalf("d1 is %s, want lost", got.State)
	}
	// The presumed-dead delegate can no longer report.
	_, err := h.reportErr(three, errand.StateSucceeded, "", nil)
	wantCode(h.t, "report after lease expired", err, errand.ErrLeaseLost)

	// Attempts continue on another delegate until none remain.
	for attempt := 2; attempt <= 3; attempt++ {
		again := h.acquireOne(d2, "three")
		if again.Attempt != attempt || again.Lease.Token == three.Lease.Token {
			h.t.Fatalf("attempt %d: task %+v", attempt, again)
		}
		h.tick(time.Minute)
		h.touch("d1")
		h.sweep(30*time.Second, 0)
	}
	if tk := h.wantState("three", errand.StateFailed); tk.Error == nil || tk.Error.Code != errand.CodeDelegateLost {
		h.t.Fatalf("after 3 attempts error %+v", tk.Error)
	}
}

func testSweepCancelRequested(h *harness) {
	d := h.register("d1")
	h.create(task("t"))
	leased := h.acquireOne(d, "t")
	h.report(leased, errand.StateRunning)
	h.cancel("t")
	h.tick(time.Hour)
	res := h.sweep(time.Minute, 0)
	if !sameStrings(res.Cancelled, []string{"t"}) || len(res.Requeued) != 0 {
		h.t.Fatalf("sweep = %+v", res)
	}
	if tk := h.wantState("t", errand.StateCancelled); tk.Error == nil || tk.Error.Code != errand.CodeCancelled {
		h.t.Fatalf("error %+v, want cancelled", tk.Error)
	}
}

func testSweepTimeout(h *harness) {
	d := h.register("d1")
	short := task("short")
	short.Timeout = errand.Duration(10 * time.Second)
	none := task("none")
	leasedOnly := task("leased-only")
	leasedOnly.Timeout = errand.Duration(time.Second)
	h.create(short, none, leasedOnly)
	s := h.acquireOne(d, "short")
	h.report(s, errand.StateRunning)
	n := h.acquireOne(d, "none")
	h.report(n, errand.StateRunning)
	h.acquireOne(d, "leased-only")

	h.tick(15 * time.Second) // exactly timeout + grace: not past it
	h.touch("d1")
	if res := h.sweep(time.Minute, 5*time.Second); len(res.TimedOut) != 0 {
		h.t.Fatalf("timed out %v at the deadline", res.TimedOut)
	}
	h.tick(time.Second)
	h.touch("d1")
	if res := h.sweep(time.Minute, 5*time.Second); !sameStrings(res.TimedOut, []string{"short"}) {
		h.t.Fatalf("timed out %v, want [short]", res.TimedOut)
	}
	tk := h.wantState("short", errand.StateTimedOut)
	if tk.Error == nil || tk.Error.Code != errand.CodeTimedOut || !tk.FinishedAt.Equal(h.now) {
		h.t.Fatalf("timed out task error %+v finished %v", tk.Error, tk.FinishedAt)
	}
	h.wantState("none", errand.StateRunning)
	h.wantState("leased-only", errand.StateLeased)
	_, err := h.reportErr(s, errand.StateSucceeded, "", nil)
	wantCode(h.t, "report succeeded after timeout", err, errand.ErrIllegalTransition)
	if res := h.sweep(time.Minute, 5*time.Second); len(res.TimedOut) != 0 {
		h.t.Fatalf("second sweep timed out %v again", res.TimedOut)
	}
}

func testSweepConcurrent(h *harness) {
	const delegates, perDelegate = 6, 3
	for i := 0; i < delegates; i++ {
		d := h.register(fmt.Sprintf("d%d", i))
		for j := 0; j < perDelegate; j++ {
			id := fmt.Sprintf("t%d-%d", i, j)
			h.create(task(id))
			h.acquireOne(d, id)
		}
	}
	h.tick(time.Hour)
	var (
		wg      sync.WaitGroup
		results [4]store.TaskSweepResult
		errs    [4]error
	)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = h.s.TaskSweep(h.ctx, store.TaskSweepParams{Now: h.now, LeaseTTL: time.Minute})
		}()
	}
	wg.Wait()
	lost, requeued := map[string]int{}, map[string]int{}
	for i, r := range results {
		if errs[i] != nil {
			h.t.Fatalf("sweep %d: %v", i, errs[i])
		}
		for _, id := range r.LostDelegates {
			lost[id]++
		}
		for _, id := range r.Requeued {
			requeued[id]++
		}
	}
	if len(lost) != delegates || len(requeued) != delegates*perDelegate {
		h.t.Fatalf("lost %v requeued %v", lost, requeued)
	}
	for id, n := range lost {
		if n != 1 {
			h.t.Fatalf("delegate %s lost %d times", id, n)
		}
	}
	for id, n := range requeued {
		if n != 1 {
			h.t.Fatalf("task %s requeued %d times", id, n)
		}
		if tk := h.get(id); tk.State != errand.StateQueued || tk.Attempt != 1 {
			h.t.Fatalf("task %s %s attempt %d", id, tk.State, tk.Attempt)
		}
	}
}
