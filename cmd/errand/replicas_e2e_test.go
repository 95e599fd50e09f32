package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
	"github.com/errandci/errand/manager/ost/s3/s3test"
	"github.com/errandci/errand/manager/store/postgres/pgtest"
)

// replicaSet is several `errand manager` processes sharing one PostgreSQL
// schema and one S3 base path.
type replicaSet struct {
	managers []*testenv.Manager
	admin    []*client.HTTP
	regToken string
}

// startReplicas starts n managers on a fresh schema and base path, with
// the same tokens, fast heartbeats and a short lease.
func startReplicas(t testing.TB, n int) *replicaSet {
	t.Helper()
	pg := pgtest.URL(t)
	s3c := s3test.Config(t)
	objects := fmt.Sprintf("s3://%s/%s?endpoint=%s&secure=false", s3c.Bucket, s3c.Base, s3c.Endpoint)
	admin, reg := strings.Repeat("a", 40), strings.Repeat("r", 40)
	rs := &replicaSet{regToken: reg}
	bin := testenv.Binary(t)
	for i := 0; i < n; i++ {
		m := testenv.StartManager(t, bin, "--store", pg, "--objects", objects,
			"--admin-token", admin, "--registration-token", reg,
			"--heartbeat-interval", "250ms", "--lease-ttl", "1500ms", "--sweep-interval", "100ms")
		rs.managers = append(rs.managers, m)
		rs.admin = append(rs.admin, testenv.Client(t, m.URL, admin))
	}
	return rs
}

// replicaDelegate is a delegate driven by the test that talks to one
// replica at a time and moves to the next one when its replica is gone.
type replicaDelegate struct {
	id      string
	clients []*client.HTTP // one per replica
	rs      *replicaSet
	at      atomic.Int32 // index of the replica it talks to
	dead    *[]atomic.Bool

	mu   sync.Mutex
	held map[string]bool // tasks acquired and not yet reported as ended
}

// hold records tasks the delegate was given: its heartbeats name them
// until release.
func (d *replicaDelegate) hold(tasks []*client.Task) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.held == nil {
		d.held = map[string]bool{}
	}
	for _, tk := range tasks {
		d.held[tk.ID] = true
	}
}

func (d *replicaDelegate) release(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.held, id)
}

// heartbeats does what every delegate does while it holds tasks: a
// heartbeat each interval naming them, which renews their leases. A
// delegate that acquires four tasks and works them one after the other
// would otherwise lose the leases of the last ones whenever the first
// take longer than the lease TTL (as they do on a loaded machine), and a
// task could use up its attempts that way. It returns when ctx ends.
func (d *replicaDelegate) heartbeats(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		d.mu.Lock()
		running := make([]string, 0, len(d.held))
		for id := range d.held {
			running = append(running, id)
		}
		d.mu.Unlock()
		_ = d.call(ctx, func(ctx context.Context, c *client.HTTP) error {
			_, err := c.Heartbeat(ctx, d.id, &client.HeartbeatRequest{Running: running})
			return err
		})
	}
}

func (d *replicaDelegate) client() *client.HTTP { return d.clients[d.at.Load()] }

// call runs fn against the delegate's replica, moving on to the next live
// replica when the call fails for another reason than the API's answer.
func (d *replicaDelegate) call(ctx context.Context, fn func(ctx context.Context, c *client.HTTP) error) error {
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := fn(cctx, d.client())
		cancel()
		// An answer cut off by the replica's death reaches the client as
		// an internal or unavailable error: like a refused connection,
		// it is a passing failure, tried on the next replica (a repeated
		// report is a no-op).
		if err == nil || !errand.Retryable(err) {
			return err
		}
		n := int32(len(d.rs.managers))
		next := (d.at.Load() + 1) % n
		for (*d.dead)[next].Load() {
			next = (next + 1) % n
		}
		d.at.Store(next)
	}
	return ctx.Err()
}

// outcome is what the delegates saw the API accept for one task.
type outcome struct {
	mu        sync.Mutex
	successes map[string]map[string]bool  // task → leases whose success was accepted
	lines     map[string]map[int64]string // task → offset → acknowledged line
	refused   atomic.Int64                // reports refused as lease_lost
}

func (o *outcome) success(task, lease string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.successes[task] == nil {
		o.successes[task] = map[string]bool{}
	}
	o.successes[task][lease] = true
}

