package docker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// LocalOwner names a process on a host in a way that survives pid reuse:
// the host name, the pid and the process's start time (clock ticks since
// boot, from /proc). It is the value of LabelLocal.
type LocalOwner struct {
	Host  string
	PID   int
	Start uint64
}

// String is the label form, HOST:PID:START.
func (o LocalOwner) String() string { return fmt.Sprintf("%s:%d:%d", o.Host, o.PID, o.Start) }

// SelfOwner is the LocalOwner of this process.
func SelfOwner() LocalOwner {
	host, _ := os.Hostname()
	pid := os.Getpid()
	start, _ := processStart(pid)
	return LocalOwner{Host: host, PID: pid, Start: start}
}

// ParseLocalOwner reads the label form written by String.
func ParseLocalOwner(s string) (LocalOwner, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return LocalOwner{}, fmt.Errorf("owner %q: want HOST:PID:START", s)
	}
	j := strings.LastIndexByte(s[:i], ':')
	if j <= 0 {
		return LocalOwner{}, fmt.Errorf("owner %q: want HOST:PID:START", s)
	}
	pid, err := strconv.Atoi(s[j+1 : i])
	if err != nil || pid <= 0 {
		return LocalOwner{}, fmt.Errorf("owner %q: bad pid", s)
	}
	start, err := strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil {
		return LocalOwner{}, fmt.Errorf("owner %q: bad start time", s)
	}
	return LocalOwner{Host: s[:j], PID: pid, Start: start}, nil
}

// ErrOtherHost is returned by Alive for an owner on another host: whether
// it lives cannot be told from here.
var ErrOtherHost = errors.New("the owner runs on another host")

// Alive reports whether the owner process still runs: a process with its
// pid exists and started when it did (any process with its pid, when
// its start time is unknown). It returns ErrOtherHost for an owner on
// another host.
func (o LocalOwner) Alive() (bool, error) {
	host, _ := os.Hostname()
	if o.Host != host {
		return false, fmt.Errorf("%w (%s, this is %s)", ErrOtherHost, o.Host, host)
	}
	start, err := processStart(o.PID)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// A start time that could not be read when the label was written
	// cannot tell a reused pid: the process is taken for the owner.
	return o.Start == 0 || start == o.Start, nil
}

// processStart reads a process's start time, in clock ticks since boot,
// from /proc/PID/stat.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read start time of process %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields that follow start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("read start time of process %d: unexpected stat %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	// Field 22 (starttime) is the 20th after the name.
	if len(f) < 20 {
		return 0, fmt.Errorf("read start time of process %d: short stat", pid)
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read start time of process %d: %w", pid, err)
	}
	return v, nil
}
