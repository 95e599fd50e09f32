package jsonnetbox

import (
	"errors"
	"os/exec"
	"testing"
)

// A child that dies of SIGSEGV after using much of its memory limit (the
// runtime may fail that way when it cannot map memory) ran out of
// memory; one that dies small did not.
func TestChildErrorSegfaultNearTheLimit(t *testing.T) {
	run := func(script string) error {
		err := exec.Command("sh", "-c", script).Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("sh -c %q: %v, want it killed by a signal", script, err)
		}
		return err
	}
	l := Limits{Memory: MinMemory}
	big := run(`x=$(head -c 48000000 /dev/zero | tr '\0' a); kill -SEGV $$`)
	if err := childError(big, "SIGSEGV: segmentation violation", l); !errors.Is(err, ErrMemoryLimit) {
		t.Errorf("big child: %v, want the memory limit", err)
	}
	small := run(`kill -SEGV $$`)
	if err := childError(small, "SIGSEGV: segmentation violation", l); errors.Is(err, ErrMemoryLimit) {
		t.Errorf("small child: %v, want an evaluator failure", err)
	}
}