func (o *outcome) ack(task string, offset int64, lines []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.lines[task] == nil {
		o.lines[task] = map[int64]string{}
	}
	for i, l := range lines {
		o.lines[task][offset+int64(i)] = l
	}
}

// work runs one leased task: running, two log lines, succeeded.
func (d *replicaDelegate) work(ctx context.Context, tk *client.Task, out *outcome) {
	lease := tk.Lease.Token
	report := func(st errand.State, result json.RawMessage) error {
		return d.call(ctx, func(ctx context.Context, c *client.HTTP) error {
			_, err := c.UpdateStatus(ctx, tk.ID, &client.StatusUpdate{Lease: lease, State: st, Result: result})
			return err
		})
	}
	if err := report(errand.StateRunning, nil); err != nil {
		if errors.Is(err, errand.ErrLeaseLost) {
			out.refused.Add(1)
		}
		return
	}
	lines := []string{fmt.Sprintf("%s attempt %d by %s", tk.ID, tk.Attempt, d.id), "second line of " + tk.ID}
	err := d.call(ctx, func(ctx context.Context, c *client.HTTP) error {
		_, err := c.AppendLogs(ctx, tk.ID, &client.LogAppend{Lease: lease, Offset: tk.LogLines, Lines: lines})
		return err
	})
	if err != nil {
		if errors.Is(err, errand.ErrLeaseLost) {
			out.refused.Add(1)
		}
		return
	}
	out.ack(tk.ID, tk.LogLines, lines)
	result, _ := json.Marshal(map[string]string{"by": d.id, "lease": lease})
	switch err := report(errand.StateSucceeded, result); {
	case err == nil:
		out.success(tk.ID, lease)
	case errors.Is(err, errand.ErrLeaseLost):
		out.refused.Add(1)
	}
}

