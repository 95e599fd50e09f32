package storetest

import (
	"fmt"
	"strings"

	"github.com/errandci/errand"
)

// testLogReadAcrossAppends checks that lines read back exactly as they
// were appended, whatever bytes they hold, from any offset and with any
// limit, across the boundaries of many appends of different sizes, some
// of them retries that overlap what is stored.
func testLogReadAcrossAppends(h *harness) {
	d := h.register("d1")
	h.create(task("t"))
	leased := h.acquireOne(d, "t")
	h.report(leased, errand.StateRunning)

	odd := []string{"", "a:b", "12:", "line\nwith newline", "tab\tand \r", "ünïcödé ✓", "0:", ":", strings.Repeat("x", 70000)}
	var want []string
	for i := 0; len(want) < 120; i++ {
		size := 1 + (i*7)%13
		batch := make([]string, size)
		for j := range batch {
			batch[j] = fmt.Sprintf("%d/%d %s", i, j, odd[(i+j)%len(odd)])
		}
		// Every third append is sent again with the last line stored
		// before it, as a client retrying over a lost answer does.
		offset := int64(len(want))
		if i%3 == 2 && len(want) > 0 {
			batch = append([]string{want[len(want)-1]}, batch...)
			offset--
		}
		next, err := h.appendLog(leased, offset, batch...)
		if err != nil {
			h.t.Fatalf("append %d at %d: %v", i, offset, err)
		}
		want = append(want, batch[int64(len(want))-offset:]...)
		if next != int64(len(want)) {
			h.t.Fatalf("append %d: next %d, want %d", i, next, len(want))
		}
	}
	if got := h.readLog("t", 0, 0); !sameStrings(got, want) {
		h.t.Fatalf("whole log differs: %d lines, want %d", len(got), len(want))
	}
	for _, offset := range []int{0, 1, 2, 13, 14, 50, 99, 119, 120, 121, 500} {
		for _, limit := range []int{1, 2, 7, 30, 1000} {
			got := h.readLog("t", int64(offset), limit)
			lo := min(offset, len(want))
			hi := min(lo+limit, len(want))
			if !sameStrings(got, want[lo:hi]) {
				h.t.Fatalf("LogRead(%d, %d) = %d lines %.60q, want %d lines %.60q", offset, limit, len(got), got, hi-lo, want[lo:hi])
			}
		}
	}
	if got := h.get("t"); got.LogLines != int64(len(want)) {
		h.t.Fatalf("log_lines = %d, want %d", got.LogLines, len(want))
	}
}
