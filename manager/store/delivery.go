package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/errandci/errand"
)

// DeliveryStore persists webhook deliveries, the incoming ones that start
// pipeline runs and the outgoing notifications of runs, and the hook
// secrets that incoming deliveries are signed with. Deliveries are kept
// in bounded buckets per pipeline: creating one drops the oldest of its
// bucket past DeliveryCreateParams.Keep.
type DeliveryStore interface {
	// DeliveryCreate inserts a delivery (ID set by the caller, new:
	// errand.ErrConflict otherwise; a DedupeKey that another delivery
	// holds is errand.ErrConflict too) and drops the oldest deliveries of
	// its pipeline and bucket past p.Keep. With p.ReplayKeys, in the same
	// transaction, each key is claimed for the delivery unless another
	// delivery claimed it within p.ReplayWindow: then no key is claimed
	// and the delivery is stored refused as a replay, ReplayOf naming
	// the delivery that holds the key. Claims older than the window are
	// dropped.
	DeliveryCreate(ctx context.Context, p DeliveryCreateParams) (*Delivery, error)
	// DeliveryUpdate records an attempt or the end of a delivery: its
	// state, reason, run, attempts, last status and next attempt. With
	// p.ReleaseKeys the replay keys it claimed are dropped (a delivery
	// that started no run may be sent again). errand.ErrNotFound for an
	// unknown id.
	DeliveryUpdate(ctx context.Context, p DeliveryUpdateParams) (*Delivery, error)
	// DeliveryGet returns one delivery with its body,
	// errand.ErrNotFound if there is none.
	DeliveryGet(ctx context.Context, id string) (*Delivery, error)
	// DeliveryList returns a pipeline's deliveries newest first, without
	// their bodies.
	DeliveryList(ctx context.Context, p DeliveryListParams) ([]*Delivery, error)
	// DeliveryClaim returns up to p.Limit pending deliveries whose next
	// attempt is due at p.Now (NextAt at or before it), oldest first,
	// and moves their NextAt to p.Until in the same write, so that one
	// sender at a time attempts each (a lease that ends at Until).
	DeliveryClaim(ctx context.Context, p DeliveryClaimParams) ([]*Delivery, error)

	// HookSecretRotate makes p.Secret a pipeline's current hook secret;
	// the current one, if any, becomes the previous one, valid until
	// p.PreviousUntil (nil: until the next rotation). A previous secret
	// of an earlier rotation is dropped.
	HookSecretRotate(ctx context.Context, p HookSecretRotateParams) (*HookSecrets, error)
	// HookSecretGet returns a pipeline's hook secrets, errand.ErrNotFound
	// if it has none.
	HookSecretGet(ctx context.Context, pipeline string) (*HookSecrets, error)
	// HookSecretEndPrevious drops a pipeline's previous hook secret at
	// once. errand.ErrNotFound if the pipeline has no hook secret.
	HookSecretEndPrevious(ctx context.Context, pipeline string) (*HookSecrets, error)
}

// DeliveryKind says which way a delivery went.
type DeliveryKind string

// Delivery kinds.
const (
	// DeliveryHook is an incoming webhook delivery.
	DeliveryHook DeliveryKind = "hook"
	// DeliveryNotification is an outgoing notification of a run.
	DeliveryNotification DeliveryKind = "notification"
)

// DeliveryState is where a delivery is.
type DeliveryState string

// Delivery states. A hook is pending until its run is started, then
// accepted, or refused; a notification is pending until it is
// delivered, or failed once its attempts are spent or its receiver
// refused it for good.
const (
	DeliveryPending   DeliveryState = "pending"
	DeliveryAccepted  DeliveryState = "accepted"
	DeliveryRefused   DeliveryState = "refused"
	DeliveryDelivered DeliveryState = "delivered"
	DeliveryFailed    DeliveryState = "failed"
)

