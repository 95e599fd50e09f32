package manager

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

// benchClient is a plain HTTP client with enough idle connections for
// concurrent callers.
type benchClient struct {
	base string
	c    *http.Client
}

func newBenchClient(e *env) *benchClient {
	return &benchClient{base: e.ts.URL, c: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
}

func (b *benchClient) call(method, path, token string, body, out any, want int) error {
	var r io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, b.base+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := b.c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s = %d %s", method, path, resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func specs(n int) *client.TaskBatch {
	b := &client.TaskBatch{}
	for range n {
		b.Tasks = append(b.Tasks, &client.TaskSpec{Type: "noop"})
	}
	return b
}

// BenchmarkHTTPDispatch pushes no-op tasks through the whole API: a
// producer creates them in batches while 8 delegates acquire up to 8 at a
// time and report each running, then succeeded.
func BenchmarkHTTPDispatch(b *testing.B) {
	e := newEnv(b)
	bc := newBenchClient(e)
	const acquirers, batch = 8, 200
	delegates := make([]delegate, acquirers)
	for i := range delegates {
		delegates[i] = e.register(fmt.Sprint("d", i), nil)
	}
	total := int64(b.N)
	var done atomic.Int64
	errs := make(chan error, acquirers+1)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for left := b.N; left > 0; left -= batch {
			if err := bc.call("POST", "/api/v1/tasks", testAdmin, specs(min(batch, left)), nil, 201); err != nil {
				errs <- err
				return
			}
		}
	}()
	for _, d := range delegates {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done.Load() < total {
				var a client.AcquireResponse
				if err := bc.call("POST", "/api/v1/delegates/"+d.id+"/acquire?wait=200ms&max=8", d.token, nil, &a, 200); err != nil {
					errs <- err
					return
				}
				for _, t := range a.Tasks {
					for _, st := range []errand.State{errand.StateRunning, errand.StateSucceeded} {
						if err := bc.call("POST", "/api/v1/tasks/"+t.ID+"/status", d.token, &client.StatusUpdate{Lease: t.Lease.Token, State: st}, nil, 200); err != nil {
							errs <- err
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

// BenchmarkPickupLatency measures the time from the start of a create to
// the return of an acquire that was already waiting.
func BenchmarkPickupLatency(b *testing.B) {
	e := newEnv(b)
	bc := newBenchClient(e)
	d := e.register("d", nil)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		got := make(chan error, 1)
		go func() {
			var a client.AcquireResponse
			err := bc.call("POST", "/api/v1/delegates/"+d.id+"/acquire?wait=10s&max=1", d.token, nil, &a, 200)
			if err == nil && len(a.Tasks) != 1 {
				err = fmt.Errorf("acquire returned %d tasks", len(a.Tasks))
			}
			got <- err
		}()
		b.StopTimer()
		e.waitAcquirers(1)
		b.StartTimer()
		start := time.Now()
		if err := bc.call("POST", "/api/v1/tasks", testAdmin, &client.TaskSpec{Type: "noop"}, nil, 201); err != nil {
			b.Fatal(err)
		}
		if err := <-got; err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		b.StopTimer()
		// Let the finished poll unregister before the next one starts.
		for {
			n := e.s.sched.Waiting()
			if n == 0 {
				break
			}
			time.Sleep(50 * time.Microsecond)
		}
		b.StartTimer()
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(float64(len(lat))*p))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkLogIngest appends batches of 1,000 lines through the API, from
// 4 tasks at once.
func BenchmarkLogIngest(b *testing.B) {
	e := newEnv(b)
	bc := newBenchClient(e)
	d := e.register("d", nil)
	const workers, lines = 4, 1000
	var leased []*errand.Task
	for len(leased) < workers {
		e.create(&client.TaskSpec{Type: "noop"})
		leased = append(leased, e.acquire(d, "max=1").Tasks...)
	}
	batch := make([]string, lines)
	for i := range batch {
		batch[i] = fmt.Sprintf("%05d %s", i, strings.Repeat("log output ", 6))
	}
	var next atomic.Int64
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for _, t := range leased {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var offset int64
			for next.Add(1) <= int64(b.N) {
				var res client.LogAppendResult
				if err := bc.call("POST", "/api/v1/tasks/"+t.ID+"/logs", d.token, &client.LogAppend{Lease: t.Lease.Token, Offset: offset, Lines: batch}, &res, 200); err != nil {
					errs <- err
					return
				}
				offset = res.Next
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
	b.ReportMetric(float64(b.N*lines)/elapsed.Seconds(), "lines/s")
}
