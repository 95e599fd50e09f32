package poller

import (
	"context"
	"fmt"
	"sync"
)

// Pool runs task workers. The poller never asks for more workers than its
// capacity, so a Pool need not queue; embedders bring their own to share
// threads with the rest of their program or to account for them.
type Pool interface {
	// Go runs f on a worker. It blocks until a worker is free or ctx is
	// done, in which case f does not run and the error says why.
	Go(ctx context.Context, f func()) error
	// Wait blocks until every f started by Go has returned.
	Wait()
}

// NewPool returns the default Pool: at most size goroutines at a time.
func NewPool(size int) Pool {
	if size < 1 {
		size = 1
	}
	return &semPool{sem: make(chan struct{}, size)}
}

type semPool struct {
	sem chan struct{}
	wg  sync.WaitGroup
}

func (p *semPool) Go(ctx context.Context, f func()) error {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("wait for a free worker: %w", ctx.Err())
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer func() { <-p.sem }()
		f()
	}()
	return nil
}

func (p *semPool) Wait() { p.wg.Wait() }