// Limits of a stored delivery.
const (
	// MaxDeliveryBody bounds a stored body.
	MaxDeliveryBody = 4 << 20
	// MaxDeliveryField bounds each short text field (ids, names,
	// events, targets, keys).
	MaxDeliveryField = 1024
	// MaxDeliveryReason bounds a reason.
	MaxDeliveryReason = 4096
	// MaxReplayKeys bounds the replay keys of one delivery.
	MaxReplayKeys = 4
)

// Delivery is one webhook delivery, in or out.
type Delivery struct {
	ID       string
	Pipeline string
	Kind     DeliveryKind
	// Bucket is the group the delivery is kept in, bounded on its own
	// (DeliveryCreateParams.Keep): refusals of unsigned deliveries never
	// push out the record of genuine ones.
	Bucket string
	// Source is generic, github or gitea for a hook; webhook or slack
	// for a notification.
	Source string
	// Event is what the run was started for (push, pull_request, tag…),
	// or what a notification tells (run.finished, stage.waiting);
	// HeaderEvent is the event the hook's headers named, as sent.
	Event       string
	HeaderEvent string
	// ExternalID is the sender's delivery id (X-GitHub-Delivery,
	// X-Gitea-Delivery) or a notification's own.
	ExternalID string
	// DedupeKey, when set, is unique among deliveries: a notification
	// made twice for the same run and target is made once.
	DedupeKey string
	// Target is where a notification goes (a URL, or slack:<secret
	// name>), or the header that signed a hook.
	Target string
	// SecretName names the manager secret whose value signs a webhook
	// notification (scheduler.SecretSource); empty for an unsigned one.
	SecretName string
	State      DeliveryState
	// Reason says why a hook was refused, or a notification's last
	// error.
	Reason string
	// RunID is the run a hook started, or the run a notification is
	// about.
	RunID string
	// Attempts counts the sends of a notification.
	Attempts int
	// StatusCode is the last HTTP status: what a hook was answered, or
	// what a notification's receiver answered.
	StatusCode int
	// Body is the payload: a hook's as received (kept only once its
	// signature verified), a notification's as sent. Lists leave it out.
	Body []byte
	// ReplayOf is the delivery that an earlier claim of the same replay
	// key belongs to, for a delivery refused as a replay.
	ReplayOf string
	// RedeliveryOf is the delivery this one sends again.
	RedeliveryOf string
	CreatedAt    time.Time
	UpdatedAt    time.Time
	// NextAt is when a pending notification may next be attempted.
	NextAt *time.Time
}

// DeliveryCreateParams inserts a delivery. CreatedAt and UpdatedAt are
// set from Now.
type DeliveryCreateParams struct {
	Delivery *Delivery
	Now      time.Time
	// Keep bounds the deliveries kept of the pipeline's bucket, this one
	// included (0: 100).
	Keep int
	// ReplayKeys are claimed for the delivery (see DeliveryCreate);
	// ReplayWindow is how long a claim holds.
	ReplayKeys   []string
	ReplayWindow time.Duration
}

// Check checks the delivery's fields.
func (p DeliveryCreateParams) Check() error {
	d := p.Delivery
	if d == nil || d.ID == "" || d.Pipeline == "" {
		return errand.Errorf(errand.CodeInvalid, "delivery: id and pipeline are required")
	}
	if d.Kind != DeliveryHook && d.Kind != DeliveryNotification {
		return errand.Errorf(errand.CodeInvalid, "delivery.kind: %q is not hook or notification", d.Kind)
	}
	if err := checkDeliveryState(d.State); err != nil {
		return err
	}
	if len(d.Body) > MaxDeliveryBody {
		return errand.Errorf(errand.CodeTooLarge, "delivery.body: larger than %d bytes", MaxDeliveryBody)
	}
	if len(p.ReplayKeys) > MaxReplayKeys {
		return errand.Errorf(errand.CodeInvalid, "delivery: more than %d replay keys", MaxReplayKeys)
	}
	if len(p.ReplayKeys) > 0 && p.ReplayWindow <= 0 {
		return errand.Errorf(errand.CodeInvalid, "delivery: replay keys need a positive window")
	}
	fields := []string{d.ID, d.Pipeline, d.Bucket, d.Source, d.Event, d.HeaderEvent, d.ExternalID, d.DedupeKey, d.Target, d.SecretName, d.RunID, d.ReplayOf, d.RedeliveryOf}
	fields = append(fields, p.ReplayKeys...)
	for _, f := range fields {
		if len(f) > MaxDeliveryField {
			return errand.Errorf(errand.CodeInvalid, "delivery: a field is longer than %d bytes", MaxDeliveryField)
		}
	}
	if len(d.Reason) > MaxDeliveryReason {
		return errand.Errorf(errand.CodeInvalid, "delivery.reason: longer than %d bytes", MaxDeliveryReason)
	}
	return nil
}

