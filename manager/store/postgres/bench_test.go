package postgres_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager"
	"github.com/errandci/errand/manager/ost/posix"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/postgres"
	"github.com/errandci/errand/manager/store/postgres/pgtest"
	"github.com/errandci/errand/manager/store/storetest"
)

const (
	benchAdmin = "bench-admin-token-0123456789abcdef"
	benchReg   = "bench-registration-token-0123456789"
)

// replicas starts n in-process managers, each with its own store on one
// fresh schema, served over loopback HTTP; it returns their base URLs.
func replicas(b *testing.B, n int) []string {
	b.Helper()
	url := pgtest.URL(b)
	log := logrus.New()
	log.SetOutput(io.Discard)
	var urls []string
	for i := 0; i < n; i++ {
		st, err := postgres.Open(context.Background(), url, postgres.WithLogger(log))
		if err != nil {
			b.Fatal(err)
		}
		objects, err := posix.New(filepath.Join(b.TempDir(), "objects"))
		if err != nil {
			b.Fatal(err)
		}
		s, err := manager.New(manager.Config{AdminToken: benchAdmin, RegistrationToken: benchReg, Log: log}, st, objects)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if err := s.Start(ctx); err != nil {
			b.Fatal(err)
		}
		ts := httptest.NewServer(s.Handler())
		b.Cleanup(func() {
			cancel()
			ts.CloseClientConnections()
			ts.Close()
			if err := s.Stop(context.Background()); err != nil {
				b.Errorf("stop: %v", err)
			}
			_ = st.Close()
			_ = objects.Close()
		})
		urls = append(urls, ts.URL)
	}
	return urls
}

// httpClient is a plain JSON client with enough idle connections for
// concurrent callers.
var httpClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}}

func call(ctx context.Context, method, url, token string, body, out any, want int) error {
	var r io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s = %d %s", method, url, resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

type benchDelegate struct {
	url, id, token string
}

func register(b *testing.B, url, name string) benchDelegate {
	b.Helper()
	var reg client.Registration
	if err := call(context.Background(), "POST", url+"/api/v1/delegates", benchReg,
		&client.RegisterRequest{Name: name, Capacity: 64}, &reg, 201); err != nil {
		b.Fatal(err)
	}
	return benchDelegate{url: url, id: reg.ID, token: reg.Token}
}

// BenchmarkHTTPDispatch pushes no-op tasks through the API of 1 and 3
// managers on one PostgreSQL: a producer creates them in batches on each
// replica in turn while 8 delegates spread over the replicas acquire up
// to 8 at a time and report each running, then succeeded. It reports
// tasks per second.
func BenchmarkHTTPDispatch(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) { benchDispatch(b, n) })
	}
}

