package main

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/errandci/errand/client"
)

// TestE2EPipelineNumbersAcrossReplicas: 100 runs of one pipeline
// started at once through three managers on one PostgreSQL take the
// numbers 1 to 100, each once: the database decides.
func TestE2EPipelineNumbersAcrossReplicas(t *testing.T) {
	rs := startReplicas(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := rs.admin[0].CreatePipeline(ctx, &client.PipelineSpec{Name: "api",
		Config: "stages:\n  - name: build\n    steps: [{name: s, commands: [\"true\"]}]\n"}); err != nil {
		t.Fatal(err)
	}
	const n = 100
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		numbers = make([]int64, n)
		ids     = make([]string, n)
		errs    = make([]error, n)
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, err := rs.admin[i%len(rs.admin)].StartPipelineRun(ctx, "api", &client.PipelineRunRequest{Ref: "main"})
			if err != nil {
				errs[i] = err
				return
			}
			numbers[i], ids[i] = r.Number, r.ID
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("run %d through replica %d: %v", i, i%len(rs.admin), err)
		}
	}
	got := append([]int64(nil), numbers...)
	sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
	for i, num := range got {
		if num != int64(i+1) {
			t.Fatalf("numbers taken (sorted) = %v: want 1..%d, each once", got, n)
		}
	}
	// Every replica reads the same numbering back.
	for r, c := range rs.admin {
		seen := map[int64]string{}
		var before int64
		for {
			page, err := c.ListPipelineRuns(ctx, "api", &client.PipelineRunFilter{Before: before, Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			for _, run := range page.Items {
				if _, dup := seen[run.Number]; dup {
					t.Fatalf("replica %d lists number %d twice", r, run.Number)
				}
				seen[run.Number] = run.ID
			}
			if page.Next == "" {
				break
			}
			if _, err := fmt.Sscan(page.Next, &before); err != nil {
				t.Fatal(err)
			}
		}
		if len(seen) != n {
			t.Fatalf("replica %d lists %d runs, want %d", r, len(seen), n)
		}
		for i, num := range numbers {
			if seen[num] != ids[i] {
				t.Fatalf("replica %d: run %d is %s, want %s", r, num, seen[num], ids[i])
			}
		}
	}
	p, err := rs.admin[2].GetPipeline(ctx, "api")
	if err != nil || p.LastNumber != n {
		t.Fatalf("pipeline = %+v, %v: want last number %d", p, err, n)
	}
}
