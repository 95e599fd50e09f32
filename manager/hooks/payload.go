package hooks

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/errandci/errand"
	"github.com/errandci/errand/httphelper"
)

// Source says who sent a delivery, from its headers.
type Source string

// Sources of deliveries.
const (
	// SourceGeneric is Errand's own payload: {ref, commit, event, variables}.
	SourceGeneric Source = "generic"
	// SourceGitHub is a GitHub webhook (X-GitHub-Event).
	SourceGitHub Source = "github"
	// SourceGitea is a Gitea or Forgejo webhook (X-Gitea-Event); Gitea
	// sends X-GitHub-Event as well, so it is looked for first.
	SourceGitea Source = "gitea"
)

// Headers that name a delivery's event and id.
const (
	HeaderGitHubEvent    = "X-GitHub-Event"
	HeaderGitHubDelivery = "X-GitHub-Delivery"
	HeaderGiteaEvent     = "X-Gitea-Event"
	HeaderGiteaDelivery  = "X-Gitea-Delivery"
)

// Events a delivery maps to, as the stages' when: {event: […]} reads
// them.
const (
	EventPush        = "push"
	EventPullRequest = "pull_request"
	EventTag         = "tag"
)

// Bounds of what a delivery may ask of a run.
const (
	MaxVariables     = 100
	MaxVariableName  = 128
	MaxVariableValue = 4096
	MaxRef           = 255
	MaxCommit        = 128
	MaxEvent         = 64
	MaxDeliveryID    = 128
	MaxText          = 1000
)

// Trigger is what a delivery asks: a run on a branch at a commit, for an
// event, with variables.
type Trigger struct {
	Source Source `json:"source"`
	// Event is push, pull_request or tag for GitHub and Gitea; a generic
	// payload names its own (default push).
	Event string `json:"event"`
	// Ref is the ref as sent (refs/heads/main); Branch the branch the
	// stages' when: {branch} matches: the pushed branch, or the target
	// branch of a pull request.
	Ref    string `json:"ref,omitempty"`
	Branch string `json:"branch,omitempty"`
	Commit string `json:"commit,omitempty"`
	// Variables are given to every step as environment (generic
	// payloads only).
	Variables map[string]string `json:"variables,omitempty"`
	// PullRequest is the number of the pull request, HeadBranch its
	// source branch, Action what happened to it (opened, synchronize…).
	PullRequest int    `json:"pull_request,omitempty"`
	HeadBranch  string `json:"head_branch,omitempty"`
	Action      string `json:"action,omitempty"`
	// Repository is the repository's full name, when the payload says.
	Repository string `json:"repository,omitempty"`
	// Sender is who made the event (the forge's login); Author and
	// Message describe the change (the head commit, or the pull
	// request's title). They are cut to MaxText.
	Sender  string `json:"sender,omitempty"`
	Author  string `json:"author,omitempty"`
	Message string `json:"message,omitempty"`
}

// Ignored is the error of a delivery that is genuine but starts no run:
// a ping, an event or action that is not a push or an opened or updated
// pull request, a deleted branch. The delivery is recorded as refused
// with its reason, and answered 202: the sender should not retry it.
type Ignored struct{ Reason string }

func (e *Ignored) Error() string { return e.Reason }

// SourceOf says who sent a delivery and the event and delivery id its
// headers name.
func SourceOf(h http.Header) (src Source, event, deliveryID string) {
	switch {
	case h.Get(HeaderGiteaEvent) != "":
		return SourceGitea, h.Get(HeaderGiteaEvent), h.Get(HeaderGiteaDelivery)
	case h.Get(HeaderGitHubEvent) != "":
		return SourceGitHub, h.Get(HeaderGitHubEvent), h.Get(HeaderGitHubDelivery)
	}
	return SourceGeneric, "", ""
}

// Parse maps a delivery to the trigger it asks for. header is the event
// its headers name (X-GitHub-Event, X-Gitea-Event; empty for a generic
// one). A payload that is not what its source sends is errand.CodeInvalid;
// one that starts no run is *Ignored.
func Parse(src Source, header string, body []byte) (*Trigger, error) {
	var t *Trigger
	var err error
	switch src {
	case SourceGeneric:
		t, err = parseGeneric(body)
	case SourceGitHub, SourceGitea:
		t, err = parseForge(src, header, body)
	default:
		return nil, errand.Errorf(errand.CodeInvalid, "unknown source %q", src)
	}
	if err != nil {
		return nil, err
	}
	t.Source = src
	if err := t.check(); err != nil {
		return nil, err
	}
	return t, nil
}

