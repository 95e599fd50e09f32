package manager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/internal/lifecycle"
	"github.com/errandci/errand/manager/hooks"
	"github.com/errandci/errand/manager/notify"
	"github.com/errandci/errand/manager/store"
)

// WebhookConfig configures the webhooks that start runs of stored
// pipelines and the notifications of their runs.
type WebhookConfig struct {
	// MaxBody bounds a hook delivery's body (default 1 MiB; 413 beyond).
	MaxBody int64
	// ReplayWindow is how long a delivery id or a body once accepted is
	// refused as a replay (default 24h).
	ReplayWindow time.Duration
	// KeepDeliveries bounds the deliveries kept per pipeline: that many
	// signed hook deliveries, that many notifications, and half as many
	// refusals of unsigned deliveries (default 200).
	KeepDeliveries int
	// NotifyAllowPrivate lets notifications go to loopback, private and
	// link-local addresses (default: public addresses only).
	NotifyAllowPrivate bool
	// NotifyTimeout bounds one attempt to send a notification (default
	// 10s); NotifyAttempts bounds its attempts (default 6), the first
	// retry after NotifyRetryInterval (default 2s), doubling up to 5
	// minutes.
	NotifyTimeout       time.Duration
	NotifyAttempts      int
	NotifyRetryInterval time.Duration
	// ExternalURL is the manager's address as users reach it, for links
	// in notifications (empty: none).
	ExternalURL string
}

// Defaults of WebhookConfig.
const (
	DefaultMaxHookBody    = hooks.DefaultMaxBody
	DefaultKeepDeliveries = 200
)

func (c *WebhookConfig) setDefaults() {
	if c.MaxBody == 0 {
		c.MaxBody = DefaultMaxHookBody
	}
	if c.ReplayWindow == 0 {
		c.ReplayWindow = hooks.DefaultReplayWindow
	}
	if c.KeepDeliveries == 0 {
		c.KeepDeliveries = DefaultKeepDeliveries
	}
	if c.NotifyTimeout == 0 {
		c.NotifyTimeout = notify.DefaultTimeout
	}
	if c.NotifyAttempts == 0 {
		c.NotifyAttempts = notify.DefaultMaxAttempts
	}
	if c.NotifyRetryInterval == 0 {
		c.NotifyRetryInterval = notify.DefaultInitialInterval
	}
}

func (c *WebhookConfig) validate() []error {
	var errs []error
	if c.MaxBody < 1024 || c.MaxBody > store.MaxDeliveryBody {
		errs = append(errs, fmt.Errorf("max hook body must be between 1024 and %d bytes, not %d", store.MaxDeliveryBody, c.MaxBody))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"hook replay window", c.ReplayWindow}, {"notify timeout", c.NotifyTimeout}, {"notify retry interval", c.NotifyRetryInterval}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, not %s", d.name, d.v))
		}
	}
	if c.KeepDeliveries < 2 || c.NotifyAttempts < 1 {
		errs = append(errs, fmt.Errorf("keep deliveries must be at least 2 and notify attempts at least 1, not %d and %d", c.KeepDeliveries, c.NotifyAttempts))
	}
	if c.ExternalURL != "" {
		if err := notify.CheckURL(c.ExternalURL); err != nil {
			errs = append(errs, fmt.Errorf("external URL: %v", err))
		}
	}
	return errs
}

// webhooks is the manager's side of hooks and notifications: the hook
// service, the notification sender, and the loop that tells the sender
// of stages that wait for approval.
type webhooks struct {
	hooks   *hooks.Service
	sender  *notify.Sender
	pipes   pipelineHooks
	log     *logrus.Logger
	waiting chan string
	unsub   func()
	loops   lifecycle.Loops
}

// pipelineHooks is what the webhooks need of the stored pipelines, beside
// what hooks.Pipelines says: the notify list of a pipeline and the
// manager secrets that may sign its deliveries.
type pipelineHooks interface {
	hooks.Pipelines
	// NotifyTargets returns a pipeline's notify list.
	NotifyTargets(ctx context.Context, name string) ([]notify.Target, error)
}

