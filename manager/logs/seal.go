package logs

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/manager/store"
)

// sealReadLimit is how many lines the sealer reads from the store at once.
const sealReadLimit = 10000

func (s *Service) runSealer(ctx context.Context) {
	t := time.NewTicker(s.cfg.SealInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.sealWake:
		}
		if _, err := s.SealPass(ctx); err != nil && ctx.Err() == nil {
			s.log.WithError(err).Warn("sealing logs failed; retrying later")
		}
	}
}

// SealPass seals the logs of ended tasks until none is left, and returns
// how many it sealed. A log that fails to seal (its objects cannot be
// written, say) does not hold up the others: it is skipped, counted in
// errand_log_seal_failures_total, and retried with backoff. Only a store
// that cannot list what to seal fails the pass.
func (s *Service) SealPass(ctx context.Context) (int, error) {
	total := 0
	seen := make(map[string]bool)
	for {
		// Ask for the logs waiting for a retry on top of a batch, so that
		// a full batch of failing logs cannot hide the others.
		limit := sealBatch + s.seals.waiting()
		ids, err := s.store.LogSealList(ctx, limit)
		if err != nil {
			return total, fmt.Errorf("list logs to seal: %w", err)
		}
		sealed := 0
		for _, id := range ids {
			seen[id] = true
			if !s.seals.due(id, s.now()) {
				continue
			}
			if err := s.sealLog(ctx, id); err != nil {
				if ctx.Err() != nil {
					return total, err
				}
				wait := s.seals.failed(id, s.now())
				s.sealFailures.Inc()
				s.log.WithError(err).WithFields(logrus.Fields{"task_id": id, "retry_in": wait.String()}).
					Warn("sealing a task's log failed; the others go on and this one is retried later")
				continue
			}
			s.seals.sealed(id)
			sealed++
			total++
		}
		if len(ids) < limit {
			s.seals.keepOnly(seen)
			return total, nil
		}
		if sealed == 0 {
			// Nothing sealed in a whole batch: the object storage may be
			// down; the next pass tries again.
			return total, nil
		}
	}
}

// Bounds of the retries of logs that failed to seal.
const (
	sealRetryFirst = 5 * time.Second
	sealRetryMax   = 10 * time.Minute
	// maxSealRetries bounds the logs remembered as failing; more are
	// retried on every pass.
	maxSealRetries = 10000
)

// sealRetries remembers the logs that failed to seal and when each may
// be tried again. The zero value is ready to use.
type sealRetries struct {
	mu   sync.Mutex
	byID map[string]*sealRetry
}

type sealRetry struct {
	backoff *backoff.ExponentialBackOff
	next    time.Time
}

// waiting returns how many logs wait for a retry.
func (r *sealRetries) waiting() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

// due reports whether the log of task id may be sealed now.
func (r *sealRetries) due(id string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.byID[id]
	return !ok || !now.Before(e.next)
}

// failed records a failed seal and returns how long until the next try.
func (r *sealRetries) failed(id string, now time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.byID[id]
	if !ok {
		if len(r.byID) >= maxSealRetries {
			return 0
		}
		b := backoff.NewExponentialBackOff()
		b.InitialInterval = sealRetryFirst
		b.MaxInterval = sealRetryMax
		b.MaxElapsedTime = 0
		b.Reset()
		e = &sealRetry{backoff: b}
		if r.byID == nil {
			r.byID = make(map[string]*sealRetry)
		}
		r.byID[id] = e
	}
	wait := e.backoff.NextBackOff()
	e.next = now.Add(wait)
	return wait
}

// sealed forgets a log that sealed.
func (r *sealRetries) sealed(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.byID, id)
}

// keepOnly forgets the logs that no longer wait to be sealed (another
// replica sealed them, say).
func (r *sealRetries) keepOnly(ids map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range r.byID {
		if !ids[id] {
			delete(r.byID, id)
		}
	}
}

// sealLog writes an ended task's log into objects of at most
// LogObjectSize bytes (a single longer line gets an object of its own),
// then records them in the store, which drops the lines. A pass that
// fails halfway leaves the store as it was; the next pass writes the same
// keys again.
func (s *Service) sealLog(ctx context.Context, taskID string) error {
	var (
		objects []store.LogObject
		buf     bytes.Buffer
		first   int64
		count   int64
		offset  int64
	)
	put := func() error {
		o := store.LogObject{Key: Key(taskID, len(objects)), FirstLine: first, Lines: count, Size: int64(buf.Len())}
		if err := s.objects.Put(ctx, o.Key, bytes.NewReader(buf.Bytes()), o.Size); err != nil {
			return fmt.Errorf("seal log of task %s: %w", taskID, err)
		}
		objects = append(objects, o)
		buf.Reset()
		first += count
		count = 0
		return nil
	}
	for {
		lines, err := s.store.LogRead(ctx, store.LogReadParams{TaskID: taskID, Offset: offset, Limit: sealReadLimit})
		if err != nil {
			return fmt.Errorf("seal log of task %s: %w", taskID, err)
		}
		for _, l := range lines {
			if count > 0 && int64(buf.Len()+len(l)+1) > s.cfg.ObjectSize {
				if err := put(); err != nil {
					return err
				}
			}
			buf.WriteString(l)
			buf.WriteByte('\n')
			count++
		}
		offset += int64(len(lines))
		if len(lines) < sealReadLimit {
			break
		}
	}
	if count > 0 {
		if err := put(); err != nil {
			return err
		}
	}
	if err := s.store.LogSeal(ctx, store.LogSealParams{TaskID: taskID, Objects: objects}); err != nil {
		return fmt.Errorf("seal log of task %s: %w", taskID, err)
	}
	s.log.WithFields(logrus.Fields{"task_id": taskID, "lines": offset, "objects": len(objects)}).Debug("log sealed")
	return nil
}
