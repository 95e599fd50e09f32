package poller

// Pending returns how many reports wait to be sent and how many are in
// flight.
func (p *Poller) Pending() (queued, inflight int) {
	p.out.mu.Lock()
	defer p.out.mu.Unlock()
	for _, n := range p.out.inflight {
		inflight += n
	}
	return len(p.out.queue), inflight
}
