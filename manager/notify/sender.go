package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/clock"
	"github.com/errandci/errand/internal/lifecycle"
	"github.com/errandci/errand/manager/hooks"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/manager/store"
)

// Headers of a notification.
const (
	HeaderEvent     = "X-Errand-Event"
	HeaderDelivery  = "X-Errand-Delivery"
	HeaderSignature = hooks.HeaderErrandSignature
)

// Sources of notification deliveries.
const (
	SourceWebhook = "webhook"
	SourceSlack   = "slack"
)

// Bucket is the delivery bucket notifications are kept in.
const Bucket = "notification"

// slackTargetPrefix starts the recorded target of a Slack notification:
// slack:<secret name>, never the URL.
const slackTargetPrefix = "slack:"

// Defaults of Config.
const (
	DefaultTimeout         = 10 * time.Second
	DefaultMaxAttempts     = 6
	DefaultInitialInterval = 2 * time.Second
	DefaultMaxInterval     = 5 * time.Minute
	DefaultWorkers         = 4
	DefaultKeep            = 200
	DefaultResumeInterval  = 30 * time.Second
	// maxResponse bounds what is read of a receiver's answer.
	maxResponse = 64 << 10
	// queueSize bounds the notifications waiting for a worker; past it
	// they wait in the store for the resume loop.
	queueSize = 1024
)

// Config is the sender's configuration; zero fields take the defaults.
type Config struct {
	// Secrets holds the signing secrets of webhooks and the URLs of
	// Slack webhooks.
	Secrets scheduler.SecretSource
	// AllowPrivate lets notifications go to loopback, private and
	// link-local addresses; without it they go to public addresses only,
	// so that a pipeline cannot make the manager call what only it can
	// reach.
	AllowPrivate bool
	// Timeout bounds one attempt.
	Timeout time.Duration
	// MaxAttempts bounds the sends of one notification.
	MaxAttempts int
	// InitialInterval and MaxInterval shape the exponential backoff
	// between attempts.
	InitialInterval time.Duration
	MaxInterval     time.Duration
	// Workers is how many notifications are sent at once.
	Workers int
	// Keep bounds the notifications kept per pipeline.
	Keep int
	// ResumeInterval is how often the store is read for notifications
	// whose sender stopped (a manager that was stopped or died).
	ResumeInterval time.Duration
	// ExternalURL is the manager's address as users reach it, for links
	// to runs; empty for none.
	ExternalURL string
	// Observe, when set, is called with each delivery after an attempt
	// is recorded.
	Observe func(store.Delivery)
	// Client sends the requests; nil for one that refuses private
	// addresses unless AllowPrivate, follows no redirect and uses no
	// proxy.
	Client *http.Client
	Log    *logrus.Logger
	Clock  clock.Clock
}

// Sender records and sends notifications. It is a long-lived component:
// Start, Stop, Done.
type Sender struct {
	cfg   Config
	store store.Store
	log   *logrus.Logger
	clock clock.Clock
	http  *http.Client
	lease time.Duration
	queue chan string
	loops lifecycle.Loops
	ended *prometheus.CounterVec
}

// New returns a sender over st.
func New(cfg Config, st store.Store) (*Sender, error) {
	if st == nil {
		return nil, errors.New("notify: a store is required")
	}
	if cfg.Secrets == nil {
		cfg.Secrets = scheduler.EnvSecrets{}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Timeout, DefaultTimeout)
	def(&cfg.InitialInterval, DefaultInitialInterval)
	def(&cfg.MaxInterval, DefaultMaxInterval)
	def(&cfg.ResumeInterval, DefaultResumeInterval)
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.Keep <= 0 {
		cfg.Keep = DefaultKeep
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	cfg.Clock = clock.OrReal(cfg.Clock)
	s := &Sender{cfg: cfg, store: st, log: cfg.Log, clock: cfg.Clock, http: cfg.Client, queue: make(chan string, queueSize),
		// A delivery whose sender went silent this long is resumed by
		// another: longer than an attempt and the longest wait after it.
		lease: cfg.Timeout + cfg.MaxInterval*3/2 + 30*time.Second,
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_notifications_total",
			Help: "Notifications that ended on this manager, by state (delivered, failed).",
		}, []string{"state"})}
	for _, st := range []store.DeliveryState{store.DeliveryDelivered, store.DeliveryFailed} {
		s.ended.WithLabelValues(string(st))
	}
	if s.http == nil {
		s.http = newClient(cfg.AllowPrivate, cfg.Timeout)
	}
	return s, nil
}

