package hooks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/manager/store"
)

// Pipelines is what the service needs of the stored pipelines.
type Pipelines interface {
	// PipelineExists returns nil for a pipeline that exists,
	// errand.ErrNotFound for one that does not.
	PipelineExists(ctx context.Context, name string) error
	// WebhookTrigger says whether a pipeline takes webhook deliveries at
	// all, and returns the values of the manager secrets that verify
	// them beside its hook secrets.
	WebhookTrigger(ctx context.Context, name string) (enabled bool, secrets []string, err error)
	// StartRun starts a run of the pipeline for a delivery and returns
	// its id. A trigger the pipeline does not take (its triggers do not
	// match) is *Ignored.
	StartRun(ctx context.Context, name string, deliveryID string, t *Trigger) (runID string, err error)
}

// Buckets of hook deliveries, each kept to its own bound: refusals of
// unsigned deliveries never push out the record of signed ones.
const (
	BucketSigned   = "hook"
	BucketUnsigned = "hook_unsigned"
)

// Defaults of Config.
const (
	DefaultMaxBody          = 1 << 20
	DefaultReplayWindow     = 24 * time.Hour
	DefaultKeepSigned       = 200
	DefaultKeepUnsigned     = 100
	DefaultUnsignedPerMin   = 60
	DefaultPreviousValidFor = 24 * time.Hour
	// MaxPreviousValidFor bounds how long a replaced secret verifies.
	MaxPreviousValidFor = 30 * 24 * time.Hour
	// secretBytes is the entropy of a generated hook secret.
	secretBytes = 32
)

// HeaderErrandDelivery names a generic delivery's id, for replay
// checks (optional).
const HeaderErrandDelivery = "X-Errand-Delivery"

// Config is the hook service's configuration; zero fields take the
// defaults.
type Config struct {
	// MaxBody bounds a delivery's body (413 beyond).
	MaxBody int64
	// ReplayWindow is how long a delivery id or a body once accepted is
	// refused as a replay.
	ReplayWindow time.Duration
	// KeepSigned and KeepUnsigned bound the deliveries kept per
	// pipeline: those whose signature verified, and those refused before
	// it did.
	KeepSigned, KeepUnsigned int
	// UnsignedPerMinute bounds the refusals of unsigned deliveries
	// recorded per pipeline per minute; past it they are refused all the
	// same and only counted (errand_hook_refusals_unrecorded_total).
	UnsignedPerMinute int
	Log               *logrus.Logger
	Now               func() time.Time
}

// Service receives hook deliveries, records them and starts runs; it
// rotates hook secrets and redelivers.
type Service struct {
	cfg   Config
	log   *logrus.Logger
	now   func() time.Time
	store store.Store
	pipes Pipelines

	limiter    refusalLimiter
	deliveries *prometheus.CounterVec
	unrecorded prometheus.Counter
}

// New returns the hook service.
func New(cfg Config, st store.Store, pipes Pipelines) (*Service, error) {
	if st == nil || pipes == nil {
		return nil, errors.New("hooks: a store and the pipelines are required")
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.MaxBody > store.MaxDeliveryBody {
		return nil, fmt.Errorf("hooks: the body limit %d is more than the %d a delivery may keep", cfg.MaxBody, store.MaxDeliveryBody)
	}
	if cfg.ReplayWindow <= 0 {
		cfg.ReplayWindow = DefaultReplayWindow
	}
	if cfg.KeepSigned <= 0 {
		cfg.KeepSigned = DefaultKeepSigned
	}
	if cfg.KeepUnsigned <= 0 {
		cfg.KeepUnsigned = DefaultKeepUnsigned
	}
	if cfg.UnsignedPerMinute <= 0 {
		cfg.UnsignedPerMinute = DefaultUnsignedPerMin
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg, log: cfg.Log, now: cfg.Now, store: st, pipes: pipes,
		limiter: refusalLimiter{perMinute: cfg.UnsignedPerMinute, seen: map[string]*refusalWindow{}},
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_hook_deliveries_total",
			Help: "Webhook deliveries received, by state (accepted, refused).",
		}, []string{"state"}),
		unrecorded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "errand_hook_refusals_unrecorded_total",
			Help: "Unsigned webhook deliveries refused past the per-pipeline rate at which refusals are recorded.",
		}),
	}, nil
}

// Collectors returns the service's metrics, to be registered.
func (s *Service) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.deliveries, s.unrecorded}
}

// MaxBody is the body limit of a delivery.
func (s *Service) MaxBody() int64 { return s.cfg.MaxBody }

