package storetest

import (
	"errors"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// testUsers: users are created once by name with a known role, listed in
// name order, and disabling one keeps it (disabled) and revokes its
// tokens.
func testUsers(h *harness) {
	t, s := h.t, h.s
	for _, p := range []store.UserCreateParams{{Name: "", Role: store.RoleAdmin}, {Name: "bob", Role: "root"}, {Name: "-x", Role: store.RoleViewer}} {
		if _, err := s.UserCreate(h.ctx, store.UserCreateParams{Name: p.Name, Role: p.Role, Now: h.now}); !errors.Is(err, errand.ErrInvalid) {
			t.Errorf("UserCreate %q %q = %v, want invalid", p.Name, p.Role, err)
		}
	}
	alice, err := s.UserCreate(h.ctx, store.UserCreateParams{Name: "alice", Role: store.RoleAdmin, Now: h.now})
	if err != nil {
		t.Fatalf("UserCreate: %v", err)
	}
	if alice.Name != "alice" || alice.Role != store.RoleAdmin || !alice.CreatedAt.Equal(h.now) || alice.DisabledAt != nil {
		t.Errorf("created %+v", alice)
	}
	if _, err := s.UserCreate(h.ctx, store.UserCreateParams{Name: "alice", Role: store.RoleViewer, Now: h.now}); !errors.Is(err, errand.ErrConflict) {
		t.Errorf("second UserCreate alice = %v, want conflict", err)
	}
	if _, err := s.UserCreate(h.ctx, store.UserCreateParams{Name: "bob", Role: store.RoleViewer, Now: h.now}); err != nil {
		t.Fatalf("UserCreate bob: %v", err)
	}
	if _, err := s.UserGet(h.ctx, "carol"); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("UserGet carol = %v, want not found", err)
	}
	h.tick(time.Minute)
	tok := h.token("t1", "bob", nil)
	h.token("t2", "alice", nil)
	h.tick(time.Minute)
	bob, err := s.UserDisable(h.ctx, store.UserDisableParams{Name: "bob", Now: h.now})
	if err != nil || bob.DisabledAt == nil || !bob.DisabledAt.Equal(h.now) {
		t.Fatalf("UserDisable = %+v, %v", bob, err)
	}
	h.tick(time.Minute)
	again, err := s.UserDisable(h.ctx, store.UserDisableParams{Name: "bob", Now: h.now})
	if err != nil || !again.DisabledAt.Equal(*bob.DisabledAt) {
		t.Errorf("second UserDisable = %+v, %v: want the first time kept", again, err)
	}
	if _, err := s.UserDisable(h.ctx, store.UserDisableParams{Name: "carol", Now: h.now}); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("UserDisable carol = %v, want not found", err)
	}
	got, err := s.TokenGet(h.ctx, tok.ID)
	if err != nil || got.RevokedAt == nil || !got.RevokedAt.Equal(*bob.DisabledAt) {
		t.Errorf("token of a disabled user = %+v, %v: want revoked with the user", got, err)
	}
	if _, err := s.TokenCreate(h.ctx, store.TokenCreateParams{Token: &store.Token{ID: "t3", User: "bob", Name: "n", Hash: "h"}, Now: h.now}); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("TokenCreate for a disabled user = %v, want not found", err)
	}
	enabled, err := s.UserList(h.ctx, store.UserListParams{})
	if err != nil || len(enabled) != 1 || enabled[0].Name != "alice" {
		t.Errorf("UserList = %v, %v: want alice", enabled, err)
	}
	all, err := s.UserList(h.ctx, store.UserListParams{Disabled: true})
	if err != nil || len(all) != 2 || all[0].Name != "alice" || all[1].Name != "bob" {
		t.Errorf("UserList with disabled = %v, %v: want alice, bob", all, err)
	}
	page, err := s.UserList(h.ctx, store.UserListParams{Disabled: true, After: "alice", Limit: 1})
	if err != nil || len(page) != 1 || page[0].Name != "bob" {
		t.Errorf("UserList after alice = %v, %v: want bob", page, err)
	}
}

// token creates a token of user.
func (h *harness) token(id, user string, expires *time.Time) *store.Token {
	h.t.Helper()
	tk, err := h.s.TokenCreate(h.ctx, store.TokenCreateParams{Token: &store.Token{ID: id, User: user, Name: "name-" + id, Hash: "hash-" + id, ExpiresAt: expires}, Now: h.now})
	if err != nil {
		h.t.Fatalf("TokenCreate %s: %v", id, err)
	}
	return tk
}

