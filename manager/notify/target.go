// Package notify sends a pipeline's notifications: when one of its runs
// ends, or a stage waits for approval, a signed JSON payload to each
// webhook of its notify list and an incoming-webhook text to each Slack
// one. Every notification is recorded as a delivery before it is sent,
// retried with backoff, and resumed after a restart.
package notify

import (
	"fmt"
	"net/url"
	"slices"
)

// Target is one entry of a pipeline's notify list.
type Target struct {
	// Webhook receives the JSON payload, signed with
	// X-Errand-Signature-256 under the value of the manager secret
	// SecretName (no signature when SecretName is empty).
	Webhook *Webhook
	// Slack receives incoming-webhook text at the URL held by a manager
	// secret.
	Slack *Slack
}

// Webhook is a URL that receives the JSON payload.
type Webhook struct {
	URL        string
	SecretName string
	On         []string
}

// Slack is a Slack (or Slack-compatible) incoming webhook whose URL is
// the value of the manager secret URLSecret: it holds a token, and is
// never shown or logged.
type Slack struct {
	URLSecret string
	On        []string
}

// When a notification is sent: the values of On.
const (
	OnStarted   = "started"
	OnSuccess   = "success"
	OnFailure   = "failure"
	OnFailed    = "failed" // the same as failure
	OnCancelled = "cancelled"
	// OnFinished is every end of a run: success, failure or cancelled.
	OnFinished = "finished"
	// OnWaiting is a stage that waits for approval.
	OnWaiting = "waiting"
)

// DefaultOn is when a target with no On is notified: every end of a run.
var DefaultOn = []string{OnFinished}

// Events a notification tells.
const (
	EventRunStarted   = "run.started"
	EventRunFinished  = "run.finished"
	EventStageWaiting = "stage.waiting"
)

// MaxURL bounds a webhook's URL.
const MaxURL = 2048

// CheckURL checks a webhook's URL: absolute http or https, no longer
// than MaxURL. Where it may point is checked when it is sent
// (Config.AllowPrivate).
func CheckURL(raw string) error {
	if raw == "" || len(raw) > MaxURL {
		return fmt.Errorf("1 to %d bytes are required", MaxURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http or https URL", u.Redacted())
	}
	return nil
}

// on returns when t is notified.
func (t Target) on() []string {
	var on []string
	if t.Webhook != nil {
		on = t.Webhook.On
	} else if t.Slack != nil {
		on = t.Slack.On
	}
	if len(on) == 0 {
		return DefaultOn
	}
	return on
}

// Wants reports whether t is notified of ev.
func (t Target) Wants(ev *Event) bool {
	for _, o := range t.on() {
		if slices.Contains(ev.on(), o) {
			return true
		}
	}
	return false
}