// Collectors returns the sender's metrics, to be registered.
func (s *Sender) Collectors() []prometheus.Collector { return []prometheus.Collector{s.ended} }

// Start starts the workers and the loop that resumes notifications left
// pending.
func (s *Sender) Start(ctx context.Context) error {
	loops := []func(context.Context){s.resumeLoop}
	for range s.cfg.Workers {
		loops = append(loops, s.work)
	}
	return s.loops.Start(ctx, loops...)
}

// Stop stops the sender and waits for its attempts in flight; what is
// left pending is resumed at the next start (of any manager sharing the
// store).
func (s *Sender) Stop(ctx context.Context) error {
	_, err := s.loops.Stop(ctx)
	return err
}

// Done is closed once the sender has stopped.
func (s *Sender) Done() <-chan struct{} { return s.loops.Done() }

// Notify records a notification of ev for every target that wants it and
// queues them to be sent. A notification already recorded for the same
// run, event, stage and target (by this manager or another) is not made
// again.
func (s *Sender) Notify(ctx context.Context, ev *Event, targets []Target) error {
	var errs []error
	for i, t := range targets {
		if !t.Wants(ev) {
			continue
		}
		key := fmt.Sprintf("%s/%s/%s/%d", ev.Run.ID, ev.Kind, ev.Stage, i)
		if err := s.record(ctx, ev, t, key); err != nil && !errors.Is(err, errand.ErrConflict) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Sender) record(ctx context.Context, ev *Event, t Target, key string) error {
	now := s.clock.Now()
	id := ulid.Make().String()
	b, err := body(t, notification(ev, id, s.cfg.ExternalURL, now))
	if err != nil {
		return fmt.Errorf("encode notification: %w", err)
	}
	d := &store.Delivery{ID: id, Pipeline: ev.Pipeline, Kind: store.DeliveryNotification, Bucket: Bucket, Event: ev.Kind,
		DedupeKey: key, State: store.DeliveryPending, RunID: ev.Run.ID, Body: b}
	if t.Slack != nil {
		d.Source, d.Target = SourceSlack, slackTargetPrefix+t.Slack.URLSecret
	} else {
		d.Source, d.Target, d.SecretName = SourceWebhook, t.Webhook.URL, t.Webhook.SecretName
	}
	return s.create(ctx, d, now)
}

// create stores a new pending delivery, leased to this sender, and
// queues it.
func (s *Sender) create(ctx context.Context, d *store.Delivery, now time.Time) error {
	next := now.Add(s.lease)
	d.NextAt = &next
	if _, err := s.store.DeliveryCreate(ctx, store.DeliveryCreateParams{Delivery: d, Now: now, Keep: s.cfg.Keep}); err != nil {
		return fmt.Errorf("record notification: %w", err)
	}
	s.log.WithFields(logrus.Fields{"delivery_id": d.ID, "pipeline": d.Pipeline, "run_id": d.RunID, "event": d.Event, "target": d.Target}).
		Debug("notification recorded")
	s.enqueue(d.ID)
	return nil
}

// Redeliver sends a recorded notification again, as a new delivery with
// the same body (a webhook payload takes the new delivery's id).
func (s *Sender) Redeliver(ctx context.Context, orig *store.Delivery) (*store.Delivery, error) {
	if orig.Kind != store.DeliveryNotification {
		return nil, errand.Errorf(errand.CodeInvalid, "delivery %s is not a notification", orig.ID)
	}
	now := s.clock.Now()
	d := &store.Delivery{ID: ulid.Make().String(), Pipeline: orig.Pipeline, Kind: store.DeliveryNotification, Bucket: Bucket,
		Source: orig.Source, Event: orig.Event, Target: orig.Target, SecretName: orig.SecretName, State: store.DeliveryPending,
		RunID: orig.RunID, Body: orig.Body, RedeliveryOf: orig.ID}
	if orig.Source == SourceWebhook {
		var n client.Notification
		if err := json.Unmarshal(orig.Body, &n); err == nil {
			n.ID = d.ID
			if b, err := json.Marshal(&n); err == nil {
				d.Body = b
			}
		}
	}
	if err := s.create(ctx, d, now); err != nil {
		return nil, err
	}
	return d, nil
}

func (s *Sender) enqueue(id string) {
	select {
	case s.queue <- id:
	default:
		// The resume loop finds it once its lease ends.
		s.log.WithField("delivery_id", id).Warn("notify: too many notifications waiting; this one waits for the resume loop")
	}
}

// work sends queued notifications until ctx ends.
func (s *Sender) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-s.queue:
			s.deliver(ctx, id)
		}
	}
}

