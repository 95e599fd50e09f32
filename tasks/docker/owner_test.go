package docker_test

import (
	"errors"
	"os"
	"os/exec"
	"testing"

	"github.com/errandci/errand/tasks/docker"
)

// An owner label names a live process until it exits, and never a later
// process that got its pid.
func TestLocalOwner(t *testing.T) {
	self := docker.SelfOwner()
	back, err := docker.ParseLocalOwner(self.String())
	if err != nil || back != self || self.Start == 0 {
		t.Fatalf("ParseLocalOwner(%q) = %+v, %v", self.String(), back, err)
	}
	if alive, err := self.Alive(); err != nil || !alive {
		t.Fatalf("this process: alive %v, %v", alive, err)
	}
	reused := self
	reused.Start++
	if alive, err := reused.Alive(); err != nil || alive {
		t.Fatalf("a process with this pid that started at another time: alive %v, %v", alive, err)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	gone := docker.LocalOwner{Host: self.Host, PID: cmd.Process.Pid, Start: 1}
	if alive, err := gone.Alive(); err != nil || alive {
		t.Fatalf("an exited process: alive %v, %v", alive, err)
	}
	elsewhere := docker.LocalOwner{Host: "other-" + self.Host, PID: os.Getpid(), Start: self.Start}
	if _, err := elsewhere.Alive(); !errors.Is(err, docker.ErrOtherHost) {
		t.Fatalf("an owner on another host: %v", err)
	}
	for _, bad := range []string{"", "host", "host:1", "host:x:1", "host:1:x", ":1:1", "host:-1:1"} {
		if o, err := docker.ParseLocalOwner(bad); err == nil {
			t.Errorf("ParseLocalOwner(%q) = %+v", bad, o)
		}
	}
}
