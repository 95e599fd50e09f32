package pipeline

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLint(t *testing.T) {
	cases := []struct {
		name, file, body string
		want             []string // one a problem, in order, after "FILE:"
	}{
		{"valid", "config.yml", "stages:\n  - name: a\n    steps: [{name: s, commands: [x]}]\n", nil},
		{"decode and validation together", "config.yml", `stages:
  - name: a
    runtime: {type: docker, imgae: busybox}
    steps:
      - name: s
        comands: [echo]
    depends: [b1]
  - name: b2
    steps: [{name: s, commands: [x]}]
`, []string{
			`3:29: stages[0].runtime.imgae: unknown field (did you mean "image"?)`,
			`5:9: stages[0].steps[0].commands: at least one command is required`,
			`5:9: stages[0].steps[0].image: required for a docker stage`,
			`6:9: stages[0].steps[0].comands: unknown field (did you mean "commands"?)`,
			`7:15: stages[0].depends[0].stage: no stage named "b1" (did you mean "b2"?)`,
		}},
		{"wrong type reported once", "config.json", `{"stages": [{"name": "a", "steps": "x"}]}`,
			[]string{`1:27: stages[0].steps: want a list, got a string`}},
		{"runtime and pull", "config.yml", "stages:\n  - name: a\n    runtime: {type: hots, pull: nevr}\n    steps: [{name: s, commands: [x]}]\n",
			[]string{`3:15: stages[0].runtime.type: "hots": want host or docker (did you mean "host"?)`,
				`3:27: stages[0].runtime.pull: "nevr": want always, never or if-not-present (did you mean "never"?)`}},
		{"no suggestion when far", "config.yml", "stages:\n  - name: a\n    frobnicate: 1\n    steps: [{name: s, commands: [x]}]\n",
			[]string{`3:5: stages[0].frobnicate: unknown field (known:`}},
		{"json syntax", "config.json", "{\"stages\": [,]}", []string{`1:13: invalid character ','`}},
		{"jsonnet error", "config.jsonnet", "{\n  stages: error 'boom',\n}\n", []string{`2:11: RUNTIME ERROR: boom`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, c.file)
			if err := os.WriteFile(path, []byte(c.body), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := Lint(dir, LoadOptions{})
			if c.want == nil {
				if err != nil || cfg == nil {
					t.Fatalf("Lint: %v", err)
				}
				return
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Lint: %v, want Errors", err)
			}
			if len(errs) != len(c.want) {
				t.Fatalf("%d problems, want %d:\n%v", len(errs), len(c.want), err)
			}
			for i, w := range c.want {
				if got := errs[i].Error(); !strings.HasPrefix(got, path+":"+w) {
					t.Errorf("problem %d:\n got %s\nwant %s:%s…", i, got, path, w)
				}
			}
		})
	}
}

func TestClosest(t *testing.T) {
	names := []string{"build", "test", "deploy"}
	for s, want := range map[string]string{"biuld": "build", "tset": "test", "deplyo": "deploy", "bild": "build", "xyz": "", "build": "", "": ""} {
		if got := Closest(s, names); got != want {
			t.Errorf("Closest(%q) = %q, want %q", s, got, want)
		}
	}
}

func TestWarningsAndFind(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"config.jsonnet", "config.yml"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w := Warnings(dir)
	if len(w) != 1 || !strings.Contains(w[0], "config.yml is ignored: config.jsonnet is read instead") {
		t.Fatalf("Warnings = %q", w)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.MkdirAll(filepath.Join(sub, "config.jsonnet"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Find(sub); err == nil || !strings.Contains(err.Error(), "config.jsonnet is a directory") {
		t.Fatalf("Find of a directory named config.jsonnet: %v", err)
	}
}
