package main

import (
	"os"
	"testing"
)

func TestProcReaders(t *testing.T) {
	ticks, err := procCPUTicks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if ticks < 0 {
		t.Errorf("cpu ticks %d", ticks)
	}
	rss, err := procRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss < 1<<20 {
		t.Errorf("rss %d bytes: a Go test process holds more than 1 MiB", rss)
	}
	if _, err := procRSS(-1); err == nil {
		t.Error("procRSS of no process: no error")
	}
}

func TestRaiseOpenFilesRefusesBeyondHardLimit(t *testing.T) {
	if err := raiseOpenFiles(1 << 40); err == nil {
		t.Error("raising the open files limit past any hard limit: no error")
	}
	if err := raiseOpenFiles(64); err != nil {
		t.Errorf("a limit already met: %v", err)
	}
}