// Result is what a delivery came to: the delivery as recorded (nil when
// it was not: an unknown pipeline, or refusals past the rate) and the
// HTTP status to answer with.
type Result struct {
	Delivery *store.Delivery
	Status   int
	// Err is the refusal to answer with, nil when the delivery was
	// accepted or ignored.
	Err error
}

// unauthorized is the one answer to a delivery that does not verify,
// whether the pipeline exists or not.
func unauthorized(pipeline string, why error) error {
	return errand.Errorf(errand.CodeUnauthorized, "%s (pipeline %q, if it exists, has a hook secret that this signature does not match)",
		httpReason(why), pipeline)
}

func httpReason(err error) string {
	var e *errand.Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return err.Error()
}

// Receive handles one delivery to pipeline: it reads at most MaxBody of
// body, checks the signature, refuses replays, maps the payload and
// starts the run, recording the delivery whatever it comes to.
func (s *Service) Receive(ctx context.Context, pipeline string, h http.Header, body io.Reader) *Result {
	src, headerEvent, externalID := SourceOf(h)
	if src == SourceGeneric {
		externalID = h.Get(HeaderErrandDelivery)
	}
	d := &store.Delivery{ID: ulid.Make().String(), Pipeline: pipeline, Kind: store.DeliveryHook, Bucket: BucketUnsigned,
		Source: string(src), HeaderEvent: clip(headerEvent, MaxEvent), ExternalID: clip(externalID, MaxDeliveryID), State: store.DeliveryRefused}
	if err := s.pipes.PipelineExists(ctx, pipeline); err != nil {
		if errors.Is(err, errand.ErrNotFound) {
			// Not recorded: there is no pipeline to bound the record by.
			return &Result{Status: http.StatusUnauthorized, Err: unauthorized(pipeline, errors.New("the delivery does not verify"))}
		}
		return &Result{Status: http.StatusInternalServerError, Err: err}
	}
	raw, err := io.ReadAll(io.LimitReader(body, s.cfg.MaxBody+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			raw = make([]byte, s.cfg.MaxBody+1)
		} else {
			return s.refuseUnsigned(ctx, d, http.StatusBadRequest, errand.Errorf(errand.CodeInvalid, "read the body: %v", err))
		}
	}
	if int64(len(raw)) > s.cfg.MaxBody {
		return s.refuseUnsigned(ctx, d, http.StatusRequestEntityTooLarge,
			errand.Errorf(errand.CodeTooLarge, "the body is larger than the %d bytes a delivery may have (--max-hook-body)", s.cfg.MaxBody))
	}
	secrets, err := s.store.HookSecretGet(ctx, pipeline)
	if err != nil && !errors.Is(err, errand.ErrNotFound) {
		return &Result{Status: http.StatusInternalServerError, Err: err}
	}
	enabled, valid, err := s.pipes.WebhookTrigger(ctx, pipeline)
	if err != nil {
		return &Result{Status: http.StatusInternalServerError, Err: err}
	}
	if secrets != nil {
		valid = append(secrets.Valid(s.now()), valid...)
	}
	header, _, verr := Verify(h, raw, valid...)
	d.Target = header
	if verr != nil {
		if len(valid) == 0 {
			d.Reason = "the pipeline has no hook secret yet: make one with errand pipelines rotate-secret " + pipeline
		}
		return s.refuseUnsigned(ctx, d, http.StatusUnauthorized, unauthorized(pipeline, verr))
	}
	// Signed by a holder of the secret: from here on the delivery is
	// kept with its body and may be redelivered.
	d.Bucket, d.Body, d.State = BucketSigned, raw, store.DeliveryPending
	if !enabled {
		d.State, d.StatusCode = store.DeliveryRefused, http.StatusForbidden
		d.Reason = "pipeline " + pipeline + " takes no webhook deliveries: give it triggers: {webhook: {}}"
		created, err := s.store.DeliveryCreate(ctx, store.DeliveryCreateParams{Delivery: d, Now: s.now(), Keep: s.cfg.KeepSigned})
		if err != nil {
			return &Result{Status: http.StatusInternalServerError, Err: fmt.Errorf("record delivery: %w", err)}
		}
		return s.done(created, http.StatusForbidden, errand.Errorf(errand.CodeForbidden, "%s", d.Reason))
	}
	sum := sha256.Sum256(raw)
	keys := []string{"body-sha256:" + hex.EncodeToString(sum[:])}
	if externalID != "" {
		keys = append(keys, "delivery-id:"+string(src)+":"+d.ExternalID)
	}
	return s.process(ctx, d, keys)
}

