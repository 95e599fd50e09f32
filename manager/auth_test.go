package manager

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/store"
)

// TestApprovalsByUsers: a stage needing two approvals needs two distinct
// users; the same user twice is 409, a user naming another approver is
// 403, and the audit trail says who approved.
func TestApprovalsByUsers(t *testing.T) {
	f := newRouteFixture(t)
	e := f.e
	alice, bob := f.newUser(t, "alice", "operator"), f.newUser(t, "bob", "operator")
	run := e.submit("stages:\n  - name: deploy\n    approval: {approvers: 2}\n    steps: [{name: s, commands: [\"true\"]}]\n")
	path := "/api/v1/runs/" + run.ID + "/stages/deploy/approve"
	e.must(http.StatusNoContent, "POST", path, alice, nil, nil)
	e.fails(http.StatusConflict, errand.CodeConflict, "POST", path, alice, nil)
	e.fails(http.StatusForbidden, errand.CodeForbidden, "POST", path, bob, &client.ApproveRequest{Approver: "carol"})
	if got := stage(e.getRun(run.ID), "deploy"); got.State != "waiting" || strings.Join(got.Approvals, ",") != "alice" {
		t.Fatalf("after alice twice: deploy = %+v", got)
	}
	e.must(http.StatusNoContent, "POST", path, bob, &client.ApproveRequest{Approver: "bob"}, nil)
	if got := stage(e.getRun(run.ID), "deploy"); strings.Join(got.Approvals, ",") != "alice,bob" {
		t.Fatalf("approvals = %v, want alice, bob", got.Approvals)
	}
	e.must(http.StatusNoContent, "POST", "/api/v1/runs/"+run.ID+"/cancel", alice, nil, nil)
	e.must(http.StatusNoContent, "POST", "/api/v1/delegates/"+f.d2.id+"/drain", testAdmin, nil, nil)
	var audit client.AuditList
	e.must(http.StatusOK, "GET", "/api/v1/audit", testAdmin, nil, &audit)
	var got []string
	for _, a := range audit.Entries {
		got = append(got, a.Actor+" "+a.Action)
	}
	want := "admin delegate.drain,alice run.cancel,bob stage.approve,alice stage.approve"
	if !strings.HasPrefix(strings.Join(got, ","), want) {
		t.Errorf("audit (newest first) = %v, want it to start with %s", got, want)
	}
	var page client.AuditList
	e.must(http.StatusOK, "GET", "/api/v1/audit?limit=2", testAdmin, nil, &page)
	if len(page.Entries) != 2 || page.Before == 0 {
		t.Fatalf("audit page = %+v", page)
	}
	e.must(http.StatusOK, "GET", fmt.Sprintf("/api/v1/audit?before=%d&limit=2", page.Before), testAdmin, nil, &page)
	if len(page.Entries) != 2 || page.Entries[0].Action != "stage.approve" || page.Entries[0].Actor != "bob" {
		t.Errorf("second audit page = %+v", page.Entries)
	}
}

// TestUserTokens: a token works until it is revoked, its user disabled,
// or it expires; lists never show the secret.
func TestUserTokens(t *testing.T) {
	f := newRouteFixture(t)
	e := f.e
	e.must(http.StatusOK, "GET", "/api/v1/runs", f.userToken, nil, nil)
	e.fails(http.StatusForbidden, errand.CodeForbidden, "POST", "/api/v1/runs", f.userToken, `{"config":"stages: []","filename":"config.yml"}`)
	var list client.TokenList
	e.must(http.StatusOK, "GET", "/api/v1/tokens", f.userToken, nil, &list)
	if len(list.Tokens) != 1 || list.Tokens[0].Secret != "" || list.Tokens[0].LastUsedAt == nil {
		t.Fatalf("tokens = %+v: want one, with its last use and no secret", list.Tokens)
	}
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/tokens", f.userToken, `{"name":"x","expires_in":"-1h"}`)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/tokens", f.userToken, `{"name":"x","nope":1}`)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/tokens", testAdmin, `{"name":"x"}`)
	var second client.Token
	e.must(http.StatusCreated, "POST", "/api/v1/tokens", f.userToken, &client.TokenRequest{Name: "second"}, &second)
	if !strings.HasPrefix(second.Secret, UserTokenPrefix+second.ID+"_") {
		t.Fatalf("secret %q does not start with %s%s_", second.Secret, UserTokenPrefix, second.ID)
	}
	e.fails(http.StatusUnauthorized, errand.CodeUnauthorized, "GET", "/api/v1/runs", second.Secret+"x", nil)
	e.must(http.StatusOK, "DELETE", "/api/v1/tokens/"+f.userTokenID, second.Secret, nil, nil)
	e.fails(http.StatusUnauthorized, errand.CodeUnauthorized, "GET", "/api/v1/runs", f.userToken, nil)
	e.must(http.StatusOK, "GET", "/api/v1/runs", second.Secret, nil, nil)
	e.must(http.StatusOK, "DELETE", "/api/v1/users/"+f.user, testAdmin, nil, nil)
	e.fails(http.StatusUnauthorized, errand.CodeUnauthorized, "GET", "/api/v1/runs", second.Secret, nil)
	e.fails(http.StatusConflict, errand.CodeConflict, "POST", "/api/v1/users", testAdmin, &client.UserRequest{Name: f.user, Role: "viewer"})
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/users", testAdmin, &client.UserRequest{Name: "admin", Role: "viewer"})
}

