package delegate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/poller"
)

// identify resumes a stored identity if the manager still knows it, or
// registers anew. It retries while the manager is unreachable and fails at
// once when the manager refuses the registration token.
func (d *Delegate) identify(ctx context.Context) error {
	stored, err := d.ids.Load()
	if err != nil {
		return fmt.Errorf("load delegate identity: %w", err)
	}
	if stored != nil && stored.ID != "" {
		dc := d.reg.Authenticated(stored.Token)
		// The first word of this process: what it holds is all it holds
		// (nothing), so the leases a previous process left end at once
		// rather than being renewed by this one's heartbeats.
		var resp *client.HeartbeatResponse
		retry := d.retry
		retry.Notify = func(err error, _ time.Duration) { d.log.WithError(err).Warn("manager unreachable; retrying") }
		err := retry.Do(ctx, func() error {
			var err error
			resp, err = dc.Heartbeat(ctx, stored.ID, &client.HeartbeatRequest{Resumed: true, Running: d.poller.Running()})
			return err
		})
		switch {
		case err == nil:
			d.setIdentity(stored.ID, dc)
			d.setInterval(resp.HeartbeatInterval)
			d.log.WithField("delegate_id", stored.ID).Info("resumed as a registered delegate")
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		}
		d.log.WithError(err).WithField("delegate_id", stored.ID).Warn("manager no longer knows this delegate; registering anew")
		if err := d.ids.Clear(); err != nil {
			return fmt.Errorf("forget delegate identity: %w", err)
		}
	}
	return d.register(ctx)
}

// register registers the delegate anew and keeps its identity.
func (d *Delegate) register(ctx context.Context) error {
	var reg *client.Registration
	retry := d.retry
	retry.Notify = func(err error, _ time.Duration) {
		d.log.WithError(err).Warn("manager unreachable; retrying registration")
	}
	err := retry.Do(ctx, func() error {
		var err error
		reg, err = d.reg.Register(ctx, &d.req)
		return err
	})
	if err != nil {
		if errors.Is(err, errand.ErrUnauthorized) || errors.Is(err, errand.ErrForbidden) {
			return fmt.Errorf("the manager refused the registration token (check --token / ERRAND_TOKEN): %w", err)
		}
		return fmt.Errorf("register delegate %q: %w", d.req.Name, err)
	}
	if err := d.ids.Save(&Identity{ID: reg.ID, Token: reg.Token}); err != nil {
		return fmt.Errorf("save delegate identity: %w", err)
	}
	d.setIdentity(reg.ID, d.reg.Authenticated(reg.Token))
	d.setInterval(reg.HeartbeatInterval)
	d.log.WithFields(logrus.Fields{"delegate_id": reg.ID, "name": reg.Name}).Info("registered")
	return nil
}

func (d *Delegate) identity() (string, client.DelegateClient) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.id, d.dc
}

func (d *Delegate) setIdentity(id string, dc client.DelegateClient) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.id, d.dc = id, dc
}

func (d *Delegate) setInterval(i errand.Duration) {
	if i <= 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.interval = time.Duration(i)
}

func (d *Delegate) heartbeatInterval() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.interval
}

// heartbeatLoop heartbeats every interval, and at once when the poller
// stops or starts taking work. While the poller rests in a poll, the poll
// stands for the heartbeat.
func (d *Delegate) heartbeatLoop(ctx context.Context) {
	for {
		t := d.clock.NewTimer(d.heartbeatInterval())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
			if d.poller.Resting() {
				continue
			}
		case <-d.poller.Changed():
			t.Stop()
		}
		d.heartbeat(ctx)
	}
}

// heartbeat says what the delegate holds and how it is, and applies what
// the manager answers: cancels and a drain. A failure waits for the next
// beat.
func (d *Delegate) heartbeat(ctx context.Context) {
	req := &client.HeartbeatRequest{Draining: d.poller.Draining(), Overloaded: d.poller.Overloaded(), Running: d.poller.Running()}
	hctx, cancel := context.WithTimeout(ctx, d.heartbeatInterval())
	defer cancel()
	id, c := d.identity()
	resp, err := c.Heartbeat(hctx, id, req)
	if err != nil {
		if ctx.Err() == nil {
			d.log.WithError(err).WithField("delegate_id", id).Warn("heartbeat failed")
		}
		return
	}
	d.setInterval(resp.HeartbeatInterval)
	if len(resp.Cancel) > 0 {
		d.poller.Cancel(resp.Cancel...)
	}
	if resp.Drain {
		d.poller.Drain()
	}
}

// session is the delegate as its poller sees it.
type session struct{ d *Delegate }

var _ poller.Session = session{}

// Delegate returns the delegate's id and its client.
func (s session) Delegate() (string, poller.Client) {
	id, dc := s.d.identity()
	return id, dc
}

// Refused registers the delegate anew after the manager refused its
// identity.
func (s session) Refused(ctx context.Context, err error) error {
	s.d.log.WithError(err).Warn("manager refused the delegate's token; registering anew")
	if err := s.d.ids.Clear(); err != nil {
		return fmt.Errorf("forget delegate identity: %w", err)
	}
	return s.d.register(ctx)
}
