package delegate

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
)

// TestResourcesSayWhichLimit checks that a refusal names the limit hit,
// its value and the measure, and is told once per change.
func TestResourcesSayWhichLimit(t *testing.T) {
	proc := t.TempDir()
	write := func(loadPerCPU float64, availKB int) {
		load := strconv.FormatFloat(loadPerCPU*float64(runtime.NumCPU()), 'f', 2, 64)
		if err := os.WriteFile(filepath.Join(proc, "loadavg"), []byte(load+" 0.5 0.5 1/100 4242\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		meminfo := "MemTotal: 100000000 kB\nMemAvailable: " + strconv.Itoa(availKB) + " kB\n"
		if err := os.WriteFile(filepath.Join(proc, "meminfo"), []byte(meminfo), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	type change struct {
		over   bool
		reason string
	}
	var told []change
	r := &resources{procDir: proc, maxLoad: 0.5, minFree: 2 << 30,
		onErr:    func(err error) { t.Error(err) },
		onChange: func(over bool, reason string) { told = append(told, change{over, reason}) }}
	steps := []struct {
		loadPerCPU float64
		availKB    int
		want       []change
	}{
		{2, 4 << 20, []change{{true, "load: the 1-minute load average per CPU is 2.00, over the --max-load limit of 0.5"}}},
		{3, 4 << 20, nil}, // the same limit: not told again
		{0.1, 1 << 10, []change{{true, "memory: 1 MiB available, under the --min-free-memory limit of 2 GiB"}}},
		{0.1, 3 << 20, []change{{false, ""}}},
	}
	for i, s := range steps {
		write(s.loadPerCPU, s.availKB)
		told = nil
		r.at = r.at.AddDate(0, 0, -1) // past the once-a-second cache
		r.Overloaded()
		if len(told) != len(s.want) || len(told) == 1 && told[0] != s.want[0] {
			t.Errorf("step %d: told %+v, want %+v", i, told, s.want)
		}
	}
}

func TestBytesText(t *testing.T) {
	for n, want := range map[int64]string{512: "512 B", 1 << 10: "1 KiB", 1536 << 20: "1.5 GiB", 1000 << 40: "1000 TiB"} {
		if got := bytesText(n); got != want {
			t.Errorf("bytesText(%d) = %q, want %q", n, got, want)
		}
	}
}
