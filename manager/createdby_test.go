package manager

import (
	"net/http"
	"strings"
	"testing"

	"github.com/errandci/errand/client"
)

// TestRunCreatedBy: a run records who made it, a user by their name and
// the bootstrap admin token as admin; the API shows it on the run and in
// lists, and so do the Runs and Run pages.
func TestRunCreatedBy(t *testing.T) {
	f := newRouteFixture(t)
	e := f.e
	olga := f.newUser(t, "olga", "operator")
	cfg := "stages: [{name: a, steps: [{name: s, commands: [\"true\"]}]}]"
	var byOlga, byAdmin client.Run
	e.must(http.StatusCreated, "POST", "/api/v1/runs", olga, &client.RunRequest{Config: cfg, Filename: "config.yml"}, &byOlga)
	e.must(http.StatusCreated, "POST", "/api/v1/runs", testAdmin, &client.RunRequest{Config: cfg, Filename: "config.yml"}, &byAdmin)
	if byOlga.CreatedBy != "olga" || byAdmin.CreatedBy != BootstrapAdmin {
		t.Fatalf("created_by in the answers = %q, %q; want olga, admin", byOlga.CreatedBy, byAdmin.CreatedBy)
	}
	if got := e.getRun(byOlga.ID).CreatedBy; got != "olga" {
		t.Errorf("GET run created_by = %q, want olga", got)
	}
	var list client.RunList
	e.must(http.StatusOK, "GET", "/api/v1/runs", f.userToken, nil, &list)
	by := map[string]string{}
	for _, r := range list.Items {
		by[r.ID] = r.CreatedBy
	}
	if by[byOlga.ID] != "olga" || by[byAdmin.ID] != BootstrapAdmin {
		t.Errorf("list created_by = %v", by)
	}

	c := e.webClient(t)
	e.webSignIn(t, c, f.userToken)
	if _, page := webGet(t, c, e.ts.URL+"/?text=olga"); !strings.Contains(page, `href="/ui/runs/`+byOlga.ID+`"`) ||
		strings.Contains(page, `href="/ui/runs/`+byAdmin.ID+`"`) || !strings.Contains(page, `<td class="created-by">olga</td>`) {
		t.Errorf("the runs page filtered by text olga does not show olga's run alone with its creator: %.2000s", page)
	}
	if _, page := webGet(t, c, e.ts.URL+"/ui/runs/"+byOlga.ID); !strings.Contains(page, `by <b class="created-by">olga</b>`) {
		t.Errorf("the run page does not say who created the run")
	}
}
