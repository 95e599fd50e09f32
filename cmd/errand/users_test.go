package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
)

// TestCLIApproveAsUsers: the first user and their tokens are made with
// the bootstrap admin token; a stage needing two approvals takes two
// users, a user's second approval is refused, and a user token cannot
// name another approver.
func TestCLIApproveAsUsers(t *testing.T) {
	m := testenv.StartManager(t, testenv.Binary(t), "--log-format", "json")
	t.Setenv("ERRAND_MANAGER", m.URL)
	errand := func(token string, wantCode int, args ...string) string {
		t.Helper()
		t.Setenv("ERRAND_TOKEN", token)
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != wantCode {
			t.Fatalf("errand %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantCode, stdout.String(), stderr.String())
		}
		return stdout.String() + stderr.String()
	}
	token := func(user string) string {
		t.Helper()
		errand(m.AdminToken, 0, "users", "create", user, "--role", "operator")
		var tk client.Token
		if err := json.Unmarshal([]byte(errand(m.AdminToken, 0, "tokens", "create", "cli", "--user", user, "-o", "json")), &tk); err != nil {
			t.Fatalf("tokens create -o json: %v", err)
		}
		return tk.Secret
	}
	alice, bob := token("alice"), token("bob")
	r, err := testenv.Client(t, m.URL, alice).CreateRun(context.Background(), &client.RunRequest{Filename: "config.yml",
		Config: "stages:\n  - name: deploy\n    approval: {approvers: 2}\n    steps: [{name: s, commands: [\"true\"]}]\n"})
	if err != nil {
		t.Fatal(err)
	}
	errand(alice, 0, "runs", "approve", r.ID, "deploy")
	if out := errand(alice, 1, "runs", "approve", r.ID, "deploy"); !strings.Contains(out, "alice has already approved") {
		t.Errorf("second approval by alice: %s", out)
	}
	if out := errand(bob, 1, "runs", "approve", r.ID, "deploy", "--as", "carol"); !strings.Contains(out, "forbidden") {
		t.Errorf("bob approving as carol: %s", out)
	}
	errand(bob, 0, "runs", "approve", r.ID, "deploy")
	got, err := testenv.Client(t, m.URL, m.AdminToken).GetRun(context.Background(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range got.Stages {
		if s.Name == "deploy" && strings.Join(s.Approvals, ",") != "alice,bob" {
			t.Errorf("approvals = %v, want alice, bob", s.Approvals)
		}
	}
	// A viewer's token reads, and is refused what needs more, naming the role.
	errand(m.AdminToken, 0, "users", "create", "vera")
	var tk client.Token
	if err := json.Unmarshal([]byte(errand(m.AdminToken, 0, "tokens", "create", "cli", "--user", "vera", "-o", "json")), &tk); err != nil {
		t.Fatal(err)
	}
	errand(tk.Secret, 0, "runs", "list")
	if out := errand(tk.Secret, 1, "users", "list"); !strings.Contains(out, "needs the admin role") {
		t.Errorf("a viewer listing users: %s", out)
	}
	errand(tk.Secret, 0, "tokens", "revoke", "cli")
	errand(tk.Secret, 1, "runs", "list")
}