func checkDeliveryState(s DeliveryState) error {
	switch s {
	case DeliveryPending, DeliveryAccepted, DeliveryRefused, DeliveryDelivered, DeliveryFailed:
		return nil
	}
	return errand.Errorf(errand.CodeInvalid, "delivery.state: %q is not a delivery state", s)
}

// DeliveryUpdateParams records an attempt or the end of a delivery. Every
// field is written as given.
type DeliveryUpdateParams struct {
	ID         string
	State      DeliveryState
	Reason     string
	RunID      string
	Attempts   int
	StatusCode int
	NextAt     *time.Time
	// ReleaseKeys drops the replay keys the delivery claimed.
	ReleaseKeys bool
	Now         time.Time
}

// Check checks the update's fields.
func (p DeliveryUpdateParams) Check() error {
	if err := checkDeliveryState(p.State); err != nil {
		return err
	}
	if len(p.Reason) > MaxDeliveryReason || len(p.RunID) > MaxDeliveryField {
		return errand.Errorf(errand.CodeInvalid, "delivery: reason or run id too long")
	}
	return nil
}

// DeliveryListParams pages DeliveryList.
type DeliveryListParams struct {
	Pipeline string
	// Kind lists one kind only; empty lists both.
	Kind DeliveryKind
	// Before returns deliveries older than the one with this id.
	Before string
	Limit  int // 0: 100
}

// DeliveryClaimParams claims due pending deliveries.
type DeliveryClaimParams struct {
	Now   time.Time
	Until time.Time
	Limit int // 0: 100
}

// HookSecrets are a pipeline's hook secrets: the current one and, for a
// while after a rotation, the previous one; a delivery signed with either
// verifies.
type HookSecrets struct {
	Pipeline string
	Current  string
	Previous string
	// PreviousUntil is when Previous stops verifying; nil for a previous
	// secret that stays valid until the next rotation.
	PreviousUntil *time.Time
	RotatedAt     time.Time
}

// Valid returns the secrets that verify a delivery at now: the current
// one, then the previous one while it holds.
func (h *HookSecrets) Valid(now time.Time) []string {
	out := []string{h.Current}
	if h.Previous != "" && (h.PreviousUntil == nil || now.Before(*h.PreviousUntil)) {
		out = append(out, h.Previous)
	}
	return out
}

// HookSecretRotateParams rotates a pipeline's hook secret.
type HookSecretRotateParams struct {
	Pipeline      string
	Secret        string
	PreviousUntil *time.Time
	Now           time.Time
}

// Check checks the rotation's fields.
func (p HookSecretRotateParams) Check() error {
	if p.Pipeline == "" || len(p.Pipeline) > MaxDeliveryField {
		return errand.Errorf(errand.CodeInvalid, "pipeline: 1 to %d bytes are required", MaxDeliveryField)
	}
	if len(p.Secret) < 16 || len(p.Secret) > MaxDeliveryField {
		return errand.Errorf(errand.CodeInvalid, "secret: 16 to %d bytes are required", MaxDeliveryField)
	}
	return nil
}

// MarkReplay makes d a delivery refused as a replay of the delivery
// holder, which claimed key ("<what>:<value>") within the window.
func MarkReplay(d *Delivery, key, holder string) {
	what, _, _ := strings.Cut(key, ":")
	d.State, d.ReplayOf = DeliveryRefused, holder
	d.Reason = fmt.Sprintf("replay: delivery %s was accepted with the same %s within the replay window", holder, what)
}
