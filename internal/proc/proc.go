// Package proc reads what Linux says of a process in /proc/PID/stat: the
// fields that tell a live process from one whose pid was reused (its
// start time since boot), its process group and its CPU time.
package proc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Stat is what Read takes from /proc/PID/stat.
type Stat struct {
	// State is the process state letter (R, S, Z, …).
	State string
	// PGRP is the process group id.
	PGRP int
	// UTime and STime are the user and system CPU time in clock ticks.
	UTime, STime int64
	// Start is the start time in clock ticks since boot: with the pid
	// it names one process of one boot.
	Start uint64
}

// Zombie reports whether the process has ended and waits to be reaped.
func (s Stat) Zombie() bool { return s.State == "Z" || s.State == "X" }

// Read reads procDir/PID/stat ("/proc" on a live system). An error
// wrapping fs.ErrNotExist says there is no such process.
func Read(procDir string, pid int) (Stat, error) {
	path := filepath.Join(procDir, strconv.Itoa(pid), "stat")
	b, err := os.ReadFile(path)
	if err != nil {
		return Stat{}, fmt.Errorf("read %s: %w", path, err)
	}
	// The command name, field 2, may hold spaces and parentheses: the
	// fields that follow start after the last ')', with field 3 (state).
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("%s: no command name", path)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return Stat{}, fmt.Errorf("%s: %d fields", path, len(f)+2)
	}
	pgrp, err1 := strconv.Atoi(f[2])
	utime, err2 := strconv.ParseInt(f[11], 10, 64)
	stime, err3 := strconv.ParseInt(f[12], 10, 64)
	start, err4 := strconv.ParseUint(f[19], 10, 64)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return Stat{}, fmt.Errorf("%s: %w", path, err)
	}
	return Stat{State: f[0], PGRP: pgrp, UTime: utime, STime: stime, Start: start}, nil
}

// BootID names the current boot: start times count from it.
func BootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}
