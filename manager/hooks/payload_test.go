package hooks

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/errandci/errand"
)

func readPayload(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParseForges: GitHub's and Gitea's push and pull-request payloads
// map to the run's event, branch and commit.
func TestParseForges(t *testing.T) {
	cases := []struct {
		file  string
		src   Source
		event string
		want  Trigger
	}{
		{"github-push.json", SourceGitHub, "push", Trigger{Source: SourceGitHub, Event: "push", Ref: "refs/heads/main", Branch: "main",
			Commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", Repository: "octo/hello", Sender: "octo", Author: "Octo Cat", Message: "Update README.md"}},
		{"github-pull_request.json", SourceGitHub, "pull_request", Trigger{Source: SourceGitHub, Event: "pull_request", Ref: "refs/pull/42/head",
			Branch: "main", HeadBranch: "feature", Commit: "ec26c3e57ca3a959ca5aad62de7213c562f8c821", PullRequest: 42, Action: "synchronize", Repository: "octo/hello", Sender: "octo", Author: "octo", Message: "Add a greeting"}},
		{"gitea-push.json", SourceGitea, "push", Trigger{Source: SourceGitea, Event: "push", Ref: "refs/heads/develop", Branch: "develop",
			Commit: "bffeb74224043ba2feb48d137756c8a9331c449a", Repository: "gitea/webhooks", Sender: "gitea"}},
		{"gitea-pull_request.json", SourceGitea, "pull_request", Trigger{Source: SourceGitea, Event: "pull_request", Ref: "refs/pull/7/head",
			Branch: "main", HeadBranch: "fix", Commit: "4f2a0b1c6d8e9f0a1b2c3d4e5f60718293a4b5c6", PullRequest: 7, Action: "synchronized", Repository: "gitea/webhooks", Sender: "gitea", Message: "Fix the build"}},
		{"gitea-pull_request.json", SourceGitea, "pull_request_sync", Trigger{Source: SourceGitea, Event: "pull_request", Ref: "refs/pull/7/head",
			Branch: "main", HeadBranch: "fix", Commit: "4f2a0b1c6d8e9f0a1b2c3d4e5f60718293a4b5c6", PullRequest: 7, Action: "synchronized", Repository: "gitea/webhooks", Sender: "gitea", Message: "Fix the build"}},
	}
	for _, c := range cases {
		t.Run(c.file+"/"+c.event, func(t *testing.T) {
			got, err := Parse(c.src, c.event, readPayload(t, c.file))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, c.want) {
				t.Errorf("got  %+v\nwant %+v", *got, c.want)
			}
		})
	}
}

// TestParseIgnored: pings, other events, closed pull requests and branch
// deletions start no run, saying why.
func TestParseIgnored(t *testing.T) {
	cases := []struct {
		src         Source
		event, body string
		reason      string
	}{
		{SourceGitHub, "ping", `{"zen":"Keep it logically awesome.","hook_id":1}`, "ping"},
		{SourceGitHub, "issues", `{"action":"opened"}`, `"issues"`},
		{SourceGitHub, "pull_request", `{"action":"closed","number":1,"pull_request":{"head":{"ref":"a","sha":"ab"},"base":{"ref":"main"}}}`, `"closed"`},
		{SourceGitHub, "push", `{"ref":"refs/heads/gone","after":"0000000000000000000000000000000000000000","deleted":true}`, "deleted refs/heads/gone"},
		{SourceGitea, "push", `{"ref":"refs/heads/gone","after":"0000000000000000000000000000000000000000"}`, "deleted"},
	}
	for _, c := range cases {
		_, err := Parse(c.src, c.event, []byte(c.body))
		var ig *Ignored
		if !errors.As(err, &ig) || !strings.Contains(ig.Reason, c.reason) {
			t.Errorf("%s %s %s: err = %v, want ignored saying %q", c.src, c.event, c.body, err, c.reason)
		}
	}
}

// TestParseGeneric: the generic payload maps ref, commit, event and
// variables; unknown fields and bad values are refused naming the field.
func TestParseGeneric(t *testing.T) {
	got, err := Parse(SourceGeneric, "", []byte(`{"ref":"refs/heads/release","commit":"abc123","event":"deploy","variables":{"TARGET":"prod"}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Trigger{Source: SourceGeneric, Event: "deploy", Ref: "refs/heads/release", Branch: "release", Commit: "abc123", Variables: map[string]string{"TARGET": "prod"}}
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("got %+v, want %+v", *got, want)
	}
	got, err = Parse(SourceGeneric, "", []byte(`{"ref":"main"}`))
	if err != nil || got.Event != "push" || got.Branch != "main" {
		t.Errorf("bare branch: %+v, %v; want event push on main", got, err)
	}
	got, err = Parse(SourceGeneric, "", []byte(`{"ref":"refs/tags/v1.2"}`))
	if err != nil || got.Event != "tag" || got.Branch != "" {
		t.Errorf("tag: %+v, %v; want event tag, no branch", got, err)
	}
	many := `{"variables":{`
	for i := 0; i <= MaxVariables; i++ {
		if i > 0 {
			many += ","
		}
		many += `"V` + strings.Repeat("x", i%3) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `":"x"`
	}
	many += `}}`
	bad := []struct{ body, says string }{
		{`{"ref":"main","extra":1}`, "extra"},
		{`{"ref":"main ; rm"}`, "ref"},
		{`{"ref":"a/../b"}`, "ref"},
		{`{"event":"Push!"}`, "event"},
		{`{"commit":"$(id)"}`, "commit"},
		{`{"variables":{"1BAD":"x"}}`, "variables"},
		{`{"variables":{"OK":"` + strings.Repeat("x", MaxVariableValue+1) + `"}}`, "variables.OK"},
		{many, "more than the 100"},
		{`[]`, "generic payload"},
		{``, "generic payload"},
		{strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 100), "deeper"},
	}
	for _, b := range bad {
		_, err := Parse(SourceGeneric, "", []byte(b.body))
		if errand.ErrorCode(err) != errand.CodeInvalid || !strings.Contains(err.Error(), b.says) {
			t.Errorf("%.60s: err = %v, want invalid saying %q", b.body, err, b.says)
		}
	}
	if _, err := Parse(SourceGitHub, "push", []byte(strings.Repeat("[", 100))); errand.ErrorCode(err) != errand.CodeInvalid {
		t.Errorf("deep GitHub body: err = %v, want invalid", err)
	}
}

// TestSourceOf: Gitea's own header wins over the GitHub one it also
// sends.
func TestSourceOf(t *testing.T) {
	h := http.Header{}
	h.Set(HeaderGitHubEvent, "push")
	h.Set(HeaderGitHubDelivery, "d-1")
	if src, ev, id := SourceOf(h); src != SourceGitHub || ev != "push" || id != "d-1" {
		t.Errorf("GitHub: %s %s %s", src, ev, id)
	}
	h.Set(HeaderGiteaEvent, "pull_request")
	h.Set(HeaderGiteaDelivery, "g-1")
	if src, ev, id := SourceOf(h); src != SourceGitea || ev != "pull_request" || id != "g-1" {
		t.Errorf("Gitea: %s %s %s", src, ev, id)
	}
	if src, _, _ := SourceOf(http.Header{}); src != SourceGeneric {
		t.Errorf("no headers: %s", src)
	}
}