// genericPayload is the body of a generic delivery.
type genericPayload struct {
	Ref       string            `json:"ref"`
	Commit    string            `json:"commit"`
	Event     string            `json:"event"`
	Variables map[string]string `json:"variables"`
}

func parseGeneric(body []byte) (*Trigger, error) {
	var p genericPayload
	if err := httphelper.Unmarshal(body, &p); err != nil {
		return nil, errand.Errorf(errand.CodeInvalid, `generic payload: %s; the body is {"ref": "refs/heads/main", "commit": "<sha>", "event": "push", "variables": {"NAME": "value"}}`, httphelper.Reason(err))
	}
	t := &Trigger{Event: p.Event, Ref: p.Ref, Commit: p.Commit, Variables: p.Variables}
	if t.Event == "" {
		t.Event = EventPush
	}
	t.Branch = branchOf(p.Ref)
	if strings.HasPrefix(p.Ref, "refs/tags/") && p.Event == "" {
		t.Event = EventTag
	}
	return t, nil
}

// branchOf is the branch a ref names: refs/heads/X is X, a bare name is
// itself, any other ref (a tag) names no branch.
func branchOf(ref string) string {
	if b, ok := strings.CutPrefix(ref, "refs/heads/"); ok {
		return b
	}
	if strings.HasPrefix(ref, "refs/") {
		return ""
	}
	return ref
}

// forgePayload holds the fields of GitHub's and Gitea's push and
// pull_request payloads that a run needs; the rest is ignored.
type forgePayload struct {
	// push
	Ref     string `json:"ref"`
	After   string `json:"after"`
	Deleted bool   `json:"deleted"`
	// pull_request
	Action     string `json:"action"`
	Number     int    `json:"number"`
	HeadCommit *struct {
		Message string `json:"message"`
		Author  struct {
			Name string `json:"name"`
		} `json:"author"`
	} `json:"head_commit"`
	Sender *struct {
		Login string `json:"login"`
	} `json:"sender"`
	PullRequest *struct {
		Title string `json:"title"`
		User  *struct {
			Login string `json:"login"`
		} `json:"user"`
		Head struct {
			Ref string `json:"ref"`
			SHA string `json:"sha"`
		} `json:"head"`
		Base struct {
			Ref string `json:"ref"`
		} `json:"base"`
	} `json:"pull_request"`
	Repository *struct {
		FullName string `json:"full_name"`
	} `json:"repository"`
}

// zeroSHA is the "after" of a push that deleted its ref.
var zeroSHA = regexp.MustCompile(`^0+$`)

// prActions are the pull request actions that start a run: GitHub says
// synchronize, Gitea synchronized.
var prActions = map[string]bool{"opened": true, "reopened": true, "synchronize": true, "synchronized": true}

func parseForge(src Source, event string, body []byte) (*Trigger, error) {
	// Gitea names a pull request's update pull_request_sync in some
	// versions; the action in the body says what happened either way.
	if src == SourceGitea && strings.HasPrefix(event, "pull_request") {
		event = EventPullRequest
	}
	switch event {
	case "ping":
		return nil, &Ignored{Reason: "ping: the hook is set up; a ping starts no run"}
	case EventPush, EventPullRequest:
	default:
		return nil, &Ignored{Reason: fmt.Sprintf("event %q starts no run: only push and pull_request do", truncate(event, MaxEvent))}
	}
	if err := checkJSON(body); err != nil {
		return nil, err
	}
	var p forgePayload
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, errand.Errorf(errand.CodeInvalid, "%s %s payload: %v", src, event, err)
	}
	t := &Trigger{Event: event}
	if p.Repository != nil {
		t.Repository = p.Repository.FullName
	}
	if p.Sender != nil {
		t.Sender = clip(p.Sender.Login, MaxText)
	}
	if event == EventPush {
		if p.Ref == "" {
			return nil, errand.Errorf(errand.CodeInvalid, "%s push payload: no ref", src)
		}
		if p.Deleted || zeroSHA.MatchString(p.After) {
			return nil, &Ignored{Reason: fmt.Sprintf("push deleted %s: a deletion starts no run", truncate(p.Ref, MaxRef))}
		}
		t.Ref, t.Commit, t.Branch = p.Ref, p.After, branchOf(p.Ref)
		if hc := p.HeadCommit; hc != nil {
			t.Message, t.Author = clip(hc.Message, MaxText), clip(hc.Author.Name, MaxText)
		}
		if strings.HasPrefix(p.Ref, "refs/tags/") {
			t.Event = EventTag
		}
		return t, nil
	}
	if p.PullRequest == nil {
		return nil, errand.Errorf(errand.CodeInvalid, "%s pull_request payload: no pull_request", src)
	}
	if !prActions[p.Action] {
		return nil, &Ignored{Reason: fmt.Sprintf("pull request action %q starts no run: only opened, reopened and synchronize do", truncate(p.Action, MaxEvent))}
	}
	t.Action, t.PullRequest = p.Action, p.Number
	t.Branch, t.HeadBranch, t.Commit = p.PullRequest.Base.Ref, p.PullRequest.Head.Ref, p.PullRequest.Head.SHA
	t.Ref = fmt.Sprintf("refs/pull/%d/head", p.Number)
	t.Message = clip(p.PullRequest.Title, MaxText)
	if u := p.PullRequest.User; u != nil {
		t.Author = clip(u.Login, MaxText)
	}
	return t, nil
}

