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
	"strings"

	"github.com/errandci/errand"
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

// When a notification is sent: the value of On.
const (
	OnSuccess   = "success"
	OnFailure   = "failure"
	OnCancelled = "cancelled"
	OnWaiting   = "waiting"
)

// DefaultOn is when a target with no On is notified.
var DefaultOn = []string{OnSuccess, OnFailure, OnCancelled, OnWaiting}

// Events a notification tells.
const (
	EventRunFinished  = "run.finished"
	EventStageWaiting = "stage.waiting"
)

// Limits of a notify list.
const (
	MaxTargets = 20
	MaxURL     = 2048
)

// Check checks a notify list; path prefixes its errors ("notify").
func Check(path string, targets []Target) error {
	if len(targets) > MaxTargets {
		return errand.Errorf(errand.CodeInvalid, "%s: %d entries, more than the %d a pipeline may have", path, len(targets), MaxTargets)
	}
	for i, t := range targets {
		p := fmt.Sprintf("%s[%d]", path, i)
		var on []string
		switch {
		case (t.Webhook == nil) == (t.Slack == nil):
			return errand.Errorf(errand.CodeInvalid, "%s: one of webhook or slack is required", p)
		case t.Webhook != nil:
			if err := CheckURL(t.Webhook.URL); err != nil {
				return errand.Errorf(errand.CodeInvalid, "%s.webhook.url: %v", p, err)
			}
			if t.Webhook.SecretName != "" && !secretName(t.Webhook.SecretName) {
				return errand.Errorf(errand.CodeInvalid, "%s.webhook.secret: %q is not a secret name (letters, digits and '_')", p, t.Webhook.SecretName)
			}
			on, p = t.Webhook.On, p+".webhook"
		default:
			if !secretName(t.Slack.URLSecret) {
				return errand.Errorf(errand.CodeInvalid, "%s.slack.url_secret: %q is not a secret name (letters, digits and '_')", p, t.Slack.URLSecret)
			}
			on, p = t.Slack.On, p+".slack"
		}
		for j, o := range on {
			if !slices.Contains(DefaultOn, o) {
				return errand.Errorf(errand.CodeInvalid, "%s.on[%d]: %q is not one of %s", p, j, o, strings.Join(DefaultOn, ", "))
			}
		}
	}
	return nil
}

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

func secretName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
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
func (t Target) Wants(ev *Event) bool { return slices.Contains(t.on(), ev.on()) }
