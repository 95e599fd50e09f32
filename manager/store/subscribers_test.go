package store

import "testing"

func TestSubscribers(t *testing.T) {
	var s Subscribers
	var a, b []ChangeKind
	stopA := s.Add(func(c Change) { a = append(a, c.Kind) })
	s.Add(func(c Change) { b = append(b, c.Kind) })
	s.Deliver([]Change{{Kind: ChangeTaskQueued}, {Kind: ChangeTaskEnded}})
	stopA()
	stopA()
	s.Deliver([]Change{{Kind: ChangeLogAppended}})
	if len(a) != 2 || a[1] != ChangeTaskEnded || len(b) != 3 || b[2] != ChangeLogAppended {
		t.Fatalf("delivered a=%v b=%v", a, b)
	}
	s.Clear()
	s.Deliver([]Change{{Kind: ChangeTaskQueued}})
	if len(b) != 3 {
		t.Fatalf("delivered after Clear: %v", b)
	}
}