// waitingQueue bounds the gates waiting to be told of.
const waitingQueue = 1024

func (s *Server) newWebhooks(pipes pipelineHooks) error {
	c := s.cfg.Webhooks
	// No body gets past the API's own limit either.
	hs, err := hooks.New(hooks.Config{MaxBody: min(c.MaxBody, s.cfg.MaxBodyBytes), ReplayWindow: c.ReplayWindow, KeepSigned: c.KeepDeliveries,
		KeepUnsigned: c.KeepDeliveries / 2, Log: s.log, Now: s.now}, s.store, pipes)
	if err != nil {
		return err
	}
	sender, err := notify.New(notify.Config{Secrets: s.cfg.Secrets, AllowPrivate: c.NotifyAllowPrivate, Timeout: c.NotifyTimeout,
		MaxAttempts: c.NotifyAttempts, InitialInterval: c.NotifyRetryInterval, MaxInterval: min(notify.DefaultMaxInterval, 64*c.NotifyRetryInterval),
		Keep: c.KeepDeliveries, ExternalURL: c.ExternalURL, Log: s.log}, s.store)
	if err != nil {
		return err
	}
	s.webhooks = &webhooks{hooks: hs, sender: sender, pipes: pipes, log: s.log, waiting: make(chan string, waitingQueue)}
	s.metrics.register(hs.Collectors()...)
	s.metrics.register(sender.Collectors()...)
	return nil
}

// start starts the sender and the loop that watches gates.
func (w *webhooks) start(ctx context.Context, st store.Store, view func(context.Context, string) (*client.Run, error)) error {
	if err := w.sender.Start(ctx); err != nil {
		return err
	}
	w.unsub = st.Subscribe(func(c store.Change) {
		if c.Kind != store.ChangeTaskWaiting || c.Remote {
			return
		}
		select {
		case w.waiting <- c.TaskID:
		default:
			w.log.WithField("task_id", c.TaskID).Warn("notify: too many waiting stages at once; one is not notified")
		}
	})
	return w.loops.Start(ctx, func(ctx context.Context) { w.watchGates(ctx, st, view) })
}

// stop stops them and waits for them.
func (w *webhooks) stop(ctx context.Context) error {
	if w.unsub != nil {
		w.unsub()
	}
	_, err := w.loops.Stop(ctx)
	return errors.Join(err, w.sender.Stop(ctx))
}

// watchGates tells the sender of each stage of a pipeline's run that
// begins to wait for approval.
func (w *webhooks) watchGates(ctx context.Context, st store.Store, view func(context.Context, string) (*client.Run, error)) {
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-w.waiting:
			if err := w.gateWaits(ctx, st, view, id); err != nil && ctx.Err() == nil {
				w.log.WithError(err).WithField("task_id", id).Warn("notify: could not notify a waiting stage")
			}
		}
	}
}

func (w *webhooks) gateWaits(ctx context.Context, st store.Store, view func(context.Context, string) (*client.Run, error), taskID string) error {
	t, err := st.TaskGet(ctx, taskID)
	if err != nil || t.RunID == "" {
		return err
	}
	run, err := view(ctx, t.RunID)
	if err != nil || run.Pipeline == "" {
		return err
	}
	targets, err := w.pipes.NotifyTargets(ctx, run.Pipeline)
	if err != nil || len(targets) == 0 {
		return ignoreNotFound(err)
	}
	var errs []error
	for _, stg := range run.Stages {
		if stg.State == "waiting" {
			errs = append(errs, w.sender.Notify(ctx, &notify.Event{Kind: notify.EventStageWaiting, Pipeline: run.Pipeline, Run: run, Stage: stg.Name}, targets))
		}
	}
	return errors.Join(errs...)
}

