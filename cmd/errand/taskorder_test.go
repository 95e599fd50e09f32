package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
)

// TestCLITasksListNewestFirst checks that tasks list asks the manager for
// the newest tasks only, instead of paging through every task, and still
// prints the newest --limit, newest first, and only those after --after.
func TestCLITasksListNewestFirst(t *testing.T) {
	m := testenv.StartManager(t, testenv.Binary(t))
	admin := testenv.Client(t, m.URL, m.AdminToken)
	var specs []*client.TaskSpec
	for i := range 1500 {
		specs = append(specs, &client.TaskSpec{ID: fmt.Sprintf("o%04d", i), Type: "e2e.order"})
	}
	for len(specs) > 0 {
		n := min(len(specs), 500)
		if _, err := admin.CreateTasks(context.Background(), specs[:n]); err != nil {
			t.Fatal(err)
		}
		specs = specs[n:]
	}
	target, err := url.Parse(m.URL)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		queries []string
	)
	proxy := httputil.NewSingleHostReverseProxy(target)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/tasks" {
			mu.Lock()
			queries = append(queries, r.URL.RawQuery)
			mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	list := func(args ...string) (ids, asked []string) {
		t.Helper()
		mu.Lock()
		queries = nil
		mu.Unlock()
		cmd := exec.Command(testenv.Binary(t), append([]string{"tasks", "list", "--manager", ts.URL, "--token", m.AdminToken, "--type", "e2e.order"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tasks list %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		for _, m := range regexp.MustCompile(`(?m)^(o\d{4}) `).FindAllStringSubmatch(string(out), -1) {
			ids = append(ids, m[1])
		}
		mu.Lock()
		defer mu.Unlock()
		return ids, append([]string(nil), queries...)
	}
	ids, asked := list("--limit", "3")
	if strings.Join(ids, " ") != "o1499 o1498 o1497" {
		t.Errorf("--limit 3 listed %v, want o1499 o1498 o1497", ids)
	}
	if len(asked) != 1 || !strings.Contains(asked[0], "order=desc") || !strings.Contains(asked[0], "limit=3") {
		t.Errorf("--limit 3 asked %q, want one request for the 3 newest", asked)
	}
	ids, asked = list("--limit", "1200")
	if len(ids) != 1200 || ids[0] != "o1499" || ids[1199] != "o0300" {
		t.Errorf("--limit 1200 listed %d tasks from %v to %v, want o1499 to o0300", len(ids), ids[:1], ids[len(ids)-1:])
	}
	if len(asked) != 2 {
		t.Errorf("--limit 1200 asked %q, want two pages newest first", asked)
	}
	ids, asked = list("--after", "o1496", "--limit", "10")
	if strings.Join(ids, " ") != "o1499 o1498 o1497" {
		t.Errorf("--after o1496 listed %v, want o1499 o1498 o1497", ids)
	}
	if len(asked) != 2 {
		t.Errorf("--after o1496 asked %q, want the first task after it and one page newest first", asked)
	}
	ids, _ = list("--after", "o1499")
	if len(ids) != 0 {
		t.Errorf("--after the newest listed %v", ids)
	}
}
