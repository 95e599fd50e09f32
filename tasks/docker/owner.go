package docker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/errandci/errand/internal/proc"
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
	st, _ := proc.Read("/proc", pid)
	return LocalOwner{Host: host, PID: pid, Start: st.Start}
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
	st, err := proc.Read("/proc", o.PID)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	start := st.Start
	// A start time that could not be read when the label was written
	// cannot tell a reused pid: the process is taken for the owner.
	return o.Start == 0 || start == o.Start, nil
}
