package scheduler

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// NewSecret returns n random bytes, URL-safe base64 encoded. A secret
// never starts with '-', so that `--token SECRET` is never read as a flag.
func NewSecret(n int) (string, error) {
	b := make([]byte, n)
	for {
		if _, err := rand.Read(b); err != nil {
			return "", fmt.Errorf("generate secret: %w", err)
		}
		if s := base64.RawURLEncoding.EncodeToString(b); s[0] != '-' {
			return s, nil
		}
	}
}

// HashToken returns how a delegate token is stored: its SHA-256, in hex.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// Register registers a new delegate from d (its id is made here, its
// state and heartbeat are the store's) and returns it with its token,
// "<id>.<secret>".
func (s *Scheduler) Register(ctx context.Context, d *errand.Delegate) (*errand.Delegate, string, error) {
	d.ID = ulid.Make().String()
	if d.Capacity == 0 {
		d.Capacity = 1
	}
	secret, err := NewSecret(32)
	if err != nil {
		return nil, "", err
	}
	token := d.ID + "." + secret
	reg, err := s.store.DelegateRegister(ctx, store.DelegateRegisterParams{Delegate: d, TokenHash: HashToken(token), Now: s.now()})
	if err != nil {
		return nil, "", fmt.Errorf("register delegate %s: %w", d.ID, err)
	}
	s.tokens.put(sha256.Sum256([]byte(token)), reg.ID)
	s.cache.registered(reg, reg.LastHeartbeat)
	s.log.WithFields(logrus.Fields{"delegate_id": reg.ID, "name": reg.Name, "group": reg.Group, "hostname": reg.Hostname}).Info("delegate registered")
	return reg, token, nil
}

// Heartbeat is what a delegate says of itself in a heartbeat.
type Heartbeat struct {
	// Running names the tasks it holds: their leases are renewed.
	Running []string
	// Resumed says Running is complete: the delegate (re)started, and
	// every lease of its that it does not name ends at once.
	Resumed    bool
	Draining   bool
	Overloaded bool
}

// Heartbeat records a delegate's sign of life: its heartbeat is written
// with the next flush that needs it, changes of its condition (draining,
// overloaded, back from a restart) at once. It answers with the cancels
// and drain the delegate should know of.
func (s *Scheduler) Heartbeat(ctx context.Context, id string, hb Heartbeat) (*Answer, error) {
	v, err := s.liveDelegate(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("heartbeat of delegate %s: %w", id, err)
	}
	now := s.now()
	if hb.Resumed {
		if err := s.releaseUnheld(ctx, id, hb.Running, now); err != nil {
			return nil, err
		}
	}
	s.beats.recordRunning(id, hb.Running)
	if s.cache.heardFrom(id, now, true) {
		// A long-poll still waiting from before the delegate was lost
		// may take tasks again: let it end so that the next one does.
		s.hub.wakeDelegate(id)
	}
	// Changes of condition are written at once; the heartbeat itself
	// waits for the next flush.
	d := v.d
	var up store.DelegateUpdateParams
	if hb.Overloaded != d.Overloaded {
		up.Overloaded = &hb.Overloaded
	}
	if hb.Draining && d.State != errand.DelegateDraining {
		st := errand.DelegateDraining
		up.State = &st
	}
	if hb.Resumed && !hb.Draining {
		// A delegate killed while draining comes back as a new process
		// that takes work: it is active again, and a drain asked of the
		// old process is over.
		if d.State == errand.DelegateDraining {
			st := errand.DelegateActive
			up.State = &st
		}
		if d.DrainRequested {
			no := false
			up.DrainRequested = &no
		}
	}
	if up.Overloaded != nil || up.State != nil || up.DrainRequested != nil {
		up.ID = id
		if d, err = s.store.DelegateUpdate(ctx, up); err != nil {
			return nil, fmt.Errorf("update delegate %s: %w", id, err)
		}
		s.cache.put(d, now)
		s.log.WithFields(logrus.Fields{"delegate_id": id, "overloaded": d.Overloaded, "state": d.State}).Info("delegate condition changed")
	}
	if err := s.recheckCancels(ctx, id); err != nil {
		return nil, err
	}
	if v, err = s.delegate(ctx, id); err != nil {
		return nil, fmt.Errorf("heartbeat of delegate %s: %w", id, err)
	}
	return &Answer{Cancel: v.cancels, Drain: v.d.DrainRequested, s: s, delegateID: id}, nil
}

