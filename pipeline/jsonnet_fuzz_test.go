package pipeline

import (
	"errors"
	"testing"
	"time"

	"github.com/errandci/errand/internal/jsonnetbox"
)

// FuzzJsonnetRender evaluates, decodes and validates arbitrary Jsonnet:
// whatever the program, the evaluation stays inside its limits and the
// test process survives. The seed corpus (testdata/fuzz) holds the
// programs that once crashed or exhausted the manager; add each new
// crash there.
func FuzzJsonnetRender(f *testing.F) {
	for _, seed := range []string{
		`{stages: []}`,
		`{stages: [{name: 'a', steps: [{name: 's', commands: ['echo ' + std.native('extVarOr')('who', 'x')]}]}]}`,
		`{stages: [{name: 'a', steps: [{name: 's', commands: [std.extVar('who')]}]}], b: [x * 2 for x in std.range(1, 100)]}`,
	} {
		f.Add(seed, "x")
	}
	opts := LoadOptions{Timeout: 2 * time.Second, Memory: jsonnetbox.MinMemory}
	f.Fuzz(func(t *testing.T, src, ext string) {
		opts.ExtStr = map[string]string{"who": ext}
		cfg, err := Parse("config.jsonnet", []byte(src), opts)
		if err != nil {
			if errors.Is(err, jsonnetbox.ErrNoEvaluator) {
				t.Fatal(err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			return
		}
		if _, err := Expand(cfg, ExpandOptions{RunID: "r"}); err != nil {
			return
		}
	})
}