// runEvent tells the sender of a run of a pipeline that started or
// finished.
func (w *webhooks) runEvent(ctx context.Context, kind string, run *client.Run) {
	if run == nil || run.Pipeline == "" {
		return
	}
	targets, err := w.pipes.NotifyTargets(ctx, run.Pipeline)
	if err == nil && len(targets) > 0 {
		err = w.sender.Notify(ctx, &notify.Event{Kind: kind, Pipeline: run.Pipeline, Run: run}, targets)
	}
	if err = ignoreNotFound(err); err != nil {
		w.log.WithError(err).WithFields(logrus.Fields{"run_id": run.ID, "pipeline": run.Pipeline}).Warn("notify: could not notify a run")
	}
}

// ignoreNotFound drops errand.ErrNotFound: a pipeline deleted since its
// run started has no one to notify.
func ignoreNotFound(err error) error {
	if errors.Is(err, errand.ErrNotFound) {
		return nil
	}
	return err
}

// Bounds of the delivery list.
const maxDeliveryListLimit = 1000

func deliveryHref(pipeline, id string) string {
	return "/api/v1/pipelines/" + url.PathEscape(pipeline) + "/deliveries/" + url.PathEscape(id)
}

func apiDelivery(d *store.Delivery) *client.Delivery {
	return &client.Delivery{Kind: client.KindDelivery, ID: d.ID, Href: deliveryHref(d.Pipeline, d.ID), Direction: string(d.Kind),
		Pipeline: d.Pipeline, Source: d.Source, Event: d.Event, ExternalID: d.ExternalID, Target: d.Target, State: string(d.State),
		Reason: d.Reason, RunID: d.RunID, Attempts: d.Attempts, StatusCode: d.StatusCode, ReplayOf: d.ReplayOf,
		RedeliveryOf: d.RedeliveryOf, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt}
}

func apiHookSecret(h *store.HookSecrets, now time.Time) *client.HookSecret {
	out := &client.HookSecret{Kind: client.KindHookSecret, Pipeline: h.Pipeline, RotatedAt: h.RotatedAt,
		HookURL: "/api/v1/hooks/" + url.PathEscape(h.Pipeline)}
	if len(h.Valid(now)) > 1 {
		out.Previous, out.PreviousUntil = true, h.PreviousUntil
	}
	return out
}

// receiveHook serves POST /api/v1/hooks/{pipeline}: a delivery that
// authenticates by its signature alone.
func (s *Server) receiveHook(w http.ResponseWriter, r *http.Request, _ principal) error {
	res := s.webhooks.hooks.Receive(r.Context(), r.PathValue("pipeline"), r.Header, r.Body)
	if res.Delivery != nil {
		w.Header().Set(hooks.HeaderErrandDelivery, res.Delivery.ID)
	}
	if res.Err != nil {
		return res.Err
	}
	httphelper.WriteJSON(w, apiDelivery(res.Delivery), res.Status)
	return nil
}

func (s *Server) listDeliveries(w http.ResponseWriter, r *http.Request, _ principal) error {
	name, q := r.PathValue("name"), r.URL.Query()
	limit, err := queryLimit(q.Get("limit"), maxDeliveryListLimit)
	if err != nil {
		return err
	}
	if limit == 0 {
		limit = 50
	}
	kind := store.DeliveryKind(q.Get("direction"))
	if kind != "" && kind != store.DeliveryHook && kind != store.DeliveryNotification {
		return errand.Errorf(errand.CodeInvalid, "direction: %q is not hook or notification", kind)
	}
	list, err := s.store.DeliveryList(r.Context(), store.DeliveryListParams{Pipeline: name, Kind: kind, Before: q.Get("before"), Limit: limit})
	if err != nil {
		return err
	}
	if len(list) == 0 && q.Get("before") == "" {
		if err := s.webhooks.pipes.PipelineExists(r.Context(), name); err != nil {
			return err
		}
	}
	out := &client.DeliveryList{Kind: client.KindDeliveryList, Deliveries: []*client.Delivery{}}
	for _, d := range list {
		out.Deliveries = append(out.Deliveries, apiDelivery(d))
	}
	if len(list) == limit {
		out.Before = list[len(list)-1].ID
	}
	httphelper.WriteJSON(w, out, http.StatusOK)
	return nil
}

