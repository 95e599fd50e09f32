package manager

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/errandci/errand/client"
)

// wideConfig is a pipeline of n independent stages of one step each.
func wideConfig(n int) string {
	var b strings.Builder
	b.WriteString("stages:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - name: s%d\n    steps:\n      - name: a\n        commands: [echo a]\n", i)
	}
	return b.String()
}

// BenchmarkRunList lists a page of 10 runs of N stages each, as
// GET /api/v1/runs?limit=10 does.
func BenchmarkRunList(b *testing.B) {
	for _, stages := range []int{100, 1000} {
		b.Run(fmt.Sprintf("runs=10/stages=%d", stages), func(b *testing.B) {
			e := newEnv(b)
			config := wideConfig(stages)
			for range 10 {
				e.must(http.StatusCreated, "POST", "/api/v1/runs", testAdmin,
					&client.RunRequest{Config: config, Filename: "config.yml"}, nil)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				var l client.RunList
				e.must(http.StatusOK, "GET", "/api/v1/runs?limit=10", testAdmin, nil, &l)
				if len(l.Items) != 10 {
					b.Fatalf("listed %d runs, want 10", len(l.Items))
				}
			}
		})
	}
}
