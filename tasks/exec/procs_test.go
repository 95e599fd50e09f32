package exec

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/errandci/errand/internal/proc"
)

// group is a process group started by the test.
type group struct {
	cmd    *osexec.Cmd
	start  uint64
	exited chan struct{}
}

func startGroup(t *testing.T) *group {
	t.Helper()
	cmd := osexec.Command("sleep", "300")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &group{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(g.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-g.exited
	})
	st, err := proc.Read("/proc", cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	g.start = st.Start
	return g
}

func (g *group) killed(within time.Duration) bool {
	select {
	case <-g.exited:
		return true
	case <-time.After(within):
		return false
	}
}

func writeRecord(t *testing.T, dir string, rec stepRecord) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(rec)
	path := filepath.Join(dir, strconv.Itoa(rec.PGID)+".json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// deadPID is the pid of a process that has ended.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := osexec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// KillLeftovers kills the recorded groups of a process that is gone when
// their leader is the recorded one, and leaves alone a group whose id
// now names another process and the records of a process still running.
func TestKillLeftovers(t *testing.T) {
	h := New(t.TempDir())
	boot := proc.BootID()
	left, reused, sibling := startGroup(t), startGroup(t), startGroup(t)

	dead := filepath.Join(h.Steps, fmt.Sprintf("%d-%d", deadPID(t), 12345))
	writeRecord(t, dead, stepRecord{PGID: left.cmd.Process.Pid, Start: left.start, BootID: boot})
	writeRecord(t, dead, stepRecord{PGID: reused.cmd.Process.Pid, Start: reused.start + 1, BootID: boot})
	// A sibling delegate still running (here: the sleeping process) keeps
	// its records and its steps.
	live := filepath.Join(h.Steps, fmt.Sprintf("%d-%d", sibling.cmd.Process.Pid, sibling.start))
	kept := writeRecord(t, live, stepRecord{PGID: sibling.cmd.Process.Pid, Start: sibling.start, BootID: boot})

	if err := h.KillLeftovers(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !left.killed(5 * time.Second) {
		t.Fatal("the leftover group still runs")
	}
	if reused.killed(100*time.Millisecond) || sibling.killed(0) {
		t.Fatal("a group that is not a leftover was killed")
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Fatalf("records of the process that is gone: %v; want removed", err)
	}
	if _, err := os.Stat(kept); err != nil {
		t.Fatalf("records of the running sibling: %v; want kept", err)
	}
}
