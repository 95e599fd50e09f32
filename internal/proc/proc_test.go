package proc

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	// A command name with spaces and a parenthesis, as Linux writes it.
	stat := "4242 (a b) c) S 1 4240 4240 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 987654 1000 10 18446744073709551615\n"
	if err := os.MkdirAll(filepath.Join(dir, "4242"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "4242", "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Read(dir, 4242)
	if err != nil {
		t.Fatal(err)
	}
	want := Stat{State: "S", PGRP: 4240, UTime: 7, STime: 3, Start: 987654}
	if got != want {
		t.Errorf("Read = %+v, want %+v", got, want)
	}
	if _, err := Read(dir, 1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read of no process: %v, want fs.ErrNotExist", err)
	}
	self, err := Read("/proc", os.Getpid())
	if err != nil || self.Start == 0 || self.Zombie() {
		t.Errorf("Read of this process = %+v, %v", self, err)
	}
	if BootID() == "" {
		t.Error("no boot id")
	}
}
