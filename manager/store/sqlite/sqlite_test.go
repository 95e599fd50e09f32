package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/errandci/errand"

	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/drivertest"
	"github.com/errandci/errand/manager/store/sqlite"
	"github.com/errandci/errand/manager/store/storetest"
)

func open(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, filepath.Join(t.TempDir(), "errand.db")) })
}

func TestReopenKeepsStateAndMigratesOnce(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "errand.db")
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.TaskCreate(ctx, store.TaskCreateParams{Now: now, Tasks: []*errand.Task{
		{ID: "a", Type: "x"}, {ID: "b", Type: "x", DependsOn: []errand.Dependency{{Task: "a"}}}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = s.TaskCreate(ctx, store.TaskCreateParams{Now: now, Tasks: []*errand.Task{{ID: "c", Type: "x"}}})
	if !errors.Is(err, errand.ErrUnavailable) {
		t.Fatalf("write after Close: err = %v, want unavailable", err)
	}

	s = open(t, path)
	for id, want := range map[string]errand.State{"a": errand.StateQueued, "b": errand.StatePending} {
		tk, err := s.TaskGet(ctx, id)
		if err != nil || tk.State != want {
			t.Fatalf("after reopen task %s = %v, %v; want %s", id, tk, err, want)
		}
	}
	// The dependency edge survived too: ending a releases b.
	d, err := s.DelegateRegister(ctx, store.DelegateRegisterParams{Delegate: &errand.Delegate{ID: "d", Name: "d"}, TokenHash: "h", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.TaskAcquire(ctx, store.TaskAcquireParams{Delegate: d, Max: 1, Now: now})
	if err != nil || len(got) != 1 {
		t.Fatalf("acquire after reopen: %v, %v", got, err)
	}
	if _, err := s.TaskReport(ctx, store.TaskReportParams{TaskID: "a", DelegateID: "d", LeaseToken: got[0].Lease.Token,
		State: errand.StateSucceeded, Now: now}); err != nil {
		t.Fatal(err)
	}
	if tk, _ := s.TaskGet(ctx, "b"); tk.State != errand.StateQueued {
		t.Fatalf("b after a succeeded: %s", tk.State)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var migrations int
	if err := db.QueryRow(`SELECT count(*) FROM schema_migrations`).Scan(&migrations); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if migrations != len(files) {
		t.Fatalf("schema_migrations holds %d rows after two opens, want %d", migrations, len(files))
	}
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
}

// TestConcurrentWritesFailAlone checks that writes sharing a commit do not
// share their failures: duplicates are refused, everything else is stored.
func TestConcurrentWritesFailAlone(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "errand.db"))
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := s.TaskCreate(ctx, store.TaskCreateParams{Now: now, Tasks: []*errand.Task{{ID: "taken", Type: "x"}}}); err != nil {
		t.Fatal(err)
	}
	const writers = 40
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tasks := []*errand.Task{{ID: fmt.Sprintf("t%d", i), Type: "x"}}
			if i%2 == 1 {
				// A batch that fails after its first insert.
				tasks = append(tasks, &errand.Task{ID: "taken", Type: "x"})
			}
			_, errs[i] = s.TaskCreate(ctx, store.TaskCreateParams{Now: now, Tasks: tasks})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		_, getErr := s.TaskGet(ctx, fmt.Sprintf("t%d", i))
		if i%2 == 1 {
			if !errors.Is(err, errand.ErrConflict) || !errors.Is(getErr, errand.ErrNotFound) {
				t.Fatalf("writer %d: err %v, stored %v; want conflict and nothing stored", i, err, getErr)
			}
			continue
		}
		if err != nil || getErr != nil {
			t.Fatalf("writer %d: err %v, get %v", i, err, getErr)
		}
	}
}

func TestWriteHonoursCancelledContext(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "errand.db"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.TaskCreate(ctx, store.TaskCreateParams{Now: time.Now(), Tasks: []*errand.Task{{ID: "a", Type: "x"}}})
	if err == nil {
		// The writer was free and took the write at once: it committed.
		if _, err := s.TaskGet(context.Background(), "a"); err != nil {
			t.Fatalf("write reported done but not stored: %v", err)
		}
		return
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, err := s.TaskGet(context.Background(), "a"); !errors.Is(err, errand.ErrNotFound) {
		t.Fatalf("cancelled write stored the task (err %v)", err)
	}
}

func TestDriverContract(t *testing.T) {
	drivertest.Run(t, func(t *testing.T) store.Driver {
		d, err := sqlite.OpenDriver(context.Background(), filepath.Join(t.TempDir(), "errand.db"))
		if err != nil {
			t.Fatalf("OpenDriver: %v", err)
		}
		t.Cleanup(func() {
			if err := d.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return d
	})
}