// resumeLoop claims, every ResumeInterval, the pending notifications
// whose lease ended (their sender stopped, or the queue was full), and
// queues them.
func (s *Sender) resumeLoop(ctx context.Context) {
	for {
		now := s.clock.Now()
		claimed, err := s.store.DeliveryClaim(ctx, store.DeliveryClaimParams{Now: now, Until: now.Add(s.lease), Limit: queueSize / 4})
		if err != nil && ctx.Err() == nil {
			s.log.WithError(err).Warn("notify: could not read the pending notifications")
		}
		for _, d := range claimed {
			s.enqueue(d.ID)
		}
		if !clock.Sleep(s.clock, ctx.Done(), s.cfg.ResumeInterval) {
			return
		}
	}
}

// deliver sends one notification until it is delivered, refused for
// good or out of attempts, recording each attempt.
func (s *Sender) deliver(ctx context.Context, id string) {
	d, err := s.store.DeliveryGet(ctx, id)
	if err != nil {
		if ctx.Err() == nil {
			s.log.WithError(err).WithField("delivery_id", id).Warn("notify: could not read a notification")
		}
		return
	}
	if d.State != store.DeliveryPending {
		return
	}
	log := s.log.WithFields(logrus.Fields{"delivery_id": d.ID, "pipeline": d.Pipeline, "run_id": d.RunID, "target": d.Target})
	b := &backoff.ExponentialBackOff{InitialInterval: s.cfg.InitialInterval, RandomizationFactor: 0.2, Multiplier: 2,
		MaxInterval: s.cfg.MaxInterval, Stop: backoff.Stop, Clock: s.clock}
	b.Reset()
	left := s.cfg.MaxAttempts - d.Attempts
	op := func() error {
		if left <= 0 {
			return backoff.Permanent(s.finish(ctx, d, store.DeliveryFailed, d.Reason))
		}
		status, sendErr, permanent := s.send(ctx, d)
		if ctx.Err() != nil {
			// Stopping: the attempt does not count; it is resumed.
			return backoff.Permanent(ctx.Err())
		}
		d.Attempts++
		d.StatusCode = status
		left--
		switch {
		case sendErr == nil:
			log.WithField("attempts", d.Attempts).Info("notification delivered")
			if err := s.finish(ctx, d, store.DeliveryDelivered, ""); err != nil {
				return backoff.Permanent(err)
			}
			return nil
		case permanent || left <= 0:
			log.WithError(sendErr).WithField("attempts", d.Attempts).Warn("notification failed")
			if err := s.finish(ctx, d, store.DeliveryFailed, sendErr.Error()); err != nil {
				return backoff.Permanent(err)
			}
			return backoff.Permanent(sendErr)
		}
		log.WithError(sendErr).WithField("attempts", d.Attempts).Info("notification attempt failed; retrying")
		next := s.clock.Now().Add(s.lease)
		if err := s.record1(ctx, d, store.DeliveryPending, sendErr.Error(), &next); err != nil {
			return backoff.Permanent(err)
		}
		return sendErr
	}
	err = backoff.RetryNotifyWithTimer(op, backoff.WithContext(backoff.WithMaxRetries(b, uint64(max(left-1, 0))), ctx), nil, clock.BackOffTimer(s.clock))
	if ctx.Err() != nil && d.State == store.DeliveryPending {
		// Left to the next start, or to another manager, at once.
		now := s.clock.Now()
		_ = s.record1(ctx, d, store.DeliveryPending, d.Reason, &now)
	} else if err != nil && d.State == store.DeliveryPending {
		log.WithError(err).Warn("notify: could not record a notification's attempt")
	}
}

// finish records the end of a delivery.
func (s *Sender) finish(ctx context.Context, d *store.Delivery, state store.DeliveryState, reason string) error {
	return s.record1(ctx, d, state, reason, nil)
}

// record1 records d's state after an attempt, even while the sender
// stops, and tells Config.Observe.
func (s *Sender) record1(ctx context.Context, d *store.Delivery, state store.DeliveryState, reason string, next *time.Time) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if len(reason) > store.MaxDeliveryReason {
		reason = reason[:store.MaxDeliveryReason]
	}
	out, err := s.store.DeliveryUpdate(wctx, store.DeliveryUpdateParams{ID: d.ID, State: state, Reason: reason, RunID: d.RunID,
		Attempts: d.Attempts, StatusCode: d.StatusCode, NextAt: next, Now: s.clock.Now()})
	if err != nil {
		return err
	}
	d.State, d.Reason, d.NextAt = out.State, out.Reason, out.NextAt
	if state != store.DeliveryPending {
		s.ended.WithLabelValues(string(state)).Inc()
	}
	if s.cfg.Observe != nil {
		s.cfg.Observe(*out)
	}
	return nil
}