// TestE2EReplicas runs three managers on one PostgreSQL and one MinIO with
// delegates spread over them, kills one replica in the middle of the load,
// and checks that every task ended once, that a stale lease is refused,
// that every acknowledged log line reads the same from every live replica,
// that a log is followed live from another replica than the one it is
// written to, and that a task created on one replica wakes a delegate
// long-polling another at once.
func TestE2EReplicas(t *testing.T) {
	const (
		replicas  = 3
		delegates = 6
		tasks     = 300
	)
	rs := startReplicas(t, replicas)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dead := make([]atomic.Bool, replicas)

	// A delegate serves the task types given, or any type when none is.
	newDelegate := func(name string, at int, types ...string) *replicaDelegate {
		c := testenv.Client(t, rs.managers[at].URL, rs.regToken)
		reg, err := c.Register(ctx, &client.RegisterRequest{Name: name, Hostname: "e2e", Capacity: 4, TaskTypes: types})
		if err != nil {
			t.Fatalf("register %s on replica %d: %v", name, at, err)
		}
		d := &replicaDelegate{id: reg.ID, rs: rs, dead: &dead}
		for _, m := range rs.managers {
			d.clients = append(d.clients, testenv.Client(t, m.URL, reg.Token))
		}
		d.at.Store(int32(at))
		return d
	}

	t.Run("CrossReplicaWakeUp", func(t *testing.T) {
		d := newDelegate("waker", 1)
		got := make(chan time.Time, 1)
		go func() {
			resp, err := d.client().Acquire(ctx, d.id, &client.AcquireRequest{Wait: errand.Duration(20 * time.Second), Max: 1})
			if err == nil && len(resp.Tasks) == 1 {
				got <- time.Now()
				return
			}
			close(got)
		}()
		// Let the long-poll settle on replica 1 before the task appears.
		time.Sleep(300 * time.Millisecond)
		created := time.Now()
		if _, err := rs.admin[0].CreateTasks(ctx, []*client.TaskSpec{{ID: "wake", Type: "wake"}}); err != nil {
			t.Fatal(err)
		}
		at, ok := <-got
		if !ok {
			t.Fatal("the long-poll on replica 1 ended without the task created on replica 0")
		}
		// A long-poll that was not woken would return only after its
		// 20s wait.
		if lag := at.Sub(created); lag > 2*time.Second {
			t.Fatalf("task created on replica 0 reached replica 1's long-poll after %s", lag)
		}
	})

	t.Run("FollowFromAnotherReplica", func(t *testing.T) {
		d := newDelegate("writer", 0)
		if _, err := rs.admin[1].CreateTasks(ctx, []*client.TaskSpec{{ID: "followed", Type: "follow"}}); err != nil {
			t.Fatal(err)
		}
		var tk *client.Task
		for tk == nil && ctx.Err() == nil {
			resp, err := d.client().Acquire(ctx, d.id, &client.AcquireRequest{Wait: errand.Duration(time.Second), Max: 1})
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range resp.Tasks {
				if x.ID == "followed" {
					tk = x
				}
			}
		}
		rec := newLineRecorder()
		followDone := make(chan error, 1)
		go func() {
			followDone <- rs.admin[2].TaskLogs(ctx, "followed", &client.LogOptions{Follow: true}, rec)
		}()
		c := d.client()
		if _, err := c.UpdateStatus(ctx, tk.ID, &client.StatusUpdate{Lease: tk.Lease.Token, State: errand.StateRunning}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			line := fmt.Sprintf("live line %d", i)
			if _, err := c.AppendLogs(ctx, tk.ID, &client.LogAppend{Lease: tk.Lease.Token, Offset: int64(i), Lines: []string{line}}); err != nil {
				t.Fatal(err)
			}
			rec.waitFor(t, line, 10*time.Second)
		}
		if _, err := c.UpdateStatus(ctx, tk.ID, &client.StatusUpdate{Lease: tk.Lease.Token, State: errand.StateSucceeded}); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-followDone:
			if err != nil {
				t.Fatalf("follow on replica 2: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("follow on replica 2 did not end when the task ended on replica 0")
		}
	})

	t.Run("RunFollowedFromAnotherReplica", func(t *testing.T) {
		// A real delegate on replica 0, the run submitted to replica 1,
		// followed live from replica 2.
		startDelegate(t, rs.managers[0], "run-runner", t.TempDir(), "--token", rs.regToken,
			"--task-type", errand.TypeExecInitialize, "--task-type", errand.TypeExecExecute, "--task-type", errand.TypeExecCleanup)
		const config = `stages:
  - name: build
    steps:
      - name: tick
        commands: ['echo tick one', 'sleep 0.3', 'echo tick two']
  - name: after
    depends: [build]
    steps:
      - name: done
        commands: ['echo after build']
`
		run, err := rs.admin[1].CreateRun(ctx, &client.RunRequest{Config: config, Filename: "config.yml"})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		code, err := followRun(ctx, rs.admin[2], run.ID, &out, followOptions{})
		if err != nil || code != 0 {
			t.Fatalf("following the run from replica 2 = %d, %v:\n%s", code, err, out.String())
		}
		for _, want := range []string{"build/tick | tick one", "build/tick | tick two", "after/done | after build", "success"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("followed output lacks %q:\n%s", want, out.String())
			}
		}
	})

	t.Run("LoadWithReplicaKilled", func(t *testing.T) {
		out := &outcome{successes: map[string]map[string]bool{}, lines: map[string]map[int64]string{}}
		// A delegate on replica 0 that takes a task and falls silent when
		// replica 0 dies: its lease expires, another delegate finishes the
		// task, and its late report must be refused.
		// It serves only its own type: a task an earlier subtest left in
		// the queue (its delegate lost) must not be the one it holds.
		zombie := newDelegate("zombie", 0, "zombie")
		if _, err := rs.admin[0].CreateTasks(ctx, []*client.TaskSpec{{ID: "zombie-task", Type: "zombie"}}); err != nil {
			t.Fatal(err)
		}
		var held *client.Task
		for held == nil && ctx.Err() == nil {
			resp, err := zombie.client().Acquire(ctx, zombie.id, &client.AcquireRequest{Wait: errand.Duration(time.Second), Max: 1})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Tasks) == 1 {
				held = resp.Tasks[0]
			}
		}

		specs := make([]*client.TaskSpec, tasks)
		for i := range specs {
			specs[i] = &client.TaskSpec{ID: fmt.Sprintf("load-%03d", i), Type: "load"}
		}
		// Spread the creation over the replicas.
		for r := 0; r < replicas; r++ {
			lo, hi := r*tasks/replicas, (r+1)*tasks/replicas
			if _, err := rs.admin[r].CreateTasks(ctx, specs[lo:hi]); err != nil {
				t.Fatalf("create on replica %d: %v", r, err)
			}
		}

		var (
			wg   sync.WaitGroup
			done atomic.Int64
		)
		wctx, stop := context.WithCancel(ctx)
		defer stop()
		for i := 0; i < delegates; i++ {
			d := newDelegate(fmt.Sprintf("worker-%d", i), i%replicas)
			wg.Add(2)
			go func() {
				defer wg.Done()
				d.heartbeats(wctx, 250*time.Millisecond)
			}()
			go func() {
				defer wg.Done()
				for wctx.Err() == nil {
					var resp *client.AcquireResponse
					err := d.call(wctx, func(ctx context.Context, c *client.HTTP) error {
						var err error
						resp, err = c.Acquire(ctx, d.id, &client.AcquireRequest{Wait: errand.Duration(500 * time.Millisecond), Max: 4})
						return err
					})
					if err != nil {
						continue
					}
					d.hold(resp.Tasks)
					for _, tk := range resp.Tasks {
						d.work(wctx, tk, out)
						d.release(tk.ID)
						done.Add(1)
					}
				}
			}()
		}

		poll(t, "a third of the load done", time.Minute, func() bool { return done.Load() >= tasks/3 })
		dead[0].Store(true)
		rs.managers[0].Kill()

		// Every task ends succeeded, as seen from the surviving replicas,
		// the zombie's too (its lease expired and a worker took it): the
		// workers stop only then.
		poll(t, "every task succeeded", 90*time.Second, func() bool {
			list, err := rs.admin[1].ListTasks(ctx, &client.TaskFilter{Type: "load",
				States: []errand.State{errand.StateSucceeded}, Limit: 1000})
			if err != nil || len(list.Items) != tasks {
				return false
			}
			tk, err := rs.admin[1].GetTask(ctx, "zombie-task")
			return err == nil && tk.State.Terminal()
		})
		stop()
		wg.Wait()

		// The zombie's lease expired long ago and the task went to a
		// worker: a report under the old lease is refused.
		final := waitState(t, rs.admin[2], "zombie-task", 10*time.Second, errand.StateSucceeded)
		zombie.at.Store(1)
		_, err := zombie.client().UpdateStatus(ctx, held.ID, &client.StatusUpdate{Lease: held.Lease.Token,
			State: errand.StateSucceeded, Result: json.RawMessage(`{"by":"zombie"}`)})
		if !errors.Is(err, errand.ErrLeaseLost) {
			t.Fatalf("stale report after the lease moved on: err = %v, want lease_lost", err)
		}
		if final.Attempt < 2 || final.DelegateID == zombie.id {
			t.Fatalf("zombie task ended with attempt %d by %s, want a later attempt by another delegate", final.Attempt, final.DelegateID)
		}

		out.mu.Lock()
		defer out.mu.Unlock()
		for i := range specs {
			id := specs[i].ID
			leases := out.successes[id]
			if len(leases) != 1 {
				t.Errorf("task %s: success accepted under %d leases, want exactly 1", id, len(leases))
				continue
			}
			var lease string
			for l := range leases {
				lease = l
			}
			for r := 1; r < replicas; r++ {
				tk, err := rs.admin[r].GetTask(ctx, id)
				if err != nil {
					t.Fatalf("get %s from replica %d: %v", id, r, err)
				}
				var res struct{ By, Lease string }
				if err := json.Unmarshal(tk.Result, &res); err != nil || res.Lease != lease || res.By != tk.DelegateID {
					t.Errorf("task %s on replica %d: result %s, delegate %s; want the result of lease %s", id, r, tk.Result, tk.DelegateID, lease)
				}
			}
		}
		// Every acknowledged line, whether the log is still in the
		// database or sealed into MinIO, reads the same from every live
		// replica.
		for id, lines := range out.lines {
			for r := 1; r < replicas; r++ {
				got := strings.Split(strings.TrimSuffix(taskLog(t, rs.admin[r], id), "\n"), "\n")
				for off, want := range lines {
					if off >= int64(len(got)) || got[off] != want {
						t.Errorf("task %s on replica %d: line %d missing or different, want %q; log:\n%s", id, r, off, want, strings.Join(got, "\n"))
					}
				}
			}
		}
		t.Logf("%d tasks, %d reports refused as lease_lost after the replica died", tasks, out.refused.Load())
	})
}
