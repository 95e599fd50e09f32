package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
	"github.com/errandci/errand/manager/store/postgres/pgtest"
)

// The kill -9 durability check: load is driven against a real manager,
// the manager is killed with SIGKILL in the middle of it and restarted on
// the same data, and everything the manager acknowledged before the kill
// must be found after it. Three rounds each of SQLite and PostgreSQL.

const (
	durabilityType = "durability.fake"
	// durabilityIdleType is served by no delegate: tasks created beyond
	// what the delegates keep up with, so that retried attempts are not
	// stuck behind a growing queue.
	durabilityIdleType  = "durability.idle"
	durabilityBacklog   = 40 // most served tasks waiting at once
	durabilityRounds    = 3
	durabilityCreators  = 3
	durabilityDelegates = 3 // fake delegates
	durabilityWorkers   = 2 // acquiring goroutines per fake delegate
	durabilityBatches   = 3 // log appends per task attempt
	durabilityLines     = 4 // lines per append
	// durabilityLoad is how long each round's load runs before the kill.
	durabilityLoad = 1500 * time.Millisecond
	// durabilityCall bounds each call of the load.
	durabilityCall = 5 * time.Second
)

// A manager on SQLite killed with SIGKILL three times under load keeps
// every task, log line and completion it acknowledged.
func TestE2EDurabilityKill9SQLite(t *testing.T) {
	m := testenv.StartManager(t, testenv.Binary(t), durabilityFlags()...)
	runDurability(t, m)
}

// The same on PostgreSQL (ERRAND_TEST_POSTGRES, which scripts/test sets).
func TestE2EDurabilityKill9Postgres(t *testing.T) {
	pg := pgtest.URL(t) // fails the test when ERRAND_TEST_POSTGRES is unset
	m := testenv.StartManager(t, testenv.Binary(t), append(durabilityFlags(), "--store", pg)...)
	runDurability(t, m)
}

func durabilityFlags() []string {
	return []string{"--heartbeat-interval", "200ms", "--lease-ttl", "3s", "--sweep-interval", "100ms"}
}

// durabilityLedger is what the manager acknowledged: created tasks, log
// lines at their offsets, and completions with their results; and what
// the load saw that breaks the lease rules.
type durabilityLedger struct {
	mu         sync.Mutex
	tasks      map[string]bool
	served     int // acknowledged tasks of durabilityType
	lines      map[string]map[int64]string
	nlines     int
	done       map[string]json.RawMessage
	retried    int // completions of attempts after the first
	violations []string
}

func newDurabilityLedger() *durabilityLedger {
	return &durabilityLedger{
		tasks: map[string]bool{},
		lines: map[string]map[int64]string{},
		done:  map[string]json.RawMessage{},
	}
}

func (l *durabilityLedger) created(items []*client.Task) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, tk := range items {
		l.tasks[tk.ID] = true
		if tk.Type == durabilityType {
			l.served++
		}
	}
}

func (l *durabilityLedger) appended(id string, offset int64, lines []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.lines[id]
	if m == nil {
		m = map[int64]string{}
		l.lines[id] = m
	}
	for i, s := range lines {
		if _, ok := m[offset+int64(i)]; !ok {
			l.nlines++
		}
		m[offset+int64(i)] = s
	}
}

// acquired records a violation when a task whose completion was
// acknowledged is handed out again.
func (l *durabilityLedger) acquired(tk *client.Task) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.done[tk.ID]; ok {
		l.violations = append(l.violations, fmt.Sprintf("task %s acquired again (attempt %d) after its completion was acknowledged", tk.ID, tk.Attempt))
	}
}

func (l *durabilityLedger) completed(id string, attempt int, result json.RawMessage) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if prev, ok := l.done[id]; ok {
		l.violations = append(l.violations, fmt.Sprintf("task %s completed twice: %s, then %s", id, prev, result))
		return
	}
	l.done[id] = result
	if attempt > 1 {
		l.retried++
	}
}

func (l *durabilityLedger) violation(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.violations = append(l.violations, fmt.Sprintf(format, args...))
}

// backlogged reports whether the delegates have enough served tasks
// waiting.
func (l *durabilityLedger) backlogged() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.served-len(l.done) >= durabilityBacklog
}

// counts returns the acknowledged tasks, log lines and completions.
func (l *durabilityLedger) counts() (tasks, lines, done int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.tasks), l.nlines, len(l.done)
}

// fakeDelegate is a delegate driven by the test: its workers acquire
// tasks, log lines at offsets and report success.
type fakeDelegate struct {
	id    string
	c     *client.HTTP
	admin string // the admin token, to look at what reports did

	mu      sync.Mutex
	running map[string]bool
	// abandoned are the tasks, with their leases, that the delegate gave
	// up half way: the kill ended the attempt.
	abandoned []*client.Task
}

