package jsonnetbox

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets this test binary serve as the evaluator child.
func TestMain(m *testing.M) {
	ServeIfChild()
	os.Exit(m.Run())
}

func TestEvaluate(t *testing.T) {
	out, err := Evaluate(t.Context(), Request{Filename: "ok.jsonnet", Source: `{a: std.extVar('x'), b: std.native('extVarOr')('y', 'd')}`,
		ExtStr: map[string]string{"x": "1"}}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(strings.Fields(string(out)), ""); got != `{"a":"1","b":"d"}` {
		t.Errorf("output %s", out)
	}
	_, err = Evaluate(t.Context(), Request{Filename: "bad.jsonnet", Source: "{\n a: error 'boom' }"}, Limits{})
	if err == nil || !strings.Contains(err.Error(), "bad.jsonnet:2") || !strings.Contains(err.Error(), "boom") {
		t.Errorf("error of the program: %v", err)
	}
}

// loop burns CPU for minutes in little memory and stack.
const loop = `std.foldl(function(a, i) std.foldl(function(b, j) b + 1, std.range(1, 100000), a), std.range(1, 100000), 0)`

func TestEvaluateLimits(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		limits    Limits
		want      error
		msg       string
	}{
		{"tailstrict recursion", `local f(n) = if n < 0 then 0 else f(n + 1) tailstrict; {stages: [], x: f(0)}`,
			Limits{Timeout: 2 * time.Minute}, ErrStackOverflow, "stack overflow (deep recursion)"},
		{"range", `std.range(1, 1e9)`, Limits{Timeout: 2 * time.Minute}, ErrMemoryLimit, "memory limit of 256 MiB"},
		{"makeArray", `std.makeArray(1e8, function(i) i)`, Limits{Timeout: 2 * time.Minute, Memory: 128 << 20}, ErrMemoryLimit, "memory limit of 128 MiB"},
		{"loop", loop, Limits{Timeout: time.Second}, ErrTimeLimit, "time limit of 1s"},
		{"output", `std.makeArray(20000, function(i) 'xxxxxxxxxx')`, Limits{MaxOutput: 64 << 10}, ErrOutputLimit, "output limit of 64 KiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := Evaluate(t.Context(), Request{Filename: "attack.jsonnet", Source: tc.src}, tc.limits)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %v, want %v (%q)", err, tc.want, tc.msg)
			}
			t.Logf("%s after %s", err, time.Since(start))
		})
	}
}

func TestEvaluateSlotsFreed(t *testing.T) {
	// More endless programs than slots: each is killed at its limit and
	// frees its slot, so a good program still runs after them.
	errs := make(chan error, MaxRunning+2)
	for range MaxRunning + 2 {
		go func() {
			_, err := Evaluate(context.Background(), Request{Filename: "loop.jsonnet", Source: loop},
				Limits{Timeout: 2 * time.Second})
			errs <- err
		}()
	}
	for range MaxRunning + 2 {
		if err := <-errs; !errors.Is(err, ErrTimeLimit) {
			t.Errorf("endless program: %v", err)
		}
	}
	if _, err := Evaluate(t.Context(), Request{Filename: "ok.jsonnet", Source: `{}`}, Limits{}); err != nil {
		t.Fatalf("after the endless programs: %v", err)
	}
}

func TestLimitsValidate(t *testing.T) {
	if err := (Limits{Memory: 1 << 20}).Validate(); err == nil || !strings.Contains(err.Error(), "at least 64 MiB") {
		t.Errorf("tiny memory: %v", err)
	}
	if err := (Limits{Timeout: -time.Second}).Validate(); err == nil {
		t.Error("negative timeout accepted")
	}
}

func TestEvaluateWithoutEvaluator(t *testing.T) {
	mu.Lock()
	was := served
	served = false
	mu.Unlock()
	defer func() {
		mu.Lock()
		served = was
		mu.Unlock()
	}()
	if _, err := Evaluate(t.Context(), Request{Filename: "ok.jsonnet", Source: `{}`}, Limits{}); !errors.Is(err, ErrNoEvaluator) {
		t.Errorf("a program that does not serve: %v, want ErrNoEvaluator", err)
	}
}
