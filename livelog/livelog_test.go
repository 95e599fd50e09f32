package livelog_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/clock"
	"github.com/errandci/errand/livelog"
)

// store is an in-test manager log: it keeps lines by offset, like the
// real one, and can fail on demand.
type store struct {
	mu       sync.Mutex
	lines    []string
	calls    []client.LogAppend
	failNext int   // fail this many calls with unavailable
	loseAll  bool  // refuse the lease
	dropAnsw int   // store the lines but lose the answer this many times
	err      error // returned with failNext
}

func (s *store) AppendLogs(_ context.Context, _ string, a *client.LogAppend) (*client.LogAppendResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, client.LogAppend{Lease: a.Lease, Offset: a.Offset, Lines: append([]string(nil), a.Lines...)})
	if s.loseAll {
		return nil, errand.Errorf(errand.CodeLeaseLost, "stale lease")
	}
	if s.failNext > 0 {
		s.failNext--
		return nil, errand.Errorf(errand.CodeUnavailable, "down")
	}
	switch {
	case a.Offset > int64(len(s.lines)):
		return nil, errand.Errorf(errand.CodeLogOffset, "gap")
	case a.Offset+int64(len(a.Lines)) <= int64(len(s.lines)):
		// a retry of lines already stored
	default:
		s.lines = append(s.lines[:a.Offset], a.Lines...)
	}
	if s.dropAnsw > 0 {
		s.dropAnsw--
		return nil, errand.Errorf(errand.CodeUnavailable, "answer lost")
	}
	return &client.LogAppendResult{Next: int64(len(s.lines))}, nil
}

func (s *store) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

func fast() backoff.BackOff { return backoff.NewConstantBackOff(time.Millisecond) }

