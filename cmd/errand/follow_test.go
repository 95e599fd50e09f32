package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// followBuffer is a buffer that the follower's goroutines may share.
type followBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *followBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *followBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestFollowInProcess runs the ordering pipeline with the in-process
// manager and delegate, so that the race detector sees the follower's
// goroutines, and checks the order of what it printed.
func TestFollowInProcess(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, []byte(orderConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	var out followBuffer
	code, err := runLocal(context.Background(), &runFlags{path: cfg, env: map[string]string{}, extStr: map[string]string{},
		dataDir: filepath.Join(dir, "data")}, &out, &out)
	if err != nil || code != exitOK {
		t.Fatalf("runLocal = %d, %v:\n%s", code, err, out.String())
	}
	first, last := lineSpans(out.String())
	for step, before := range orderAfter {
		for _, b := range before {
			if last[b] > first[step] {
				t.Fatalf("%s printed before the end of %s:\n%s", step, b, out.String())
			}
		}
	}
}
