package manager

import (
	"net/http"
	"strings"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
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
	var audit client.AuditList
	e.must(http.StatusOK, "GET", "/api/v1/audit", testAdmin, nil, &audit)
	var approvals []string
	for _, a := range audit.Entries {
		if a.Action == "stage.approve" {
			approvals = append(approvals, a.Actor)
		}
	}
	if strings.Join(approvals, ",") != "bob,alice" {
		t.Errorf("audit approvals (newest first) = %v, want bob, alice", approvals)
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