func benchDispatch(b *testing.B, n int) {
	const acquirers, batch = 8, 200
	urls := replicas(b, n)
	delegates := make([]benchDelegate, acquirers)
	for i := range delegates {
		delegates[i] = register(b, urls[i%n], fmt.Sprint("d", i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	total := int64(b.N)
	var (
		done atomic.Int64
		wg   sync.WaitGroup
		errs = make(chan error, acquirers+1)
	)
	b.ResetTimer()
	start := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i, left := 0, b.N; left > 0; i, left = i+1, left-batch {
			specs := &client.TaskBatch{}
			for range min(batch, left) {
				specs.Tasks = append(specs.Tasks, &client.TaskSpec{Type: "noop"})
			}
			if err := call(ctx, "POST", urls[i%n]+"/api/v1/tasks", benchAdmin, specs, nil, 201); err != nil {
				errs <- err
				cancel()
				return
			}
		}
	}()
	for _, d := range delegates {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done.Load() < total && ctx.Err() == nil {
				var a client.AcquireResponse
				if err := call(ctx, "POST", d.url+"/api/v1/delegates/"+d.id+"/acquire?wait=200ms&max=8", d.token, nil, &a, 200); err != nil {
					errs <- err
					cancel()
					return
				}
				for _, t := range a.Tasks {
					for _, st := range []errand.State{errand.StateRunning, errand.StateSucceeded} {
						if err := call(ctx, "POST", d.url+"/api/v1/tasks/"+t.ID+"/status", d.token,
							&client.StatusUpdate{Lease: t.Lease.Token, State: st}, nil, 200); err != nil {
							errs <- err
							cancel()
							return
						}
					}
					done.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tasks/s")
}

// BenchmarkPickup measures how long a task created on one replica takes
// to reach a delegate long-polling another (the same one with a single
// replica): from sending the create to the acquire's answer. It reports
// the median and the 99th percentile.
func BenchmarkPickup(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) { benchPickup(b, n) })
	}
}

func benchPickup(b *testing.B, n int) {
	urls := replicas(b, n)
	d := register(b, urls[n-1], "waiter")
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got := make(chan error, 1)
		var at time.Time
		go func() {
			var a client.AcquireResponse
			err := call(ctx, "POST", d.url+"/api/v1/delegates/"+d.id+"/acquire?wait=10s&max=1", d.token, nil, &a, 200)
			at = time.Now()
			if err == nil && len(a.Tasks) != 1 {
				err = fmt.Errorf("acquire returned %d tasks", len(a.Tasks))
			}
			if err == nil {
				t := a.Tasks[0]
				for _, st := range []errand.State{errand.StateRunning, errand.StateSucceeded} {
					if err = call(ctx, "POST", d.url+"/api/v1/tasks/"+t.ID+"/status", d.token,
						&client.StatusUpdate{Lease: t.Lease.Token, State: st}, nil, 200); err != nil {
						break
					}
				}
			}
			got <- err
		}()
		// Let the long-poll park before the task appears.
		b.StopTimer()
		time.Sleep(5 * time.Millisecond)
		b.StartTimer()
		sent := time.Now()
		if err := call(ctx, "POST", urls[0]+"/api/v1/tasks", benchAdmin, &client.TaskSpec{Type: "noop"}, nil, 201); err != nil {
			b.Fatal(err)
		}
		if err := <-got; err != nil {
			b.Fatal(err)
		}
		lat = append(lat, at.Sub(sent))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkLogAppend appends b.N batches of 1,000 lines straight to the
// store, spread over four running tasks written to at once, the way
// delegates stream build output. It reports lines per second.
func BenchmarkLogAppend(b *testing.B) {
	const tasks, lines = 4, 1000
	ctx := context.Background()
	s := open(b, pgtest.URL(b))
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	d, err := s.DelegateRegister(ctx, store.DelegateRegisterParams{
		Delegate: &errand.Delegate{ID: "d", Name: "bench", Capacity: tasks}, TokenHash: "h", Now: now})
	if err != nil {
		b.Fatal(err)
	}
	specs := make([]*errand.Task, tasks)
	for i := range specs {
		specs[i] = &errand.Task{ID: fmt.Sprint("t", i), Type: "bench.log", MaxAttempts: 1}
	}
	if _, err := s.TaskCreate(ctx, store.TaskCreateParams{Tasks: specs, Now: now}); err != nil {
		b.Fatal(err)
	}
	leased, err := s.TaskAcquire(ctx, store.TaskAcquireParams{Delegate: d, Max: tasks, Now: now})
	if err != nil || len(leased) != tasks {
		b.Fatalf("acquire: %d tasks, %v", len(leased), err)
	}
	batch := make([]string, lines)
	for i := range batch {
		batch[i] = fmt.Sprintf("%05d %s", i, strings.Repeat("log output ", 6))
	}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		errs = make(chan error, tasks)
	)
	b.ResetTimer()
	for _, t := range leased {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var offset int64
			for next.Add(1) <= int64(b.N) {
				end, err := s.LogAppend(ctx, store.LogAppendParams{TaskID: t.ID, DelegateID: d.ID,
					LeaseToken: t.Lease.Token, Offset: offset, Lines: batch, Now: now})
				if err != nil {
					errs <- err
					return
				}
				offset = end
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N*lines)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkBurnDown is the store-alone burn-down (storetest.BurnDown) on
// a fresh schema of ERRAND_TEST_POSTGRES; point it at a durable server
// to measure (the test server may run without fsync):
// go test -run '^$' -bench BurnDown -benchtime 1x.
func BenchmarkBurnDown(b *testing.B) {
	storetest.BurnDown(b, func(b *testing.B) store.Store { return open(b, pgtest.URL(b)) })
}
