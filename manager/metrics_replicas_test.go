package manager

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/ost/posix"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/postgres"
	"github.com/errandci/errand/manager/store/postgres/pgtest"
)

// newReplica starts a manager on the PostgreSQL schema at url, as a
// replica of the others started on it.
func newReplica(t *testing.T, url, objects string) *env {
	t.Helper()
	st, err := postgres.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := posix.New(objects)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{AdminToken: testAdmin, RegistrationToken: testReg, Log: quietLogger()}, st, obj)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		s.shutdownWaiters()
		ts.Close()
		cancel()
		if err := s.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
		_ = st.Close()
		_ = obj.Close()
	})
	return &env{t: t, s: s, ts: ts, objects: obj, http: ts.Client()}
}

// TestMetricsAcrossReplicas: two managers on one PostgreSQL show the same
// gauges, and each counts the tasks it created and the task ends it
// committed, not those it heard of from the other, so that summing over
// replicas counts each once.
func TestMetricsAcrossReplicas(t *testing.T) {
	url, objects := pgtest.URL(t), filepath.Join(t.TempDir(), "objects")
	a, b := newReplica(t, url, objects), newReplica(t, url, objects)
	var (
		mu            sync.Mutex
		remote        []string
		remoteCreated []store.Change
	)
	unsubscribe := b.s.store.Subscribe(func(c store.Change) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case c.Kind == store.ChangeTaskEnded && c.Remote:
			remote = append(remote, c.TaskID)
		case c.Kind == store.ChangeTaskCreated && c.Remote:
			remoteCreated = append(remoteCreated, c)
		}
	})
	defer unsubscribe()

	run := func(e *env, name string) string {
		t.Helper()
		d := e.register(name, &client.RegisterRequest{TaskTypes: []string{"test." + name}})
		task := e.create(&client.TaskSpec{Type: "test." + name})
		leased := e.acquire(d, "wait=0&max=1").Tasks[0]
		for _, st := range []errand.State{errand.StateRunning, errand.StateSucceeded} {
			e.must(http.StatusOK, "POST", "/api/v1/tasks/"+leased.ID+"/status", d.token,
				map[string]any{"lease": leased.Lease.Token, "state": st}, nil)
		}
		return task.ID
	}
	onA := run(a, "a")
	// B hears of A's end through PostgreSQL…
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		heard := len(remote) > 0 && remote[0] == onA
		mu.Unlock()
		if heard {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica B never heard that task %s ended", onA)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A's creation reached B before its end, with its count.
	mu.Lock()
	want := store.Change{Kind: store.ChangeTaskCreated, TaskType: "test.a", TaskState: errand.StateQueued, Count: 1, Remote: true}
	if len(remoteCreated) != 1 || remoteCreated[0] != want {
		t.Errorf("replica B heard of A's creations as %+v, want [%+v]", remoteCreated, want)
	}
	mu.Unlock()
	// …then ends a task of its own, and counts that one only.
	run(b, "b")
	succeeded := func(e *env) float64 {
		return value(series(scrape(t, e.s.Handler()), "errand_tasks_finished_total")["state=succeeded"])
	}
	for _, e := range []*env{a, b} {
		deadline := time.Now().Add(10 * time.Second)
		for succeeded(e) < 1 {
			if time.Now().After(deadline) {
				t.Fatalf("a replica never counted its own task's end")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if na, nb := succeeded(a), succeeded(b); na != 1 || nb != 1 {
		t.Errorf("errand_tasks_finished_total{succeeded} = %v on A and %v on B, want 1 on each", na, nb)
	}
	// Each counts the tasks it created, not those B hears of from A.
	created := func(e *env) float64 {
		return value(series(scrape(t, e.s.Handler()), "errand_tasks_created_total")["state=queued"])
	}
	if na, nb := created(a), created(b); na != 1 || nb != 1 {
		t.Errorf("errand_tasks_created_total{queued} = %v on A and %v on B, want 1 on each", na, nb)
	}
	// Both count the same store: a task queued on B is queued on A, once
	// their counts are no older than it.
	b.create(&client.TaskSpec{Type: "test.nobody"})
	for _, e := range []*env{a, b} {
		deadline := time.Now().Add(3 * gaugeTTL)
		for {
			families := scrape(t, e.s.Handler())
			if value(series(families, "errand_tasks")["state=queued"]) == 1 {
				wantValue(t, families, "errand_delegates", "state=active", 2)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("errand_tasks{queued} never became 1 on a replica")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