// process maps a signed delivery and starts its run. keys are its replay
// keys; none for a redelivery.
func (s *Service) process(ctx context.Context, d *store.Delivery, keys []string) *Result {
	t, perr := Parse(Source(d.Source), d.HeaderEvent, d.Body)
	if t != nil {
		d.Event = t.Event
	}
	var ig *Ignored
	switch {
	case errors.As(perr, &ig):
		d.State, d.Reason, d.StatusCode = store.DeliveryRefused, ig.Reason, http.StatusAccepted
	case perr != nil:
		d.State, d.Reason, d.StatusCode = store.DeliveryRefused, clip(httpReason(perr), store.MaxDeliveryReason), http.StatusBadRequest
	}
	created, err := s.store.DeliveryCreate(ctx, store.DeliveryCreateParams{Delivery: d, Now: s.now(), Keep: s.cfg.KeepSigned,
		ReplayKeys: keys, ReplayWindow: s.cfg.ReplayWindow})
	if err != nil {
		return &Result{Status: http.StatusInternalServerError, Err: fmt.Errorf("record delivery: %w", err)}
	}
	switch {
	case created.ReplayOf != "":
		why := errand.Errorf(errand.CodeConflict, "%s", created.Reason)
		up, err := s.store.DeliveryUpdate(context.WithoutCancel(ctx), store.DeliveryUpdateParams{ID: created.ID, State: created.State,
			Reason: created.Reason, StatusCode: http.StatusConflict, Now: s.now()})
		if err != nil {
			return &Result{Status: http.StatusInternalServerError, Err: fmt.Errorf("record delivery %s: %w", created.ID, err)}
		}
		return s.done(up, http.StatusConflict, why)
	case ig != nil:
		return s.done(created, http.StatusAccepted, nil)
	case perr != nil:
		return s.done(created, http.StatusBadRequest, perr)
	}
	runID, err := s.pipes.StartRun(ctx, d.Pipeline, d.ID, t)
	state, reason, status := store.DeliveryAccepted, "", http.StatusCreated
	var refusal error
	switch {
	case errors.As(err, &ig):
		state, reason, status = store.DeliveryRefused, ig.Reason, http.StatusAccepted
	case err != nil:
		state, reason, refusal = store.DeliveryRefused, httpReason(err), err
		status = http.StatusInternalServerError
		if code := errand.ErrorCode(err); code != errand.CodeInternal {
			status = statusOf(code)
		} else {
			reason = "the run could not be started (the manager's log has the error)"
			s.log.WithError(err).WithFields(logrus.Fields{"pipeline": d.Pipeline, "delivery_id": d.ID}).Error("hooks: start a run")
		}
	}
	up, uerr := s.store.DeliveryUpdate(context.WithoutCancel(ctx), store.DeliveryUpdateParams{ID: d.ID, State: state, Reason: clip(reason, store.MaxDeliveryReason),
		RunID: runID, StatusCode: status, ReleaseKeys: state != store.DeliveryAccepted, Now: s.now()})
	if uerr != nil {
		return &Result{Status: http.StatusInternalServerError, Err: fmt.Errorf("record delivery %s: %w", d.ID, uerr)}
	}
	s.log.WithFields(logrus.Fields{"pipeline": d.Pipeline, "delivery_id": d.ID, "run_id": runID, "event": d.Event, "state": state}).Info("hook delivery")
	return s.done(up, status, refusal)
}

