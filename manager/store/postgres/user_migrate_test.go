package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/postgres"
	"github.com/errandci/errand/manager/store/postgres/pgtest"
)

// TestUsersMigration opens a database written before users existed: its
// tasks stay, and users, tokens and the audit trail work.
func TestUsersMigration(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.TaskCreate(ctx, store.TaskCreateParams{Now: now, Tasks: []*errand.Task{{ID: "a", Type: "x"}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`DROP TABLE audit`, `DROP TABLE user_tokens`, `DROP TABLE users`,
		`DELETE FROM schema_migrations WHERE name = '0007_users.sql'`} {
		if _, err := db.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := db.Close(ctx); err != nil {
		t.Fatal(err)
	}

	s = open(t, url)
	if tk, err := s.TaskGet(ctx, "a"); err != nil || tk.State != errand.StateQueued {
		t.Fatalf("task after the migration = %+v, %v", tk, err)
	}
	if _, err := s.UserCreate(ctx, store.UserCreateParams{Name: "alice", Role: store.RoleAdmin, Now: now}); err != nil {
		t.Fatalf("UserCreate after the migration: %v", err)
	}
	if _, err := s.TokenCreate(ctx, store.TokenCreateParams{Token: &store.Token{ID: "t", User: "alice", Name: "ci", Hash: "h"}, Now: now}); err != nil {
		t.Fatalf("TokenCreate after the migration: %v", err)
	}
	if _, err := s.AuditAppend(ctx, store.AuditEntry{At: now, Actor: "admin", Action: "user.create", Target: "alice"}); err != nil {
		t.Fatalf("AuditAppend after the migration: %v", err)
	}
}
