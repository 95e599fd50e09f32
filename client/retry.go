package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/errandci/errand"
)

// Retrier is the one retry layer of manager calls: its caller knows the
// call is safe to repeat, errand.Retryable says whether a failure may
// pass. The zero Retrier waits exponentially with jitter, from 100ms up to
// 5s between attempts, until ctx ends.
type Retrier struct {
	// NewBackOff returns the waits of one call's retries; its
	// MaxElapsedTime, if any, bounds them.
	NewBackOff func() backoff.BackOff
	// Timer waits between attempts; real time when nil.
	Timer func() backoff.Timer
	// Notify, when set, is told of each failure before the wait that
	// follows it.
	Notify func(err error, wait time.Duration)
}

// Do calls op until it succeeds, fails with an error that is not
// Retryable (or that op marked backoff.Permanent), the backoff stops or
// ctx ends. Every wait selects on ctx.Done. When ctx ends during a wait
// the error says what failed before it.
func (r Retrier) Do(ctx context.Context, op func() error) error {
	var b backoff.BackOff
	if r.NewBackOff != nil {
		b = r.NewBackOff()
	} else {
		b = backoff.NewExponentialBackOff(
			backoff.WithInitialInterval(100*time.Millisecond),
			backoff.WithMaxInterval(5*time.Second),
			backoff.WithMaxElapsedTime(0),
		)
	}
	var t backoff.Timer
	if r.Timer != nil {
		t = r.Timer()
	}
	var last error
	err := backoff.RetryNotifyWithTimer(func() error {
		last = op()
		var perm *backoff.PermanentError
		if last == nil || errors.As(last, &perm) {
			return last
		}
		if ctx.Err() != nil || !errand.Retryable(last) {
			return backoff.Permanent(last)
		}
		return last
	}, backoff.WithContext(b, ctx), r.Notify, t)
	if err != nil && ctx.Err() != nil && last != nil && !errors.Is(err, last) {
		return fmt.Errorf("%w (last attempt: %v)", err, last)
	}
	return err
}
