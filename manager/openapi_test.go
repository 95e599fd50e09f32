package manager

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestRoutesMatchOpenAPI checks that the OpenAPI document describes every
// registered route and no other, and that every operation it describes
// has responses with a schema for every JSON body.
func TestRoutesMatchOpenAPI(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "api", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("parse openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi = %q, want 3.x", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			if method == "parameters" {
				continue
			}
			documented[strings.ToUpper(method)+" "+path] = true
			if m, ok := op.(map[string]any); !ok || m["responses"] == nil {
				t.Errorf("%s %s has no responses", method, path)
			}
		}
	}
	e := newEnv(t)
	registered := map[string]bool{}
	for _, r := range e.s.Routes() {
		// The mux's {$} anchors the root; OpenAPI has no such syntax.
		registered[r.Method+" "+strings.TrimSuffix(r.Pattern, "{$}")] = true
	}
	var missing, extra []string
	for k := range registered {
		if !documented[k] {
			missing = append(missing, k)
		}
	}
	for k := range documented {
		if !registered[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("routes missing from openapi.yaml: %v", missing)
	}
	if len(extra) > 0 {
		t.Errorf("openapi.yaml describes routes the server does not have: %v", extra)
	}
	if len(registered) < 18 {
		t.Errorf("only %d routes registered", len(registered))
	}
}
