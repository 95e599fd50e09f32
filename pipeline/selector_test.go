package pipeline

import (
	"strings"
	"testing"
)

// A stage's selector follows the rules of a task's: label keys neither
// empty nor holding '=', values without line breaks, no control
// characters.
func TestStageSelectorLabels(t *testing.T) {
	for yml, want := range map[string]string{
		"selector: {labels: {\"a=b\": x}}":   "stages[0].selector.labels (line 3): key \"a=b\": must not contain '='",
		"selector: {labels: {\"\": x}}":      "stages[0].selector.labels (line 3): a label needs a key",
		"selector: {labels: {a: \"x\\ny\"}}": "stages[0].selector.labels (line 3): \"a\": value holds the control character U+000A",
		"selector: {group: \"g\\u0000\"}":    "stages[0].selector.group (line 3): holds the control character U+0000",
		"selector: {arch: \"amd64\\r\"}":     "stages[0].selector.arch (line 3): holds the control character U+000D",
	} {
		cfg := mustParse(t, "stages:\n  - name: a\n    "+yml+"\n    steps: [{name: s, commands: [c]}]\n")
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: Validate = %v, want %q", yml, err, want)
		}
	}
	cfg := mustParse(t, "stages:\n  - name: a\n    selector: {labels: {env: prod, région: île}, arch: amd64, group: g}\n    steps: [{name: s, commands: [c]}]\n")
	if err := cfg.Validate(); err != nil {
		t.Errorf("good selector: %v", err)
	}
}
