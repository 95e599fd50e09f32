package manager

import (
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
