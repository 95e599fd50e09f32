package sqlite

import (
	"context"
	"database/sql"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/errandci/errand/manager/store"
)

func TestChunkRoundTrip(t *testing.T) {
	cases := [][]string{
		{},
		{""},
		{"", "", ""},
		{"plain", "12:34", ":", "0:", "new\nline", "ünï ✓", strings.Repeat("z", 100000)},
	}
	for _, lines := range cases {
		body := encodeChunk(lines)
		for skip := 0; skip <= len(lines); skip++ {
			for limit := 1; limit <= len(lines)+1; limit++ {
				got, err := decodeChunk([]string{"before"}, body, int64(skip), limit+1)
				if err != nil {
					t.Fatalf("decode %q: %v", lines, err)
				}
				want := append([]string{"before"}, lines[skip:min(skip+limit, len(lines))]...)
				if !slices.Equal(got, want) {
					t.Fatalf("decode(skip %d, limit %d) of %q = %q, want %q", skip, limit, lines, got, want)
				}
			}
		}
	}
	for _, bad := range []string{"x", ":abc", "5:abc", "-1:", "3", "2:ab9:"} {
		if _, err := decodeChunk(nil, []byte(bad), 0, 100); err == nil {
			t.Errorf("decode of corrupt body %q: no error", bad)
		}
	}
}

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
