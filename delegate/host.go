package delegate

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/errandci/errand/internal/clock"
)

// hostLoad reads the 1-minute load average per CPU from procDir/loadavg.
func hostLoad(procDir string) (float64, error) {
	b, err := os.ReadFile(filepath.Join(procDir, "loadavg"))
	if err != nil {
		return 0, fmt.Errorf("read load average: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("read load average: empty %s", filepath.Join(procDir, "loadavg"))
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("read load average: %w", err)
	}
	return v / float64(runtime.NumCPU()), nil
}

// memAvailable reads MemAvailable from procDir/meminfo, in bytes.
func memAvailable(procDir string) (int64, error) {
	b, err := os.ReadFile(filepath.Join(procDir, "meminfo"))
	if err != nil {
		return 0, fmt.Errorf("read memory info: %w", err)
	}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("read MemAvailable: %w", err)
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("read memory info: no MemAvailable line")
}

// resources decides whether the host is over its thresholds, reading
// /proc at most once a second.
type resources struct {
	procDir string
	maxLoad float64
	minFree int64
	onErr   func(error)
	// onChange, when set, is told when the host goes over a threshold
	// (with the reason: which limit, its value and the measure) or comes
	// back under them (over false).
	onChange func(over bool, reason string)
	// clock tells when /proc was read last; the system's when nil.
	clock clock.Clock

	mu     sync.Mutex
	at     time.Time
	over   bool
	reason string
}

// Overloaded reports whether new work should be refused.
func (r *resources) Overloaded() bool {
	if r.maxLoad == 0 && r.minFree == 0 {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := clock.OrReal(r.clock).Now()
	if now.Sub(r.at) < time.Second {
		return r.over
	}
	r.at = now
	wasOver, wasReason := r.over, r.reason
	r.over, r.reason = false, ""
	if r.maxLoad > 0 {
		load, err := hostLoad(r.procDir)
		switch {
		case err != nil:
			r.onErr(err)
		case load > r.maxLoad:
			r.over, r.reason = true, fmt.Sprintf("load: the 1-minute load average per CPU is %.2f, over the --max-load limit of %g", load, r.maxLoad)
		}
	}
	if r.minFree > 0 && !r.over {
		free, err := memAvailable(r.procDir)
		switch {
		case err != nil:
			r.onErr(err)
		case free < r.minFree:
			r.over, r.reason = true, fmt.Sprintf("memory: %s available, under the --min-free-memory limit of %s", bytesText(free), bytesText(r.minFree))
		}
	}
	// The measure changes every second: tell only when the state or the
	// limit hit changes.
	if r.onChange != nil && (r.over != wasOver || limitOf(r.reason) != limitOf(wasReason)) {
		r.onChange(r.over, r.reason)
	}
	return r.over
}

// limitOf is the limit a reason names ("load" or "memory").
func limitOf(reason string) string {
	limit, _, _ := strings.Cut(reason, ":")
	return limit
}

// bytesText renders a size in binary units, e.g. 512 MiB or 1.5 GiB.
func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d %ciB", int64(v), "KMGTPE"[exp])
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[exp])
}
