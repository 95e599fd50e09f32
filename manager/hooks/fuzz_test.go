package hooks

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/errandci/errand"
)

// fuzzParse checks what Parse promises for any body: a trigger within
// its bounds, an *Ignored, or an invalid error; never a panic.
func fuzzParse(t *testing.T, src Source, event string, body []byte) {
	tr, err := Parse(src, event, body)
	var ig *Ignored
	switch {
	case err == nil:
		if tr.check() != nil || tr.Source != src {
			t.Fatalf("Parse returned a trigger that does not check: %+v", tr)
		}
	case errors.As(err, &ig):
	case errand.ErrorCode(err) != errand.CodeInvalid:
		t.Fatalf("Parse error %v is neither ignored nor invalid", err)
	}
}

func addSeeds(f *testing.F, names ...string) {
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzGenericPayload fuzzes the decoder of generic deliveries.
func FuzzGenericPayload(f *testing.F) {
	f.Add([]byte(`{"ref":"refs/heads/main","commit":"abc","event":"push","variables":{"A":"b"}}`))
	f.Add([]byte(`{"ref":"refs/tags/v1"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, body []byte) { fuzzParse(t, SourceGeneric, "", body) })
}

// FuzzForgePayload fuzzes the decoder of GitHub and Gitea push and
// pull-request deliveries; the first byte picks the source and event.
func FuzzForgePayload(f *testing.F) {
	addSeeds(f, "github-push.json", "github-pull_request.json", "gitea-push.json", "gitea-pull_request.json")
	f.Add([]byte(`{"ref":"refs/heads/x","after":"000","deleted":true}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		kinds := []struct {
			src   Source
			event string
		}{{SourceGitHub, "push"}, {SourceGitHub, "pull_request"}, {SourceGitea, "push"}, {SourceGitea, "pull_request"}}
		for _, k := range kinds {
			fuzzParse(t, k.src, k.event, body)
		}
	})
}