// loadClient is a client of the load: no retries, so that every answer
// counted is the one of a single request, and nothing logged.
func loadClient(url, token string) *client.HTTP {
	log := logrus.New()
	log.SetOutput(io.Discard)
	return client.New(url, token, client.WithLogger(logrus.NewEntry(log)),
		client.WithRetry(0), client.WithTimeout(durabilityCall))
}

func registerFakeDelegate(t *testing.T, m *testenv.Manager, name string) *fakeDelegate {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg, err := testenv.Client(t, m.URL, m.RegistrationToken).Register(ctx, &client.RegisterRequest{
		Name: name, Capacity: durabilityWorkers, TaskTypes: []string{durabilityType},
	})
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return &fakeDelegate{id: reg.ID, c: loadClient(m.URL, reg.Token), admin: m.AdminToken, running: map[string]bool{}}
}

func (d *fakeDelegate) setRunning(id string, on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if on {
		d.running[id] = true
	} else {
		delete(d.running, id)
	}
}

func (d *fakeDelegate) abandon(tk *client.Task) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.abandoned = append(d.abandoned, tk)
}

func (d *fakeDelegate) runningIDs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	ids := make([]string, 0, len(d.running))
	for id := range d.running {
		ids = append(ids, id)
	}
	return ids
}

// resume starts a round as a restarted delegate process would: it holds
// nothing, so the leases the previous round left end at once. Then it
// reports on the tasks it abandoned under their old leases, as a process
// presumed dead would: no such report may change a task. A report may
// still be answered as the repeat of one whose answer the kill lost (the
// attempt had completed, its lines were stored): it returns how many
// reports were refused and how many answered as repeats.
func (d *fakeDelegate) resume(t *testing.T, l *durabilityLedger) (refused, repeats int) {
	t.Helper()
	d.mu.Lock()
	d.running = map[string]bool{}
	stale := d.abandoned
	d.abandoned = nil
	d.mu.Unlock()
	poll(t, "delegate "+d.id+" to heartbeat", 20*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), durabilityCall)
		defer cancel()
		_, err := d.c.Heartbeat(ctx, d.id, &client.HeartbeatRequest{Resumed: true})
		return err == nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := testenv.Client(t, d.c.BaseURL(), d.admin)
	for _, tk := range stale {
		lease := tk.Lease.Token
		line := fmt.Sprintf("%s stale attempt %d", tk.ID, tk.Attempt)
		if _, err := d.c.AppendLogs(ctx, tk.ID, &client.LogAppend{Lease: lease, Offset: tk.LogLines, Lines: []string{line}}); err == nil {
			repeats++
			var b bytes.Buffer
			if err := admin.TaskLogs(ctx, tk.ID, &client.LogOptions{Offset: tk.LogLines}, &b); err != nil {
				t.Fatalf("logs of %s: %v", tk.ID, err)
			}
			if first, _, _ := strings.Cut(b.String(), "\n"); first == line {
				l.violation("task %s: log line %d appended under the lease of attempt %d after the delegate resumed without it", tk.ID, tk.LogLines, tk.Attempt)
			}
		} else {
			refused++
		}
		result := json.RawMessage(fmt.Sprintf(`{"task":%q,"attempt":%d,"stale":true}`, tk.ID, tk.Attempt))
		if _, err := d.c.UpdateStatus(ctx, tk.ID, &client.StatusUpdate{Lease: lease, State: errand.StateSucceeded, Result: result}); err == nil {
			repeats++
			got, err := admin.GetTask(ctx, tk.ID)
			if err != nil {
				t.Fatalf("get task %s: %v", tk.ID, err)
			}
			if sameJSON(got.Result, result) {
				l.violation("task %s: success under the lease of attempt %d applied after the delegate resumed without it (now %s attempt %d)",
					tk.ID, tk.Attempt, got.State, got.Attempt)
			}
		} else {
			refused++
		}
	}
	return refused, repeats
}

// heartbeats renews the leases of the tasks being worked on until ctx
// ends.
func (d *fakeDelegate) heartbeats(ctx context.Context) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		_, _ = d.c.Heartbeat(ctx, d.id, &client.HeartbeatRequest{Running: d.runningIDs()})
	}
}

