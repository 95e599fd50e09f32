package clock

import (
	"testing"
	"time"
)

func TestFakeFiresDueTimersInOrder(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	late, early, stopped := f.NewTimer(2*time.Second), f.NewTimer(time.Second), f.NewTimer(time.Second)
	if !stopped.Stop() || f.Timers() != 2 {
		t.Fatalf("after Stop: %d timers, want 2", f.Timers())
	}
	f.Advance(1500 * time.Millisecond)
	select {
	case at := <-early.C():
		if !at.Equal(time.Unix(1, 0)) {
			t.Fatalf("early fired at %v", at)
		}
	default:
		t.Fatal("the timer due did not fire")
	}
	select {
	case <-late.C():
		t.Fatal("a timer fired before its time")
	default:
	}
	f.Advance(time.Second)
	if at := <-late.C(); !at.Equal(time.Unix(2, 0)) || !f.Now().Equal(time.Unix(2, 500_000_000)) {
		t.Fatalf("late fired at %v, clock at %v", at, f.Now())
	}
	select {
	case <-stopped.C():
		t.Fatal("a stopped timer fired")
	default:
	}
}

func TestWaitTimers(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	armed := make(chan struct{})
	go func() {
		defer close(armed)
		<-f.NewTimer(time.Minute).C()
	}()
	if !f.WaitTimers(1, nil) {
		t.Fatal("WaitTimers gave up")
	}
	f.Advance(time.Minute)
	<-armed
	done := make(chan struct{})
	close(done)
	if f.WaitTimers(1, done) {
		t.Fatal("WaitTimers saw a timer that is not there")
	}
}
