package pipeline

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/tasks"
)

func TestValidateSource(t *testing.T) {
	sha := strings.Repeat("c", 40)
	for _, c := range []struct {
		name   string
		src    *errand.Source
		commit string
		paths  []string
	}{
		{"none", nil, "", nil},
		{"ok", &errand.Source{Git: &errand.GitSource{URL: "https://example.com/r.git", Ref: "main", Credentials: "TOKEN"}}, "", nil},
		{"with commit", &errand.Source{Git: &errand.GitSource{URL: "git@example.com:r.git"}}, sha, nil},
		{"file: the fetcher decides", &errand.Source{Git: &errand.GitSource{URL: "file:///srv/r.git"}}, "", nil},
		{"commit alone", nil, sha, []string{"commit"}},
		{"no git", &errand.Source{}, "", []string{"source.git"}},
		{"ext", &errand.Source{Git: &errand.GitSource{URL: "ext::sh%20-c%20id"}}, "", []string{"source.git.url"}},
		{"options", &errand.Source{Git: &errand.GitSource{URL: "-u/x", Ref: "--upload-pack=x"}}, "-x",
			[]string{"source.git.url", "source.git.ref", "commit"}},
		{"credentials", &errand.Source{Git: &errand.GitSource{URL: "https://x/y", Credentials: "not a name"}}, "", []string{"source.git.credentials"}},
	} {
		err := ValidateSource(c.src, c.commit)
		var got []string
		var fes Errors
		if errors.As(err, &fes) {
			for _, fe := range fes {
				got = append(got, fe.Path)
			}
		} else if err != nil {
			t.Errorf("%s: %T %v, want Errors", c.name, err, err)
		}
		if strings.Join(got, ",") != strings.Join(c.paths, ",") {
			t.Errorf("%s: paths %v (%v), want %v", c.name, got, err, c.paths)
		}
	}
}

func TestExpandSource(t *testing.T) {
	cfg := mustParse(t, `
stages:
  - name: build
    steps: [{name: a, commands: [make]}]
  - name: test
    runtime: {type: docker, image: busybox}
    steps: [{name: b, commands: [make test]}]
`)
	sha := strings.Repeat("d", 40)
	src := &errand.Source{Git: &errand.GitSource{URL: "https://example.com/r.git", Ref: "main", Submodules: true, Credentials: "GIT_TOKEN"}}
	opts := ExpandOptions{RunID: "r1", Source: src, Commit: sha, Secrets: map[string]string{"GIT_TOKEN": "value-never-stored"}, NewID: seqIDs()}
	plan, err := Expand(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Commit != sha || plan.Source != src {
		t.Errorf("plan source %+v commit %q", plan.Source, plan.Commit)
	}
	inits := 0
	for _, task := range plan.Tasks {
		if strings.Contains(string(task.Data), "value-never-stored") {
			t.Errorf("task %s holds the secret's value: %s", task.ID, task.Data)
		}
		switch {
		case strings.HasSuffix(task.Type, ".initialize"):
			inits++
			var data initializeData
			if err := json.Unmarshal(task.Data, &data); err != nil {
				t.Fatal(err)
			}
			want := tasks.GitCheckout{GitSource: *src.Git, Commit: sha}
			if data.Checkout == nil || data.Checkout.Commit != want.Commit || data.Checkout.URL != want.URL || !data.Checkout.Submodules {
				t.Errorf("%s checks out %+v, want %+v", task.Type, data.Checkout, want)
			}
			if len(data.SecretNames) != 1 || data.SecretNames[0] != "GIT_TOKEN" {
				t.Errorf("%s names secrets %v, want the credentials", task.Type, data.SecretNames)
			}
		case strings.HasSuffix(task.Type, ".execute"):
			var data tasks.ExecuteData
			if err := json.Unmarshal(task.Data, &data); err != nil {
				t.Fatal(err)
			}
			if data.Environment["ERRAND_COMMIT"] != sha {
				t.Errorf("step %s has ERRAND_COMMIT %q", data.Step, data.Environment["ERRAND_COMMIT"])
			}
		}
	}
	if inits != 2 {
		t.Fatalf("%d initialize tasks", inits)
	}

	// Without a source, nothing changes.
	plain, err := Expand(cfg, ExpandOptions{RunID: "r1", NewID: seqIDs()})
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range plain.Tasks {
		if strings.Contains(string(task.Data), "checkout") || strings.Contains(string(task.Data), "ERRAND_COMMIT") {
			t.Errorf("a run without a source: %s", task.Data)
		}
	}

	for name, o := range map[string]ExpandOptions{
		"no commit":      {Source: src, Secrets: opts.Secrets},
		"no credentials": {Source: src, Commit: sha},
		"bad url":        {Source: &errand.Source{Git: &errand.GitSource{URL: "ext::x"}}, Commit: sha},
	} {
		if _, err := Expand(cfg, o); err == nil {
			t.Errorf("%s: expanded", name)
		}
	}
}