// work acquires and runs tasks until ctx ends.
func (d *fakeDelegate) work(ctx context.Context, l *durabilityLedger) {
	for ctx.Err() == nil {
		resp, err := d.c.Acquire(ctx, d.id, &client.AcquireRequest{Max: 1, Wait: errand.Duration(200 * time.Millisecond)})
		if err != nil {
			pause(ctx)
			continue
		}
		for _, tk := range resp.Tasks {
			l.acquired(tk)
			d.run(ctx, l, tk)
		}
	}
}

// run reports the task running, logs durabilityBatches appends of
// durabilityLines lines from the task's log end, and reports success. It
// gives the task up at the first failure: the kill ends most attempts
// half way.
func (d *fakeDelegate) run(ctx context.Context, l *durabilityLedger, tk *client.Task) {
	if tk.Lease == nil {
		l.violation("task %s acquired without a lease", tk.ID)
		return
	}
	lease := tk.Lease.Token
	d.setRunning(tk.ID, true)
	defer d.setRunning(tk.ID, false)
	finished := false
	defer func() {
		if !finished {
			d.abandon(tk)
		}
	}()
	if _, err := d.c.UpdateStatus(ctx, tk.ID, &client.StatusUpdate{Lease: lease, State: errand.StateRunning}); err != nil {
		return
	}
	offset := tk.LogLines
	for b := 0; b < durabilityBatches; b++ {
		lines := make([]string, durabilityLines)
		for i := range lines {
			// The attempt is part of the line: a line lost and written
			// again by a later attempt does not read as the same.
			lines[i] = fmt.Sprintf("%s attempt %d line %d", tk.ID, tk.Attempt, offset+int64(i))
		}
		res, err := d.c.AppendLogs(ctx, tk.ID, &client.LogAppend{Lease: lease, Offset: offset, Lines: lines})
		if err != nil {
			return
		}
		l.appended(tk.ID, offset, lines)
		if want := offset + int64(len(lines)); res.Next != want {
			l.violation("append of %d lines at %d to task %s answered next %d, want %d", len(lines), offset, tk.ID, res.Next, want)
			return
		}
		offset = res.Next
	}
	result := json.RawMessage(fmt.Sprintf(`{"task":%q,"attempt":%d,"delegate":%q,"lines":%d}`, tk.ID, tk.Attempt, d.id, offset))
	got, err := d.c.UpdateStatus(ctx, tk.ID, &client.StatusUpdate{Lease: lease, State: errand.StateSucceeded, Result: result})
	if err != nil {
		return
	}
	finished = true
	if got.State != errand.StateSucceeded {
		l.violation("success of task %s acknowledged with state %s", tk.ID, got.State)
	}
	l.completed(tk.ID, tk.Attempt, result)
}

// createTasks creates batches of one to three tasks until ctx ends: for
// the delegates while their backlog is short, else of a type nobody runs.
func createTasks(ctx context.Context, c *client.HTTP, l *durabilityLedger, creator int) {
	for n := 0; ctx.Err() == nil; n++ {
		typ := durabilityType
		if l.backlogged() {
			typ = durabilityIdleType
		}
		specs := make([]*client.TaskSpec, 1+n%3)
		for i := range specs {
			specs[i] = &client.TaskSpec{Type: typ, MaxAttempts: 5,
				Data: json.RawMessage(fmt.Sprintf(`{"creator":%d,"n":%d}`, creator, n))}
		}
		items, err := c.CreateTasks(ctx, specs)
		if err != nil {
			pause(ctx)
			continue
		}
		if len(items) != len(specs) {
			l.violation("create of %d tasks acknowledged %d", len(specs), len(items))
		}
		l.created(items)
	}
}

// pause waits a little after a failed call, or until ctx ends, so that a
// manager that is down is not spun against.
func pause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(20 * time.Millisecond):
	}
}

