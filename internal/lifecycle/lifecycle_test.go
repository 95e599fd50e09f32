package lifecycle

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestStartStop(t *testing.T) {
	var l Loops
	ran := make(chan struct{}, 2)
	loop := func(ctx context.Context) {
		ran <- struct{}{}
		<-ctx.Done()
	}
	if err := l.Start(context.Background(), loop, loop); err != nil {
		t.Fatal(err)
	}
	<-ran
	<-ran
	if err := l.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start = %v, want ErrStarted", err)
	}
	select {
	case <-l.Done():
		t.Fatal("Done closed before Stop")
	default:
	}
	if first, err := l.Stop(context.Background()); !first || err != nil {
		t.Fatalf("Stop = %v, %v", first, err)
	}
	<-l.Done()
	if first, err := l.Stop(context.Background()); first || err != nil {
		t.Fatalf("second Stop = %v, %v", first, err)
	}
	if err := l.Start(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("Start after Stop = %v, want ErrStopped", err)
	}
}

func TestStopWithoutStart(t *testing.T) {
	var l Loops
	if first, err := l.Stop(context.Background()); !first || err != nil {
		t.Fatalf("Stop = %v, %v", first, err)
	}
	<-l.Done()
}

// A loop that does not end in time makes Stop return ctx's error; Done
// closes once it ends.
func TestStopTimesOut(t *testing.T) {
	var l Loops
	release := make(chan struct{})
	if err := l.Start(context.Background(), func(context.Context) { <-release }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := l.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want the deadline", err)
	}
	close(release)
	<-l.Done()
}