func quiet() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func TestMasking(t *testing.T) {
	cases := []struct {
		name    string
		secrets []string
		writes  []string
		batch   int
		want    string
	}{
		{"whole", []string{"hunter2"}, []string{"pw=hunter2 ok\n"}, 0, "pw=****** ok"},
		{"split across writes", []string{"hunter2"}, []string{"pw=hun", "ter2 ok\n"}, 0, "pw=****** ok"},
		{"split byte by byte", []string{"s3cr3t"}, strings.Split("a s3cr3t b\n", ""), 0, "a ****** b"},
		{"every occurrence", []string{"abcd"}, []string{"abcd-abcd-abcd\n"}, 0, "******-******-******"},
		{"longest first", []string{"abcd", "abcdefgh"}, []string{"abcdefgh abcd\n"}, 0, "****** ******"},
		{"multi-line secret", []string{"line1\nline2"}, []string{"x line1\nline2 y\n"}, 0, "x ******\n****** y"},
		{"across batches", []string{"topsecret"}, []string{"1 topsecret\n2 top", "secret\n3 topsecret\n"}, 1, "1 ******\n2 ******\n3 ******"},
		{"unterminated last line", []string{"tokn"}, []string{"a\nb tokn"}, 0, "a\nb ******"},
		{"crlf", nil, []string{"a\r\nb\r\n"}, 0, "a\nb"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &store{}
			w := livelog.New(context.Background(), s, livelog.Config{
				TaskID: "t", Lease: "L", Secrets: tc.secrets, BatchLines: tc.batch,
				Interval: time.Millisecond, NewBackOff: fast, Log: quiet(),
			})
			for _, p := range tc.writes {
				if _, err := io.WriteString(w, p); err != nil {
					t.Fatal(err)
				}
				time.Sleep(2 * time.Millisecond) // let batches go between writes
			}
			if err := w.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := s.text(); got != tc.want {
				t.Fatalf("log = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSecretInLongLineSplit(t *testing.T) {
	s := &store{}
	w := livelog.New(context.Background(), s, livelog.Config{
		TaskID: "t", Secrets: []string{"SECRETVALUE"}, MaxLineBytes: 16, NewBackOff: fast, Log: quiet(),
	})
	line := strings.Repeat("xSECRETVALUEy", 20)
	for i := 0; i < len(line); i += 5 {
		_, _ = io.WriteString(w, line[i:min(i+5, len(line))])
	}
	_, _ = io.WriteString(w, "\n")
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := strings.ReplaceAll(s.text(), "\n", "")
	if strings.Contains(got, "SECRET") || strings.Contains(got, "VALUE") || strings.Count(got, livelog.Mask) != 20 {
		t.Fatalf("split long line leaks or misses the secret: %q", got)
	}
}

func TestOffsetsAndIdempotentRetry(t *testing.T) {
	s := &store{failNext: 2, dropAnsw: 1}
	w := livelog.New(context.Background(), s, livelog.Config{
		TaskID: "t", Lease: "L", Offset: 5, BatchLines: 3, NewBackOff: fast, Log: quiet(),
	})
	s.lines = []string{"0", "1", "2", "3", "4"} // an earlier attempt's lines
	for i := 5; i < 15; i++ {
		fmt.Fprintf(w, "%d\n", i)
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := strings.Join(strings.Fields("0 1 2 3 4 5 6 7 8 9 10 11 12 13 14"), "\n")
	if got := s.text(); got != want {
		t.Fatalf("log = %q, want %q", got, want)
	}
	if w.Offset() != 15 {
		t.Fatalf("offset = %d, want 15", w.Offset())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Every retry repeats the same batch at the same offset.
	seen := map[int64]string{}
	for _, c := range s.calls {
		if c.Lease != "L" {
			t.Fatalf("call without lease: %+v", c)
		}
		if len(c.Lines) > 3 {
			t.Fatalf("batch of %d lines, want at most 3", len(c.Lines))
		}
		b := strings.Join(c.Lines, ",")
		if prev, ok := seen[c.Offset]; ok && prev != b {
			t.Fatalf("offset %d sent with %q then %q", c.Offset, prev, b)
		}
		seen[c.Offset] = b
	}
	if len(s.calls) < 4+3 {
		t.Fatalf("%d calls; want the failed ones retried", len(s.calls))
	}
}

func TestLeaseLostStopsAndSignals(t *testing.T) {
	s := &store{loseAll: true}
	lost := make(chan struct{})
	w := livelog.New(context.Background(), s, livelog.Config{
		TaskID: "t", Interval: time.Millisecond, NewBackOff: fast, Log: quiet(),
		OnLeaseLost: func() { close(lost) },
	})
	fmt.Fprintln(w, "hello")
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("OnLeaseLost not called")
	}
	fmt.Fprintln(w, "more")
	if err := w.Close(context.Background()); err == nil {
		t.Fatal("Close after lease lost returned nil")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.calls) != 1 {
		t.Fatalf("%d calls after lease lost, want 1 and no retry", len(s.calls))
	}
}

func TestBoundedBufferWhileUnreachable(t *testing.T) {
	s := &store{failNext: 1 << 30}
	w := livelog.New(context.Background(), s, livelog.Config{
		TaskID: "t", MaxBuffered: 10, BatchLines: 5, NewBackOff: fast, Log: quiet(),
	})
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(w, "line %d\n", i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := w.Close(ctx)
	if err == nil || !strings.Contains(err.Error(), "not shipped") {
		t.Fatalf("Close = %v, want lines not shipped", err)
	}

	// Once the manager answers again, a line says how many were dropped.
	s2 := &store{failNext: 3}
	w2 := livelog.New(context.Background(), s2, livelog.Config{TaskID: "t", MaxBuffered: 2, BatchLines: 100, NewBackOff: fast, Log: quiet()})
	for i := 0; i < 5; i++ {
		fmt.Fprintf(w2, "l%d\n", i)
	}
	time.Sleep(10 * time.Millisecond)
	if err := w2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := s2.text(); got != "l0\nl1\n[errand: 3 log lines dropped while the manager was unreachable]" {
		t.Fatalf("log = %q", got)
	}
}

func TestWriteAfterClose(t *testing.T) {
	w := livelog.New(context.Background(), &store{}, livelog.Config{TaskID: "t", Log: quiet()})
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("x\n")); err == nil {
		t.Fatal("write after close succeeded")
	}
}

func TestShipsWithinInterval(t *testing.T) {
	s := &store{}
	w := livelog.New(context.Background(), s, livelog.Config{TaskID: "t", Interval: 5 * time.Millisecond, Log: quiet()})
	defer w.Close(context.Background())
	fmt.Fprintln(w, "one line")
	deadline := time.Now().Add(5 * time.Second)
	for s.text() != "one line" {
		if time.Now().After(deadline) {
			t.Fatal("a lone line was not shipped before Close")
		}
		time.Sleep(time.Millisecond)
	}
}

// A lone line waits for the batch interval on the writer's clock, which a
// test moves instead of sleeping.
func TestIntervalOnInjectedClock(t *testing.T) {
	s := &store{}
	t0 := time.Unix(0, 0)
	clk := clock.NewFake(t0)
	w := livelog.New(context.Background(), s, livelog.Config{TaskID: "t", Interval: time.Hour, Clock: clk, Log: quiet()})
	defer w.Close(context.Background())
	fmt.Fprintln(w, "one line")
	for clk.Now().Sub(t0) < time.Hour-time.Minute {
		clk.Advance(time.Minute)
		if s.text() != "" {
			t.Fatalf("shipped after %s of an hour's interval", clk.Now().Sub(t0))
		}
	}
	clk.Advance(time.Minute) // the hour is up
	deadline := time.Now().Add(5 * time.Second)
	for s.text() != "one line" {
		if time.Now().After(deadline) {
			t.Fatal("the line was not shipped once its interval passed")
		}
		time.Sleep(time.Millisecond)
	}
}