func runDurability(t *testing.T, m *testenv.Manager) {
	start := time.Now()
	l := newDurabilityLedger()
	delegates := make([]*fakeDelegate, durabilityDelegates)
	for i := range delegates {
		delegates[i] = registerFakeDelegate(t, m, fmt.Sprintf("durable-%d", i))
	}
	creator := loadClient(m.URL, m.AdminToken)

	staleRefused, staleRepeats := 0, 0
	for round := 1; round <= durabilityRounds; round++ {
		for _, d := range delegates {
			refused, repeats := d.resume(t, l)
			staleRefused += refused
			staleRepeats += repeats
		}
		tasks0, lines0, done0 := l.counts()
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for i := 0; i < durabilityCreators; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); createTasks(ctx, creator, l, i) }()
		}
		for _, d := range delegates {
			wg.Add(1)
			go func() { defer wg.Done(); d.heartbeats(ctx) }()
			for w := 0; w < durabilityWorkers; w++ {
				wg.Add(1)
				go func() { defer wg.Done(); d.work(ctx, l) }()
			}
		}
		stop := func() { cancel(); wg.Wait() }

		// Kill mid-load: after durabilityLoad, once every kind of write has
		// been acknowledged in this round.
		loadStart := time.Now()
		progressed := false
		deadline := time.Now().Add(30 * time.Second)
		for !progressed {
			tasks, lines, done := l.counts()
			progressed = time.Since(loadStart) >= durabilityLoad && tasks > tasks0 && lines > lines0 && done > done0
			if !progressed && time.Now().After(deadline) {
				stop()
				t.Fatalf("round %d: no progress in 30s: +%d tasks, +%d log lines, +%d completions",
					round, tasks-tasks0, lines-lines0, done-done0)
			}
			time.Sleep(10 * time.Millisecond)
		}
		m.Kill()
		stop()
		tasks, lines, done := l.counts()
		t.Logf("round %d: killed the manager with SIGKILL after %s of load: acknowledged %d tasks, %d log lines, %d completions (+%d, +%d, +%d this round)",
			round, time.Since(loadStart).Round(time.Millisecond), tasks, lines, done, tasks-tasks0, lines-lines0, done-done0)

		m.Restart(t)
		checkDurability(t, m, l, round)
	}
	tasks, lines, done := l.counts()
	t.Logf("after %d kills: all %d acknowledged tasks, %d log lines and %d completions found; "+
		"of the reports under leases a resumed delegate gave up, %d refused and %d answered as repeats that changed nothing (%s)",
		durabilityRounds, tasks, lines, done, staleRefused, staleRepeats, time.Since(start).Round(time.Millisecond))
}

// checkDurability checks the restarted manager against the ledger.
func checkDurability(t *testing.T, m *testenv.Manager, l *durabilityLedger, round int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := testenv.Client(t, m.URL, m.AdminToken)
	l.mu.Lock()
	defer l.mu.Unlock()
	var problems []string
	report := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	var missing, lostLines, lostDone int

	stored := map[string]*client.Task{}
	for after := ""; ; {
		page, err := admin.ListTasks(ctx, &client.TaskFilter{After: after, Limit: 1000})
		if err != nil {
			t.Fatalf("round %d: list tasks after the restart: %v", round, err)
		}
		for _, tk := range page.Items {
			stored[tk.ID] = tk
		}
		if page.Next == "" || len(page.Items) == 0 {
			break
		}
		after = page.Next
	}
	for id := range l.tasks {
		if stored[id] == nil {
			missing++
			report("task %s was acknowledged (201) but is gone", id)
		}
	}

	for id, want := range l.done {
		tk := stored[id]
		if tk == nil {
			lostDone++
			report("task %s: completion acknowledged, task gone", id)
			continue
		}
		if tk.State != errand.StateSucceeded || !sameJSON(tk.Result, want) {
			lostDone++
			report("task %s: completion acknowledged with result %s, found %s with result %s", id, want, tk.State, tk.Result)
		}
	}

	ids := make([]string, 0, len(l.lines))
	for id := range l.lines {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		var b bytes.Buffer
		if err := admin.TaskLogs(ctx, id, &client.LogOptions{}, &b); err != nil {
			report("task %s: read log: %v", id, err)
			continue
		}
		got := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
		if b.Len() == 0 {
			got = nil
		}
		for off, want := range l.lines[id] {
			switch {
			case off >= int64(len(got)):
				lostLines++
				report("task %s: log line %d acknowledged (%q), log has %d lines", id, off, want, len(got))
			case got[off] != want:
				lostLines++
				report("task %s: log line %d acknowledged as %q, reads %q", id, off, want, got[off])
			}
		}
	}
	if len(problems)+len(l.violations) > 0 {
		sort.Strings(problems)
		if len(problems) > 30 {
			problems = append(problems[:30], fmt.Sprintf("… and %d more", len(problems)-30))
		}
		t.Fatalf("round %d: after SIGKILL and restart, lost %d of %d acknowledged tasks, %d of %d log lines, %d of %d completions; "+
			"%d breaches of the lease rules:\n%s",
			round, missing, len(l.tasks), lostLines, l.nlines, lostDone, len(l.done), len(l.violations),
			strings.Join(append(l.violations, problems...), "\n"))
	}
	t.Logf("round %d: after the restart found all %d tasks, %d log lines and %d completions (%d of them by a retried attempt)",
		round, len(l.tasks), l.nlines, len(l.done), l.retried)
}

// sameJSON reports whether a and b hold the same JSON value.
func sameJSON(a, b json.RawMessage) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
}