// testTokens: a token keeps its hash, expiry and last use; lists never
// show hashes; revoking keeps the first time.
func testTokens(h *harness) {
	t, s := h.t, h.s
	if _, err := s.UserCreate(h.ctx, store.UserCreateParams{Name: "alice", Role: store.RoleOperator, Now: h.now}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UserCreate(h.ctx, store.UserCreateParams{Name: "bob", Role: store.RoleViewer, Now: h.now}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TokenCreate(h.ctx, store.TokenCreateParams{Token: &store.Token{ID: "x", User: "carol", Name: "n", Hash: "h"}, Now: h.now}); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("TokenCreate for an unknown user = %v, want not found", err)
	}
	past := h.now.Add(-time.Second)
	if _, err := s.TokenCreate(h.ctx, store.TokenCreateParams{Token: &store.Token{ID: "x", User: "alice", Name: "n", Hash: "h", ExpiresAt: &past}, Now: h.now}); !errors.Is(err, errand.ErrInvalid) {
		t.Errorf("TokenCreate expired = %v, want invalid", err)
	}
	exp := h.now.Add(time.Hour)
	a1 := h.token("a1", "alice", &exp)
	if a1.Hash != "hash-a1" || a1.User != "alice" || a1.Name != "name-a1" || a1.ExpiresAt == nil || !a1.ExpiresAt.Equal(exp) || !a1.CreatedAt.Equal(h.now) || a1.LastUsedAt != nil || a1.RevokedAt != nil {
		t.Errorf("created %+v", a1)
	}
	if _, err := s.TokenCreate(h.ctx, store.TokenCreateParams{Token: &store.Token{ID: "a1", User: "alice", Name: "n", Hash: "h"}, Now: h.now}); !errors.Is(err, errand.ErrConflict) {
		t.Errorf("TokenCreate a1 again = %v, want conflict", err)
	}
	h.tick(time.Second)
	h.token("a2", "alice", nil)
	h.tick(time.Second)
	h.token("b1", "bob", nil)
	h.tick(time.Second)
	if err := s.TokenTouch(h.ctx, store.TokenTouchParams{ID: "a1", Now: h.now}); err != nil {
		t.Fatal(err)
	}
	if err := s.TokenTouch(h.ctx, store.TokenTouchParams{ID: "nope", Now: h.now}); err != nil {
		t.Errorf("TokenTouch of an unknown token = %v, want ignored", err)
	}
	got, err := s.TokenGet(h.ctx, "a1")
	if err != nil || got.LastUsedAt == nil || !got.LastUsedAt.Equal(h.now) || got.Hash != "hash-a1" {
		t.Errorf("TokenGet after touch = %+v, %v", got, err)
	}
	if _, err := s.TokenGet(h.ctx, "nope"); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("TokenGet nope = %v, want not found", err)
	}
	ids := func(p store.TokenListParams) []string {
		t.Helper()
		l, err := s.TokenList(h.ctx, p)
		if err != nil {
			t.Fatalf("TokenList: %v", err)
		}
		out := []string{}
		for _, tk := range l {
			if tk.Hash != "" {
				t.Errorf("TokenList shows the hash of %s", tk.ID)
			}
			out = append(out, tk.ID)
		}
		return out
	}
	if got := ids(store.TokenListParams{User: "alice"}); !equalStrings(got, []string{"a1", "a2"}) {
		t.Errorf("alice's tokens = %v", got)
	}
	if got := ids(store.TokenListParams{}); !equalStrings(got, []string{"a1", "a2", "b1"}) {
		t.Errorf("all tokens = %v", got)
	}
	rev, err := s.TokenRevoke(h.ctx, store.TokenRevokeParams{ID: "a1", Now: h.now})
	if err != nil || rev.RevokedAt == nil || !rev.RevokedAt.Equal(h.now) || rev.Hash != "" {
		t.Fatalf("TokenRevoke = %+v, %v", rev, err)
	}
	first := h.now
	h.tick(time.Minute)
	rev, err = s.TokenRevoke(h.ctx, store.TokenRevokeParams{ID: "a1", Now: h.now})
	if err != nil || !rev.RevokedAt.Equal(first) {
		t.Errorf("second TokenRevoke = %+v, %v: want the first time kept", rev, err)
	}
	if _, err := s.TokenRevoke(h.ctx, store.TokenRevokeParams{ID: "nope", Now: h.now}); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("TokenRevoke nope = %v, want not found", err)
	}
	if got := ids(store.TokenListParams{User: "alice"}); !equalStrings(got, []string{"a2"}) {
		t.Errorf("alice's tokens after a revoke = %v", got)
	}
	if got := ids(store.TokenListParams{User: "alice", Revoked: true}); !equalStrings(got, []string{"a1", "a2"}) {
		t.Errorf("alice's tokens with revoked = %v", got)
	}
}

// testAudit: entries get increasing ids and page newest first.
func testAudit(h *harness) {
	t, s := h.t, h.s
	if _, err := s.AuditAppend(h.ctx, store.AuditEntry{At: h.now, Action: "x"}); !errors.Is(err, errand.ErrInvalid) {
		t.Errorf("AuditAppend without actor = %v, want invalid", err)
	}
	var last int64
	for i, action := range []string{"run.cancel", "stage.approve", "user.create"} {
		e, err := s.AuditAppend(h.ctx, store.AuditEntry{At: h.now, Actor: "alice", Action: action, Target: "r1", Detail: "d"})
		if err != nil {
			t.Fatalf("AuditAppend %d: %v", i, err)
		}
		if e.ID <= last || e.Action != action || e.Actor != "alice" || e.Target != "r1" || e.Detail != "d" || !e.At.Equal(h.now) {
			t.Errorf("appended %+v after id %d", e, last)
		}
		last = e.ID
		h.tick(time.Second)
	}
	page, err := s.AuditList(h.ctx, store.AuditListParams{Limit: 2})
	if err != nil || len(page) != 2 || page[0].Action != "user.create" || page[1].Action != "stage.approve" {
		t.Fatalf("AuditList = %v, %v", page, err)
	}
	rest, err := s.AuditList(h.ctx, store.AuditListParams{Before: page[1].ID})
	if err != nil || len(rest) != 1 || rest[0].Action != "run.cancel" {
		t.Errorf("AuditList before %d = %v, %v", page[1].ID, rest, err)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