// TestInProcessPrincipal: a request made in-process with a context that
// names a user is served as that user, with that user's role, whatever
// its bearer token; the bootstrap admin so named is the admin token's
// principal.
func TestInProcessPrincipal(t *testing.T) {
	f := newRouteFixture(t)
	run := f.e.submit("stages:\n  - name: deploy\n    approval: {approvers: 2}\n    steps: [{name: s, commands: [\"true\"]}]\n")
	c := client.New("http://manager.invalid", "not-a-token", client.WithHandler(f.e.s.handler))
	ctx := t.Context()
	viewer := WithUserPrincipal(ctx, "vera", store.RoleViewer)
	if _, err := c.ListRuns(viewer, nil); err != nil {
		t.Fatalf("list runs as a viewer: %v", err)
	}
	if err := c.ApproveRun(viewer, run.ID, "deploy", ""); errand.ErrorCode(err) != errand.CodeForbidden {
		t.Fatalf("approve as a viewer = %v, want forbidden", err)
	}
	op := WithUserPrincipal(ctx, "olga", store.RoleOperator)
	if err := c.ApproveRun(op, run.ID, "deploy", "olga"); err != nil {
		t.Fatalf("approve as olga: %v", err)
	}
	if err := c.ApproveRun(op, run.ID, "deploy", ""); errand.ErrorCode(err) != errand.CodeConflict {
		t.Fatalf("approve as olga again = %v, want conflict", err)
	}
	if _, err := c.ListRuns(ctx, nil); errand.ErrorCode(err) != errand.CodeUnauthorized {
		t.Fatalf("list runs without a principal = %v, want unauthorized", err)
	}
	admin := WithUserPrincipal(ctx, BootstrapAdmin, store.RoleAdmin)
	if err := c.ApproveRun(admin, run.ID, "deploy", "script"); err != nil {
		t.Fatalf("approve as the bootstrap admin naming script: %v", err)
	}
	if got := stage(f.e.getRun(run.ID), "deploy"); strings.Join(got.Approvals, ",") != "olga,script" {
		t.Errorf("approvals = %v, want olga, script", got.Approvals)
	}
}

// TestTokenExpiry: a token with an expiry works until then and is
// refused after, saying so; its last use is recorded at most once a
// minute.
func TestTokenExpiry(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	e := newEnv(t, func(c *Config) { c.Now = clock })
	e.must(http.StatusCreated, "POST", "/api/v1/users", testAdmin, &client.UserRequest{Name: "tess", Role: "viewer"}, nil)
	var tk client.Token
	e.must(http.StatusCreated, "POST", "/api/v1/tokens", testAdmin, &client.TokenRequest{Name: "short", User: "tess", ExpiresIn: "1h"}, &tk)
	if tk.ExpiresAt == nil || !tk.ExpiresAt.Equal(clock().Add(time.Hour)) {
		t.Fatalf("expires_at = %v, want an hour from now", tk.ExpiresAt)
	}
	lastUsed := func() time.Time {
		t.Helper()
		var l client.TokenList
		e.must(http.StatusOK, "GET", "/api/v1/tokens?user=tess", testAdmin, nil, &l)
		if len(l.Tokens) != 1 || l.Tokens[0].LastUsedAt == nil {
			t.Fatalf("tokens = %+v", l.Tokens)
		}
		return *l.Tokens[0].LastUsedAt
	}
	e.must(http.StatusOK, "GET", "/api/v1/runs", tk.Secret, nil, nil)
	first := lastUsed()
	advance(30 * time.Second)
	e.must(http.StatusOK, "GET", "/api/v1/runs", tk.Secret, nil, nil)
	if got := lastUsed(); !got.Equal(first) {
		t.Errorf("last used moved within a minute: %v, then %v", first, got)
	}
	advance(59 * time.Minute)
	e.must(http.StatusOK, "GET", "/api/v1/runs", tk.Secret, nil, nil)
	if got := lastUsed(); !got.After(first) {
		t.Errorf("last used = %v, want after %v", got, first)
	}
	advance(31 * time.Second)
	if b := e.fails(http.StatusUnauthorized, errand.CodeUnauthorized, "GET", "/api/v1/runs", tk.Secret, nil); !strings.Contains(b.Reason, "expired") {
		t.Errorf("expired token: reason %q does not say it expired", b.Reason)
	}
}