// Heard records a sign of life of delegate id other than a heartbeat (a
// report, a log append): it is written with the next flush that needs
// it.
func (s *Scheduler) Heard(id string) {
	if id != "" {
		s.beats.record(id)
	}
}

// releaseUnheld applies the complete statement of a delegate that
// resumed: every lease of its that it does not name ends at once.
func (s *Scheduler) releaseUnheld(ctx context.Context, id string, held []string, now time.Time) error {
	res, err := s.store.TaskRelease(ctx, store.TaskReleaseParams{DelegateID: id, Held: held, Now: now})
	if err != nil {
		return fmt.Errorf("heartbeat of delegate %s: %w", id, err)
	}
	if n := len(res.Requeued) + len(res.Failed) + len(res.Cancelled); n > 0 {
		s.log.WithFields(logrus.Fields{
			"delegate_id": id,
			"requeued":    res.Requeued,
			"failed":      res.Failed,
			"cancelled":   res.Cancelled,
		}).Warn("resumed delegate no longer holds these tasks: their leases ended")
	}
	return nil
}

// Deregister removes delegate id; the leases it held end.
func (s *Scheduler) Deregister(ctx context.Context, id string) error {
	if err := s.store.DelegateDelete(ctx, store.DelegateDeleteParams{ID: id, Now: s.now()}); err != nil {
		return fmt.Errorf("deregister delegate %s: %w", id, err)
	}
	s.tokens.forget(id)
	s.beats.forget(id)
	s.cache.forget(id)
	// Its tasks' followers may go to another delegate of its group.
	s.hub.queuedChanged()
	return nil
}

// Drain asks delegate id to drain: it finishes what it holds and takes
// no more.
func (s *Scheduler) Drain(ctx context.Context, id string) error {
	yes := true
	d, err := s.store.DelegateUpdate(ctx, store.DelegateUpdateParams{ID: id, DrainRequested: &yes})
	if err != nil {
		return fmt.Errorf("drain delegate %s: %w", id, err)
	}
	s.cache.put(d, time.Time{})
	s.log.WithField("delegate_id", id).Info("delegate asked to drain")
	return nil
}

// Delegate returns delegate id as the scheduler knows it (from its
// cache, read from the store on first use).
func (s *Scheduler) Delegate(ctx context.Context, id string) (*errand.Delegate, error) {
	v, err := s.delegate(ctx, id)
	if err != nil {
		return nil, err
	}
	return v.d, nil
}

// tokenCache remembers delegate tokens already verified against the
// store, by their SHA-256, so that a delegate's requests cost one hash
// and no read for authentication.
type tokenCache struct {
	mu     sync.RWMutex
	byHash map[[sha256.Size]byte]string // token hash → delegate id
}

func (c *tokenCache) get(hash [sha256.Size]byte) (string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	id, ok := c.byHash[hash]
	return id, ok
}

func (c *tokenCache) put(hash [sha256.Size]byte, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byHash == nil {
		c.byHash = make(map[[sha256.Size]byte]string)
	}
	c.byHash[hash] = id
}

func (c *tokenCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for h, d := range c.byHash {
		if d == id {
			delete(c.byHash, h)
		}
	}
}

// DelegateForToken returns the id of the delegate the token belongs to,
// or "" when it belongs to none. A delegate token reads "<id>.<secret>":
// the id says which stored hash to compare with; validID says whether an
// id may name a delegate at all.
func (s *Scheduler) DelegateForToken(ctx context.Context, token string, validID func(string) bool) (string, error) {
	sum := sha256.Sum256([]byte(token))
	if id, ok := s.tokens.get(sum); ok {
		return id, nil
	}
	id, _, ok := strings.Cut(token, ".")
	if !ok || !validID(id) {
		return "", nil
	}
	want, err := s.store.DelegateTokenHash(ctx, id)
	if errors.Is(err, errand.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up delegate %s: %w", id, err)
	}
	if subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(want)) != 1 {
		return "", nil
	}
	s.tokens.put(sum, id)
	return id, nil
}

// Evict drops delegate id from the cache: its next request reads it, its
// cancels included, from the store again.
func (s *Scheduler) Evict(id string) { s.cache.forget(id) }
