package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/errandci/errand"
)

// Kinds of the webhook objects of the API.
const (
	KindDelivery     = "delivery"
	KindDeliveryList = "delivery_list"
	KindHookSecret   = "hook_secret"
	KindNotification = "notification"
)

// Delivery is one webhook delivery of a pipeline: an incoming hook
// (kind hook) or an outgoing notification (kind notification).
type Delivery struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
	Href string `json:"href"`
	// Direction is hook (incoming) or notification (outgoing).
	Direction string `json:"direction"`
	Pipeline  string `json:"pipeline"`
	// Source is generic, github or gitea for a hook; webhook or slack for
	// a notification.
	Source string `json:"source"`
	// Event is what the run was started for (push, pull_request, tag…),
	// or what a notification tells (run.finished, stage.waiting).
	Event string `json:"event,omitempty"`
	// ExternalID is the sender's delivery id (X-GitHub-Delivery,
	// X-Gitea-Delivery).
	ExternalID string `json:"external_id,omitempty"`
	// Target is where a notification went: its URL, or slack:<secret
	// name> (the Slack URL itself is a secret and never shown).
	Target string `json:"target,omitempty"`
	// State is pending, accepted or refused for a hook; pending,
	// delivered or failed for a notification.
	State string `json:"state"`
	// Reason says why a hook was refused, or a notification's last
	// error.
	Reason string `json:"reason,omitempty"`
	// RunID is the run a hook started, or the run a notification is
	// about.
	RunID string `json:"run_id,omitempty"`
	// Attempts counts the sends of a notification.
	Attempts int `json:"attempts,omitempty"`
	// StatusCode is the HTTP status a hook was answered with, or the one
	// a notification's receiver answered last.
	StatusCode   int       `json:"status_code,omitempty"`
	ReplayOf     string    `json:"replay_of,omitempty"`
	RedeliveryOf string    `json:"redelivery_of,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// DeliveryList is a page of a pipeline's deliveries, newest first.
type DeliveryList struct {
	Kind       string      `json:"kind"`
	Deliveries []*Delivery `json:"deliveries"`
	// Before is the value of ?before= for the next page, empty on the
	// last.
	Before string `json:"before,omitempty"`
}

// HookSecretRequest is the body of POST
// /api/v1/pipelines/{name}/hook-secret; every field is optional.
type HookSecretRequest struct {
	// PreviousValidFor is how long the secret being replaced still
	// verifies deliveries, a Go duration (default 24h; "0s" ends it at
	// once).
	PreviousValidFor string `json:"previous_valid_for,omitempty"`
}

// HookSecret is a pipeline's hook secret as a rotation returns it: the
// new secret is shown this once.
type HookSecret struct {
	Kind     string `json:"kind"`
	Pipeline string `json:"pipeline"`
	// Secret is the new current secret; set only in the answer to a
	// rotation.
	Secret string `json:"secret,omitempty"`
	// Previous says whether the secret it replaced still verifies, and
	// PreviousUntil until when.
	Previous      bool       `json:"previous"`
	PreviousUntil *time.Time `json:"previous_until,omitempty"`
	RotatedAt     time.Time  `json:"rotated_at"`
	// HookURL is the path deliveries are posted to.
	HookURL string `json:"hook_url"`
}

// Notification is the JSON body of a webhook notification, signed with
// X-Errand-Signature-256 like an incoming hook.
type Notification struct {
	Kind string `json:"kind"`
	// ID is the delivery's id, also in the X-Errand-Delivery header; a
	// redelivery has an id of its own.
	ID string `json:"id"`
	// Event is run.finished or stage.waiting (X-Errand-Event).
	Event    string `json:"event"`
	Pipeline string `json:"pipeline"`
	// Stage is the stage that waits for approval (stage.waiting).
	Stage string           `json:"stage,omitempty"`
	Run   *NotificationRun `json:"run"`
	// URL is the run's page, when the manager knows its own address
	// (--external-url).
	URL       string    `json:"url,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// NotificationRun is what a notification says of its run.
type NotificationRun struct {
	ID         string          `json:"id"`
	Href       string          `json:"href"`
	Branch     string          `json:"branch,omitempty"`
	Event      string          `json:"event,omitempty"`
	Phase      string          `json:"phase"`
	Result     string          `json:"result"`
	CreatedAt  time.Time       `json:"created_at"`
	StartedAt  *time.Time      `json:"started_at,omitempty"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
	Duration   errand.Duration `json:"duration,omitempty"`
	// Stages lists each stage with its state.
	Stages []NotificationStage `json:"stages,omitempty"`
}

// NotificationStage is a stage's name and state in a notification.
type NotificationStage struct {
	Name  string `json:"name"`
	State string `json:"state"`
}

func pipelinePath(name string) string { return "/api/v1/pipelines/" + url.PathEscape(name) }

// ListDeliveries lists a pipeline's deliveries, newest first: up to
// limit (0: the server's default) older than the delivery before.
func (c *HTTP) ListDeliveries(ctx context.Context, pipeline, before string, limit int) (*DeliveryList, error) {
	q := url.Values{}
	if before != "" {
		q.Set("before", before)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out DeliveryList
	if err := c.do(ctx, call{method: http.MethodGet, path: pipelinePath(pipeline) + "/deliveries", query: q, out: &out, policy: retryIdempotent}); err != nil {
		return nil, fmt.Errorf("list deliveries of %s: %w", pipeline, err)
	}
	return &out, nil
}

// Redeliver sends a delivery again: a hook starts its run anew, a
// notification is sent to its receiver again. It returns the new
// delivery.
func (c *HTTP) Redeliver(ctx context.Context, pipeline, id string) (*Delivery, error) {
	var out Delivery
	if err := c.do(ctx, call{method: http.MethodPost, path: pipelinePath(pipeline) + "/deliveries/" + url.PathEscape(id) + "/redeliver",
		out: &out, policy: retryNotSent}); err != nil {
		return nil, fmt.Errorf("redeliver %s of %s: %w", id, pipeline, err)
	}
	return &out, nil
}

// RotateHookSecret makes a new hook secret for a pipeline and returns
// it, once; the one it replaces verifies for r.PreviousValidFor more.
func (c *HTTP) RotateHookSecret(ctx context.Context, pipeline string, r *HookSecretRequest) (*HookSecret, error) {
	if r == nil {
		r = &HookSecretRequest{}
	}
	var out HookSecret
	if err := c.do(ctx, call{method: http.MethodPost, path: pipelinePath(pipeline) + "/hook-secret", body: r, out: &out, policy: retryNotSent}); err != nil {
		return nil, fmt.Errorf("rotate hook secret of %s: %w", pipeline, err)
	}
	return &out, nil
}

// EndPreviousHookSecret stops the previous hook secret of a pipeline
// from verifying deliveries, at once.
func (c *HTTP) EndPreviousHookSecret(ctx context.Context, pipeline string) (*HookSecret, error) {
	var out HookSecret
	if err := c.do(ctx, call{method: http.MethodDelete, path: pipelinePath(pipeline) + "/hook-secret/previous", out: &out, policy: retryIdempotent}); err != nil {
		return nil, fmt.Errorf("end previous hook secret of %s: %w", pipeline, err)
	}
	return &out, nil
}