// send makes one attempt: the HTTP status, the error, and whether it is
// one that another attempt cannot mend. A Slack URL never appears in the
// error.
func (s *Sender) send(ctx context.Context, d *store.Delivery) (status int, err error, permanent bool) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	target := d.Target
	if name, ok := strings.CutPrefix(d.Target, slackTargetPrefix); ok && d.Source == SourceSlack {
		v, found, err := s.cfg.Secrets.Secret(ctx, name)
		if err != nil || !found {
			return 0, fmt.Errorf("the Slack URL secret %s is not set on the manager (%s%s for a manager reading its environment)", name, scheduler.EnvPrefix, name), true
		}
		target = v
	}
	if err := CheckURL(target); err != nil {
		return 0, fmt.Errorf("target %s: %s", d.Target, maskURL(err.Error(), target, d)), true
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(d.Body))
	if err != nil {
		return 0, fmt.Errorf("target %s: %s", d.Target, maskURL(err.Error(), target, d)), true
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Errand-Notify/1")
	if d.Source == SourceWebhook {
		req.Header.Set(HeaderEvent, d.Event)
		req.Header.Set(HeaderDelivery, d.ID)
		if d.SecretName != "" {
			secret, found, err := s.cfg.Secrets.Secret(ctx, d.SecretName)
			if err != nil || !found {
				return 0, fmt.Errorf("the signing secret %s is not set on the manager (%s%s for a manager reading its environment)", d.SecretName, scheduler.EnvPrefix, d.SecretName), true
			}
			req.Header.Set(HeaderSignature, hooks.Sign(secret, d.Body))
		}
	}
	resp, err := s.http.Do(req)
	if err != nil {
		var pe *privateAddrError
		permanent := errors.As(err, &pe)
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, fmt.Errorf("post to %s: %s", d.Target, maskURL(err.Error(), target, d)), permanent
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	_ = resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return c, nil, false
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return c, fmt.Errorf("post to %s: the receiver answered %d", d.Target, c), false
	case c >= 300 && c < 400:
		return c, fmt.Errorf("post to %s: the receiver answered %d (redirects are not followed)", d.Target, c), true
	default:
		return c, fmt.Errorf("post to %s: the receiver refused it with %d", d.Target, c), true
	}
}

// maskURL removes a Slack URL from msg: it holds the webhook's token.
func maskURL(msg, target string, d *store.Delivery) string {
	if d.Source != SourceSlack || target == "" {
		return msg
	}
	msg = strings.ReplaceAll(msg, target, d.Target)
	if u, err := url.Parse(target); err == nil && len(u.Path) > 1 {
		msg = strings.ReplaceAll(msg, u.Path, "/…")
		if u.RawQuery != "" {
			msg = strings.ReplaceAll(msg, u.RawQuery, "…")
		}
	}
	return msg
}

// newClient returns the HTTP client of notifications: no proxy, no
// redirects, and unless allowPrivate only public addresses, checked on
// the address actually dialled (so a name that resolves to a private
// address is refused too).
func newClient(allowPrivate bool, timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: timeout, Control: func(_, address string, _ syscall.RawConn) error {
		if allowPrivate {
			return nil
		}
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		if ip := net.ParseIP(host); ip == nil || !public(ip) {
			return &privateAddrError{host: host}
		}
		return nil
	}}
	tr := &http.Transport{DialContext: d.DialContext, TLSHandshakeTimeout: timeout, ResponseHeaderTimeout: timeout,
		MaxIdleConns: 16, IdleConnTimeout: 90 * time.Second}
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// privateAddrError refuses an address that is not public: no other
// attempt can mend it.
type privateAddrError struct{ host string }

func (e *privateAddrError) Error() string {
	return e.host + " is not a public address: notifications go to public addresses only (--notify-allow-private allows others)"
}

// public reports whether ip is a public unicast address.
func public(ip net.IP) bool {
	return !(ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() || ip.Equal(net.IPv4bcast) ||
		// 100.64.0.0/10, carrier-grade NAT, reaches what a provider keeps
		// private too.
		(ip.To4() != nil && ip.To4()[0] == 100 && ip.To4()[1]&0xc0 == 64))
}
