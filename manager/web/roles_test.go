package web

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
)

// stubAPI answers the few API calls the run page makes: one waiting run.
func stubAPI() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/runs/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"kind":"run","id":"r1","href":"/api/v1/runs/r1","created_at":"2026-01-01T00:00:00Z","phase":"running","result":"unknown",
"stage_count":1,"stages":[{"name":"gate","state":"waiting","approval":1,"steps":[{"name":"s","state":"pending","task_id":"t1","task_href":"/api/v1/tasks/t1"}]}]}`)
	})
	return mux
}

// TestViewerMayNotOperate signs in a viewer: the run page shows no
// approve or cancel button, and a form sent anyway is refused with 403
// naming the role it needs.
func TestViewerMayNotOperate(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	h, err := New(Config{
		API:        stubAPI(),
		SessionKey: []byte("0123456789abcdef0123456789abcdef"),
		SignIn: func(_ context.Context, token string) (Principal, error) {
			if token == "viewer-token" {
				return Principal{Name: "vera", Role: RoleViewer}, nil
			}
			return Principal{}, errand.Errorf(errand.CodeUnauthorized, "the token is not valid for this request")
		},
		APIToken: func(Principal) string { return "t" },
		Log:      log,
		Now:      time.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	defer ts.Close()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) (int, string) {
		resp, err := c.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	post := func(path string, form url.Values) (int, string) {
		resp, err := c.PostForm(ts.URL+path, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	_, page := get("/")
	if code, body := post("/ui/login", url.Values{"csrf": {csrf.FindStringSubmatch(page)[1]}, "token": {"viewer-token"}}); code != http.StatusSeeOther {
		t.Fatalf("viewer sign-in = %d %.300s", code, body)
	}
	code, page := get("/ui/runs/r1")
	if code != http.StatusOK || !strings.Contains(page, "Approvals: <b class=\"approvals-count\">0</b> of 1") {
		t.Fatalf("run page = %d %.500s", code, page)
	}
	if strings.Contains(page, "approve") && strings.Contains(page, `class="approve"`) || strings.Contains(page, `id="cancel-run"`) {
		t.Errorf("a viewer sees approve or cancel")
	}
	token := csrf.FindStringSubmatch(page)[1]
	for _, path := range []string{"/ui/runs/r1/cancel", "/ui/runs/r1/stages/gate/approve", "/ui/delegates/d1/drain"} {
		code, body := post(path, url.Values{"csrf": {token}})
		if code != http.StatusForbidden || !strings.Contains(body, "role") || !strings.Contains(body, "vera has the viewer role") {
			t.Errorf("POST %s as a viewer = %d %.300s", path, code, body)
		}
	}
}
