package logs

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/ost/posix"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/manager/store/sqlite"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// A log is appended by the delegate holding the task, with its secret
// values masked, followed while it grows, and read back from object
// storage once the task ended and the sealer moved it there.
func TestAppendFollowSeal(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "errand.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	objects, err := posix.New(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	defer objects.Close()
	log := logrus.New()
	log.SetOutput(io.Discard)
	sched, err := scheduler.New(scheduler.Config{HeartbeatInterval: time.Second, LeaseTTL: 4 * time.Second,
		MaxWait: time.Second, SweepInterval: time.Hour, HeartbeatFlushInterval: time.Hour, Log: log}, st)
	if err != nil {
		t.Fatal(err)
	}
	defer sched.Stop(ctx)
	s, err := New(Config{ObjectSize: 1024, SealInterval: 10 * time.Millisecond, Log: log}, st, objects, sched)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Stop(ctx); err != nil {
			t.Error(err)
		}
		<-s.Done()
	}()

	d, _, err := sched.Register(ctx, &errand.Delegate{Name: "d"})
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(`{"secrets":{"KEY":"hunter2-key"}}`)
	if _, err := sched.Create(ctx, []*errand.Task{{ID: "t1", Type: "noop", Data: data, MaxAttempts: 1}}); err != nil {
		t.Fatal(err)
	}
	ans, err := sched.Acquire(ctx, d.ID, 0, 1)
	if err != nil || len(ans.Tasks) != 1 {
		t.Fatalf("acquire = %+v, %v", ans, err)
	}
	lease := ans.Tasks[0].Lease.Token

	followed := make(chan []string, 1)
	begun := make(chan struct{})
	go func() {
		var got []string
		err := s.Follow(ctx, "t1", 0, func() { close(begun) }, func(lines []string) error {
			got = append(got, lines...)
			return nil
		})
		if err != nil {
			got = append(got, "error: "+err.Error())
		}
		followed <- got
	}()
	<-begun
	for i := range 3 {
		next, err := s.Append(ctx, Append{TaskID: "t1", DelegateID: d.ID, LeaseToken: lease, Offset: int64(i),
			Lines: []string{fmt.Sprintf("line %d hunter2-key", i)}})
		if err != nil || next != int64(i+1) {
			t.Fatalf("append %d = %d, %v", i, next, err)
		}
	}
	if _, err := s.Append(ctx, Append{TaskID: "t1", DelegateID: d.ID, LeaseToken: lease, Offset: 5, Lines: []string{"x"}}); errand.ErrorCode(err) != errand.CodeLogOffset {
		t.Fatalf("append with a gap = %v, want %s", err, errand.CodeLogOffset)
	}
	if _, err := sched.Report(ctx, scheduler.Report{TaskID: "t1", DelegateID: d.ID, LeaseToken: lease, State: errand.StateSucceeded}); err != nil {
		t.Fatal(err)
	}
	want := "[line 0 ****** line 1 ****** line 2 ******]"
	select {
	case got := <-followed:
		if fmt.Sprint(got) != want {
			t.Fatalf("followed %q, want %s", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end with the task")
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, sealed, err := st.LogObjects(ctx, "t1"); err != nil {
			t.Fatal(err)
		} else if sealed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the log was never sealed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	page, err := s.Read(ctx, "t1", 1, 10)
	if err != nil || fmt.Sprint(page.Lines) != "[line 1 ****** line 2 ******]" || page.Next != 3 || !page.Complete {
		t.Fatalf("read from the sealed log = %+v, %v", page, err)
	}
}
