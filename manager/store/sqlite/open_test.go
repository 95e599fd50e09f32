package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/sqlite"
)

// fill creates n tasks, each with about size bytes of data.
func fill(t *testing.T, s *sqlite.Store, prefix string, n, size int) {
	t.Helper()
	data := fmt.Sprintf(`{"pad":%q}`, strings.Repeat("x", size))
	now := time.Now()
	for i := 0; i < n; i += 100 {
		var tasks []*errand.Task
		for j := i; j < min(i+100, n); j++ {
			tasks = append(tasks, &errand.Task{ID: fmt.Sprintf("%s-%06d", prefix, j), Type: "x", Data: []byte(data)})
		}
		if _, err := s.TaskCreate(context.Background(), store.TaskCreateParams{Now: now, Tasks: tasks}); err != nil {
			t.Fatalf("create tasks: %v", err)
		}
	}
}

func TestOpenCreatesOwnerOnlyFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "errand.db")
	s := open(t, path)
	fill(t, s, "t", 10, 10)
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("%s: mode %o, want 600", filepath.Base(p), m)
		}
	}
}

func TestOpenTightensExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "errand.db")
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	open(t, path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("mode %o after reopening, want 600", m)
	}
}

func TestOpenRefusesEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "errand.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := sqlite.Open(context.Background(), path)
	if !errors.Is(err, sqlite.ErrEmptyFile) {
		t.Fatalf("Open of an empty file: err = %v, want ErrEmptyFile", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the file", err)
	}
}

func TestOpenRefusesDatabaseWithoutSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE notes (body TEXT)`); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sqlite.Open(context.Background(), path); !errors.Is(err, sqlite.ErrNoSchema) {
		t.Fatalf("Open of a foreign database: err = %v, want ErrNoSchema", err)
	}
}

func TestOpenRefusesCorruptIndex(t *testing.T) {
	path := filepath.Join(t.TempDir(), "errand.db")
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, s, "t", 2000, 50)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	var root, pageSize int64
	var name string
	if err := db.QueryRow(`SELECT name, rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks' AND rootpage > 1 ORDER BY name LIMIT 1`).Scan(&name, &root); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(`PRAGMA page_size`).Scan(&pageSize); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(strings.Repeat("\xff", 64)), (root-1)*pageSize); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sqlite.Open(context.Background(), path); !errors.Is(err, sqlite.ErrCorrupt) {
		t.Fatalf("Open with index %s damaged: err = %v, want ErrCorrupt", name, err)
	}
}

func TestWALShrinksAfterCheckpoint(t *testing.T) {
	defer sqlite.SetCheckpointEvery(20 * time.Millisecond)()
	path := filepath.Join(t.TempDir(), "errand.db")
	s := open(t, path)
	fill(t, s, "t", 4000, 1000)
	deadline := time.Now().Add(20 * time.Second)
	for {
		fi, err := os.Stat(path + "-wal")
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("WAL is still %d bytes", fi.Size())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The store still reads and writes after truncating.
	fill(t, s, "u", 10, 10)
	if _, err := s.TaskGet(context.Background(), "u-000009"); err != nil {
		t.Fatal(err)
	}
}