func statusOf(code string) int {
	switch code {
	case errand.CodeInvalid:
		return http.StatusBadRequest
	case errand.CodeNotFound:
		return http.StatusNotFound
	case errand.CodeConflict:
		return http.StatusConflict
	case errand.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case errand.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusUnprocessableEntity
}

// done counts a delivery's end and returns it.
func (s *Service) done(d *store.Delivery, status int, err error) *Result {
	s.deliveries.WithLabelValues(string(d.State)).Inc()
	d.Body = nil
	return &Result{Delivery: d, Status: status, Err: err}
}

// refuseUnsigned records a delivery refused before its signature
// verified, at most UnsignedPerMinute a minute per pipeline, without its
// body.
func (s *Service) refuseUnsigned(ctx context.Context, d *store.Delivery, status int, why error) *Result {
	s.deliveries.WithLabelValues(string(store.DeliveryRefused)).Inc()
	if !s.limiter.allow(d.Pipeline, s.now()) {
		s.unrecorded.Inc()
		return &Result{Status: status, Err: why}
	}
	if d.Reason == "" {
		d.Reason = httpReason(why)
	}
	d.Reason, d.StatusCode = clip(d.Reason, store.MaxDeliveryReason), status
	created, err := s.store.DeliveryCreate(ctx, store.DeliveryCreateParams{Delivery: d, Now: s.now(), Keep: s.cfg.KeepUnsigned})
	if err != nil {
		s.log.WithError(err).WithField("pipeline", d.Pipeline).Warn("hooks: could not record a refused delivery")
		return &Result{Status: status, Err: why}
	}
	s.log.WithFields(logrus.Fields{"pipeline": d.Pipeline, "delivery_id": d.ID, "status": status}).Info("hook delivery refused")
	return &Result{Delivery: created, Status: status, Err: why}
}

// Redeliver processes a recorded hook delivery again, as a new delivery
// of its own (no replay check: a user asked for it). A delivery refused
// before its signature verified has no body to redeliver.
func (s *Service) Redeliver(ctx context.Context, orig *store.Delivery) *Result {
	if orig.Kind != store.DeliveryHook {
		return &Result{Status: http.StatusBadRequest, Err: errand.Errorf(errand.CodeInvalid, "delivery %s is not a hook delivery", orig.ID)}
	}
	if len(orig.Body) == 0 {
		return &Result{Status: http.StatusConflict, Err: errand.Errorf(errand.CodeConflict,
			"delivery %s was refused before its signature verified: there is nothing to redeliver", orig.ID)}
	}
	d := &store.Delivery{ID: ulid.Make().String(), Pipeline: orig.Pipeline, Kind: store.DeliveryHook, Bucket: BucketSigned,
		Source: orig.Source, HeaderEvent: orig.HeaderEvent, ExternalID: orig.ExternalID, Target: orig.Target,
		State: store.DeliveryPending, Body: orig.Body, RedeliveryOf: orig.ID}
	return s.process(ctx, d, nil)
}

// Rotate makes a new hook secret for a pipeline and returns it with the
// secrets now valid; the one it replaces verifies for previousValidFor
// more (0: not at all).
func (s *Service) Rotate(ctx context.Context, pipeline string, previousValidFor time.Duration) (*store.HookSecrets, error) {
	if previousValidFor < 0 || previousValidFor > MaxPreviousValidFor {
		return nil, errand.Errorf(errand.CodeInvalid, "previous_valid_for: %s is not between 0s and %s", previousValidFor, MaxPreviousValidFor)
	}
	if err := s.pipes.PipelineExists(ctx, pipeline); err != nil {
		return nil, err
	}
	secret, err := scheduler.NewSecret(secretBytes)
	if err != nil {
		return nil, err
	}
	now := s.now()
	until := now.Add(previousValidFor)
	h, err := s.store.HookSecretRotate(ctx, store.HookSecretRotateParams{Pipeline: pipeline, Secret: secret, PreviousUntil: &until, Now: now})
	if err != nil {
		return nil, err
	}
	if previousValidFor == 0 && h.Previous != "" {
		if h, err = s.store.HookSecretEndPrevious(ctx, pipeline); err != nil {
			return nil, err
		}
	}
	s.log.WithFields(logrus.Fields{"pipeline": pipeline, "previous_valid_for": previousValidFor}).Info("hook secret rotated")
	return h, nil
}

// EndPrevious stops a pipeline's previous hook secret from verifying.
func (s *Service) EndPrevious(ctx context.Context, pipeline string) (*store.HookSecrets, error) {
	if err := s.pipes.PipelineExists(ctx, pipeline); err != nil {
		return nil, err
	}
	return s.store.HookSecretEndPrevious(ctx, pipeline)
}

// clip shortens s to at most n bytes of valid UTF-8.
func clip(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "")
}

// refusalLimiter bounds the refusals recorded per pipeline per minute.
type refusalLimiter struct {
	mu        sync.Mutex
	perMinute int
	seen      map[string]*refusalWindow
}

type refusalWindow struct {
	start time.Time
	n     int
}

// maxLimited bounds the pipelines the limiter remembers.
const maxLimited = 10000

func (l *refusalLimiter) allow(pipeline string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.seen[pipeline]
	if w == nil || now.Sub(w.start) >= time.Minute || now.Before(w.start) {
		if w == nil && len(l.seen) >= maxLimited {
			for k, old := range l.seen {
				if now.Sub(old.start) >= time.Minute {
					delete(l.seen, k)
				}
			}
		}
		w = &refusalWindow{start: now}
		l.seen[pipeline] = w
	}
	w.n++
	return w.n <= l.perMinute
}
