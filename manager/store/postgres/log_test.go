package postgres

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/postgres/pgtest"
)

// TestLogChunksMigration opens a schema written before log chunks, with
// lines stored one row each, and reads them back through the chunks.
func TestLogChunksMigration(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	init, err := migrations.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	lines := []string{"first", "", "a:b\nc", "ünï ✓", "12:"}
	stmts := []string{
		`CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`,
		string(init),
		`INSERT INTO schema_migrations (name) VALUES ('0001_init.sql')`,
		`INSERT INTO tasks (id, type, max_attempts, state, created_at, log_lines) VALUES ('t', 'x', 1, 'running', 1, 5)`,
	}
	for _, q := range stmts {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%.40s: %v", q, err)
		}
	}
	for i, l := range lines {
		if _, err := conn.Exec(ctx, `INSERT INTO log_lines (task_id, line, text) VALUES ('t', $1, $2)`, i, []byte(l)); err != nil {
			t.Fatal(err)
		}
	}

	s, err := Open(ctx, url)
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
