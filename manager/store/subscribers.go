package store

import "sync"

// Subscribers keeps the callbacks of Store.Subscribe for a store and
// hands them its committed changes. The zero value is ready to use.
type Subscribers struct {
	mu   sync.Mutex
	next int
	fns  map[int]func(Change)
}

// Add registers fn and returns the function that removes it; calling that
// more than once is harmless.
func (s *Subscribers) Add(fn func(Change)) (unsubscribe func()) {
	s.mu.Lock()
	if s.fns == nil {
		s.fns = make(map[int]func(Change))
	}
	id := s.next
	s.next++
	s.fns[id] = fn
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.fns, id)
			s.mu.Unlock()
		})
	}
}

// Deliver calls every registered callback with each change, in order,
// outside the lock so that a callback may subscribe or unsubscribe.
func (s *Subscribers) Deliver(changes []Change) {
	if len(changes) == 0 {
		return
	}
	s.mu.Lock()
	fns := make([]func(Change), 0, len(s.fns))
	for _, fn := range s.fns {
		fns = append(fns, fn)
	}
	s.mu.Unlock()
	for _, c := range changes {
		for _, fn := range fns {
			fn(c)
		}
	}
}

// Clear removes every callback (a store that closes).
func (s *Subscribers) Clear() {
	s.mu.Lock()
	s.fns = nil
	s.mu.Unlock()
}