// checkJSON refuses a body that is not one JSON object or nests deeper
// than httphelper.MaxJSONDepth, before it is decoded loosely.
func checkJSON(body []byte) error {
	var top map[string]json.RawMessage
	if err := httphelper.Unmarshal(body, &top); err != nil {
		return errand.Errorf(errand.CodeInvalid, "payload: %s", httphelper.Reason(err))
	}
	return nil
}

// nameRE is what a variable's name may be: an environment variable's.
var nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// eventRE is what a generic payload's event may be.
var eventRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)

// commitRE is what a commit may be: a hash, or a name a script chose.
var commitRE = regexp.MustCompile(`^[A-Za-z0-9._-]*$`)

// check bounds and checks what a trigger asks of a run.
func (t *Trigger) check() error {
	switch {
	case len(t.Event) > MaxEvent || !eventRE.MatchString(t.Event):
		return errand.Errorf(errand.CodeInvalid, "event: %q is not 1 to %d lowercase letters, digits, '_' or '-'", truncate(t.Event, MaxEvent), MaxEvent)
	case len(t.Ref) > MaxRef || !validRef(t.Ref):
		return errand.Errorf(errand.CodeInvalid, "ref: %q is not a git ref of at most %d bytes", truncate(t.Ref, MaxRef), MaxRef)
	case len(t.HeadBranch) > MaxRef || !validRef(t.HeadBranch) || !validRef(t.Branch):
		return errand.Errorf(errand.CodeInvalid, "branch: not a git branch name of at most %d bytes", MaxRef)
	case len(t.Commit) > MaxCommit || !commitRE.MatchString(t.Commit):
		return errand.Errorf(errand.CodeInvalid, "commit: %q is not at most %d letters, digits, '.', '_' or '-'", truncate(t.Commit, MaxCommit), MaxCommit)
	case len(t.Variables) > MaxVariables:
		return errand.Errorf(errand.CodeInvalid, "variables: %d, more than the %d a delivery may set", len(t.Variables), MaxVariables)
	case len(t.Repository) > MaxRef:
		return errand.Errorf(errand.CodeInvalid, "repository: longer than %d bytes", MaxRef)
	}
	for k, v := range t.Variables {
		if len(k) > MaxVariableName || !nameRE.MatchString(k) {
			return errand.Errorf(errand.CodeInvalid, "variables: %q is not an environment variable name of at most %d bytes", truncate(k, MaxVariableName), MaxVariableName)
		}
		if len(v) > MaxVariableValue || strings.ContainsRune(v, 0) {
			return errand.Errorf(errand.CodeInvalid, "variables.%s: longer than %d bytes, or holds a NUL", k, MaxVariableValue)
		}
	}
	return nil
}

// validRef reports whether ref may be a git ref or branch name: no
// control characters, spaces, "..", or the characters git refuses.
func validRef(ref string) bool {
	if strings.Contains(ref, "..") || strings.HasPrefix(ref, "/") || strings.HasSuffix(ref, "/") || strings.HasPrefix(ref, "-") {
		return false
	}
	for _, c := range ref {
		if c < 0x20 || c == 0x7f || strings.ContainsRune(" ~^:?*[\\", c) {
			return false
		}
	}
	return true
}

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