func (s *Server) redeliver(w http.ResponseWriter, r *http.Request, p principal) error {
	name, id := r.PathValue("name"), r.PathValue("id")
	d, err := s.store.DeliveryGet(r.Context(), id)
	if err != nil {
		return err
	}
	if d.Pipeline != name {
		return errand.Errorf(errand.CodeNotFound, "pipeline %s has no delivery %s", name, id)
	}
	if err := s.webhooks.pipes.PipelineExists(r.Context(), name); err != nil {
		return err
	}
	s.audit(r.Context(), p, "delivery.redeliver", name, id)
	if d.Kind == store.DeliveryNotification {
		out, err := s.webhooks.sender.Redeliver(r.Context(), d)
		if err != nil {
			return err
		}
		httphelper.WriteJSON(w, apiDelivery(out), http.StatusAccepted)
		return nil
	}
	res := s.webhooks.hooks.Redeliver(r.Context(), d)
	if res.Err != nil {
		return res.Err
	}
	httphelper.WriteJSON(w, apiDelivery(res.Delivery), res.Status)
	return nil
}

func (s *Server) rotateHookSecret(w http.ResponseWriter, r *http.Request, p principal) error {
	var req client.HookSecretRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRotateBody+1))
	if err != nil {
		return errand.Errorf(errand.CodeInvalid, "read request body: %v", err)
	}
	if len(body) > maxRotateBody {
		return errand.Errorf(errand.CodeTooLarge, "request body is larger than %d bytes", maxRotateBody)
	}
	// The body is optional: {"previous_valid_for": "24h"}.
	if len(bytes.TrimSpace(body)) > 0 {
		if err := httphelper.Unmarshal(body, &req); err != nil {
			return err
		}
	}
	prev := hooks.DefaultPreviousValidFor
	if req.PreviousValidFor != "" {
		d, err := time.ParseDuration(req.PreviousValidFor)
		if err != nil {
			return errand.Errorf(errand.CodeInvalid, "previous_valid_for: %q is not a duration (24h, 30m, 0s)", req.PreviousValidFor)
		}
		prev = d
	}
	name := r.PathValue("name")
	h, err := s.webhooks.hooks.Rotate(r.Context(), name, prev)
	if err != nil {
		return err
	}
	s.audit(r.Context(), p, "hook_secret.rotate", name, "previous valid for "+prev.String())
	out := apiHookSecret(h, s.now())
	out.Secret = h.Current
	httphelper.WriteJSON(w, out, http.StatusCreated)
	return nil
}

func (s *Server) endPreviousHookSecret(w http.ResponseWriter, r *http.Request, p principal) error {
	name := r.PathValue("name")
	h, err := s.webhooks.hooks.EndPrevious(r.Context(), name)
	if err != nil {
		return err
	}
	s.audit(r.Context(), p, "hook_secret.end_previous", name, "")
	httphelper.WriteJSON(w, apiHookSecret(h, s.now()), http.StatusOK)
	return nil
}

// maxRotateBody bounds the body of a rotation.
const maxRotateBody = 4 << 10

// registerWebhookRoutes registers the webhook routes: the hook endpoint,
// which authenticates by the signature of its body, and the deliveries
// and hook secret of a pipeline.
func (s *Server) registerWebhookRoutes() {
	h := s.handle
	h("POST", "/api/v1/hooks/{pipeline}", authSignature, s.receiveHook)
	h("GET", "/api/v1/pipelines/{name}/deliveries", authViewer, s.listDeliveries)
	h("POST", "/api/v1/pipelines/{name}/deliveries/{id}/redeliver", authOperator, s.redeliver)
	h("POST", "/api/v1/pipelines/{name}/hook-secret", authOperator, s.rotateHookSecret)
	h("DELETE", "/api/v1/pipelines/{name}/hook-secret/previous", authOperator, s.endPreviousHookSecret)
}
