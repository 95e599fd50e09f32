package manager

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

// TestTaskListOrder pages through GET /api/v1/tasks oldest first and
// newest first with the Go client, following next, and refuses an
// unknown order naming the parameter.
func TestTaskListOrder(t *testing.T) {
	e := newEnv(t)
	var created []string
	for i := range 5 {
		typ := "test.echo"
		if i%2 == 1 {
			typ = "test.other"
		}
		created = append(created, e.create(&client.TaskSpec{ID: fmt.Sprintf("t%d", i), Type: typ}).ID)
	}
	c := client.New(e.ts.URL, testAdmin, client.WithLogger(quietLogger().WithField("test", true)))
	walk := func(f client.TaskFilter) []string {
		t.Helper()
		var got []string
		f.Limit = 2
		for pages := 0; ; pages++ {
			if pages > 5 {
				t.Fatalf("paging %+v did not end: %v", f, got)
			}
			l, err := c.ListTasks(context.Background(), &f)
			if err != nil {
				t.Fatalf("list %+v: %v", f, err)
			}
			for _, tk := range l.Items {
				got = append(got, tk.ID)
			}
			if l.Next == "" {
				return got
			}
			f.After = l.Next
		}
	}
	newest := slices.Clone(created)
	slices.Reverse(newest)
	for _, c := range []struct {
		f    client.TaskFilter
		want []string
	}{
		{client.TaskFilter{}, created},
		{client.TaskFilter{Order: client.OrderAsc}, created},
		{client.TaskFilter{Order: client.OrderDesc}, newest},
		{client.TaskFilter{Order: client.OrderDesc, Type: "test.echo"}, []string{"t4", "t2", "t0"}},
		{client.TaskFilter{Order: client.OrderDesc, After: "t3"}, []string{"t2", "t1", "t0"}},
		{client.TaskFilter{Order: client.OrderAsc, After: "t3"}, []string{"t4"}},
	} {
		if got := walk(c.f); !slices.Equal(got, c.want) {
			t.Errorf("list %+v: %v, want %v", c.f, got, c.want)
		}
	}
	eb := e.fails(http.StatusBadRequest, errand.CodeInvalid, "GET", "/api/v1/tasks?order=newest", testAdmin, nil)
	if !strings.HasPrefix(eb.Reason, "order: ") || !strings.Contains(eb.Reason, `"newest"`) {
		t.Errorf("reason %q does not name the parameter and the value", eb.Reason)
	}
}
