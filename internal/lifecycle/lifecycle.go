// Package lifecycle is the one implementation of the lifecycle of
// Errand's long-lived components: Start starts their background loops,
// Stop ends them and waits for them, Done is closed once they ended.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrStopped is returned by Start after Stop.
var ErrStopped = errors.New("start after stop")

// ErrStarted is returned by a second Start.
var ErrStarted = errors.New("already started")

// Loops runs a component's background loops. The zero value is ready;
// it must not be copied after first use.
type Loops struct {
	mu      sync.Mutex
	started bool
	stopped bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	done    chan struct{}
}

func (l *Loops) doneLocked() chan struct{} {
	if l.done == nil {
		l.done = make(chan struct{})
	}
	return l.done
}

// Start runs each loop in a goroutine of its own with a context that ends
// when ctx ends or Stop is called. A component starts once.
func (l *Loops) Start(ctx context.Context, loops ...func(context.Context)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return ErrStopped
	}
	if l.started {
		return ErrStarted
	}
	l.started = true
	ctx, l.cancel = context.WithCancel(ctx)
	for _, loop := range loops {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			loop(ctx)
		}()
	}
	done := l.doneLocked()
	go func() {
		l.wg.Wait()
		close(done)
	}()
	return nil
}

// Stop ends the loops and waits for them, or for ctx. It reports whether
// this call stopped them: a second Stop does nothing and reports false.
// Stop without Start closes Done at once.
func (l *Loops) Stop(ctx context.Context) (bool, error) {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return false, nil
	}
	l.stopped = true
	started, cancel, done := l.started, l.cancel, l.doneLocked()
	l.mu.Unlock()
	if !started {
		close(done)
		return true, nil
	}
	cancel()
	select {
	case <-done:
		return true, nil
	case <-ctx.Done():
		return true, fmt.Errorf("waiting for background loops: %w", ctx.Err())
	}
}

// Done is closed once the loops have ended after Stop (at once for a
// component stopped without being started).
func (l *Loops) Done() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.doneLocked()
}
