package manager

import (
	"context"
	"net/http"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

// A delegate lists the delegates of its own group with its own token, so
// it can clean up after lost dynamic siblings without the admin token.
func TestDelegateListsOwnGroup(t *testing.T) {
	e := newEnv(t)
	a := e.register("a", &client.RegisterRequest{Group: "linux"})
	e.register("b", &client.RegisterRequest{Group: "linux", Dynamic: true})
	e.register("c", &client.RegisterRequest{Group: "mac"})

	var own client.DelegateList
	e.must(http.StatusOK, "GET", "/api/v1/delegates", a.token, nil, &own)
	names := map[string]bool{}
	for _, d := range own.Items {
		if d.Group != "linux" {
			t.Errorf("delegate of group linux sees %s of group %q", d.Name, d.Group)
		}
		names[d.Name] = true
	}
	if !names["a"] || !names["b"] || len(own.Items) != 2 {
		t.Fatalf("group listing = %+v, want a and b", own.Items)
	}
	e.fails(http.StatusForbidden, errand.CodeForbidden, "GET", "/api/v1/delegates?group=mac", a.token, nil)

	var all client.DelegateList
	e.must(http.StatusOK, "GET", "/api/v1/delegates", testAdmin, nil, &all)
	if len(all.Items) != 3 {
		t.Fatalf("admin listing has %d delegates, want 3", len(all.Items))
	}
	e.fails(http.StatusUnauthorized, errand.CodeUnauthorized, "GET", "/api/v1/delegates", "", nil)
}

// The manager has an identity that survives a restart, differs from
// another manager's, and is told to delegates in the registration answer
// and in delegate listings: they put it on the Docker resources they
// create, so that two managers' delegates never clean up each other's.
func TestManagerIdentity(t *testing.T) {
	ctx := context.Background()
	open := func(dir string) string {
		s, err := Open(ctx, Config{DataDir: dir, Log: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		id := s.ID()
		if err := s.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		return id
	}
	dir := t.TempDir()
	first := open(dir)
	if first == "" || open(dir) != first {
		t.Fatalf("manager identity %q is not kept across a restart", first)
	}
	if other := open(t.TempDir()); other == first {
		t.Fatalf("two managers share the identity %q", first)
	}

	e := newEnv(t)
	var reg client.Registration
	e.must(http.StatusCreated, "POST", "/api/v1/delegates", testReg, &client.RegisterRequest{Name: "a"}, &reg)
	if reg.ManagerID == "" || reg.ManagerID != e.s.ID() {
		t.Fatalf("registration names manager %q, want %q", reg.ManagerID, e.s.ID())
	}
	var own client.DelegateList
	e.must(http.StatusOK, "GET", "/api/v1/delegates", reg.Token, nil, &own)
	if own.ManagerID != e.s.ID() {
		t.Fatalf("delegate listing names manager %q, want %q", own.ManagerID, e.s.ID())
	}
}
