package sqlite

import (
	"context"
	"database/sql"
	"net/url"
	"path/filepath"
	"slices"
	"testing"

	"github.com/errandci/errand/manager/store"
)

// TestLogChunksMigration opens a database written before log chunks, with
// lines stored one row each, and reads them back through the chunks.
func TestLogChunksMigration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "errand.db")
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath())
	if err != nil {
		t.Fatal(err)
	}
	init, err := migrations.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	lines := []string{"first", "", "a:b\nc", "ünï ✓", "12:"}
	stmts := []string{
		`CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)`,
		string(init),
		`INSERT INTO schema_migrations (name) VALUES ('0001_init.sql')`,
		`INSERT INTO tasks (id, type, max_attempts, state, created_at, log_lines) VALUES ('t', 'x', 1, 'running', 1, 5)`,
	}
	for _, q := range stmts {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%.40s: %v", q, err)
		}
	}
	for i, l := range lines {
		if _, err := db.ExecContext(ctx, `INSERT INTO log_lines (task_id, line, text) VALUES ('t', ?, ?)`, i, l); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.LogRead(ctx, store.LogReadParams{TaskID: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, lines) {
		t.Fatalf("migrated log = %q, want %q", got, lines)
	}
	if got, err = s.LogRead(ctx, store.LogReadParams{TaskID: "t", Offset: 2, Limit: 2}); err != nil || !slices.Equal(got, lines[2:4]) {
		t.Fatalf("migrated log from 2 = %q, %v", got, err)
	}
}
