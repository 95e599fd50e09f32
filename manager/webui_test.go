package manager

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/web"
)

// webClient is a browser-like HTTP client of the UI: cookies kept, no
// redirect followed.
func (e *env) webClient(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Transport: e.http.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var csrfInput = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func webGet(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func webPost(t *testing.T, c *http.Client, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// webSignIn signs c in with token and returns the session's CSRF token
// ("" when the sign-in was refused) and the sign-in answer.
func (e *env) webSignIn(t *testing.T, c *http.Client, token string) (string, *http.Response, string) {
	t.Helper()
	_, page := webGet(t, c, e.ts.URL+"/")
	m := csrfInput.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in the sign-in page: %.300s", page)
	}
	resp, body := webPost(t, c, e.ts.URL+"/ui/login", url.Values{"csrf": {m[1]}, "token": {token}})
	if resp.StatusCode != http.StatusSeeOther {
		return "", resp, body
	}
	_, page = webGet(t, c, e.ts.URL+"/")
	m = csrfInput.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token on the runs page: %.300s", page)
	}
	return m[1], resp, body
}

func TestWebSignIn(t *testing.T) {
	e := newEnv(t)
	c := e.webClient(t)
	csrf, resp, body := e.webSignIn(t, c, "wrong")
	if csrf != "" || resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "not valid") {
		t.Errorf("wrong token: %d %.300s", resp.StatusCode, body)
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == "errand_session" && ck.Value != "" {
			t.Errorf("a wrong token got a session cookie")
		}
	}
	// Sign-in without the form's token is refused too.
	resp, _ = webPost(t, e.webClient(t), e.ts.URL+"/ui/login", url.Values{"token": {testAdmin}})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-in without its CSRF token = %d, want 403", resp.StatusCode)
	}

	csrf, resp, _ = e.webSignIn(t, c, testAdmin)
	if csrf == "" {
		t.Fatalf("admin token refused: %d", resp.StatusCode)
	}
	var sc *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "errand_session" {
			sc = ck
		}
	}
	if sc == nil || !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.Path != "/" {
		t.Errorf("session cookie = %+v, want HttpOnly, SameSite=Strict, Path=/", sc)
	}
	r, page := webGet(t, c, e.ts.URL+"/")
	if csp := r.Header.Get("Content-Security-Policy"); csp != web.ContentSecurityPolicy || !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP = %q", csp)
	}
	if strings.Contains(page, "<script>") || strings.Contains(page, " style=") || strings.Contains(page, " on") && regexp.MustCompile(` on[a-z]+=`).MatchString(page) {
		t.Errorf("the page has inline script or style: %.500s", page)
	}
	// A tampered cookie is no session.
	u, _ := url.Parse(e.ts.URL)
	c.Jar.SetCookies(u, []*http.Cookie{{Name: "errand_session", Value: sc.Value + "x", Path: "/"}})
	if r, _ := webGet(t, c, e.ts.URL+"/ui/tasks"); r.StatusCode != http.StatusSeeOther {
		t.Errorf("tampered session: %d, want 303 to sign in", r.StatusCode)
	}
}

// TestWebAuthMatrix calls every page and form of the UI without a
// session, with a session but no CSRF token, and as the signed-in admin.
func TestWebAuthMatrix(t *testing.T) {
	e := newEnv(t)
	d := e.register("d1", nil)
	taskID, _ := e.leasedTask(d)
	runID := e.submit("stages:\n  - name: gate\n    approval: {approvers: 1}\n    steps: [{name: s, commands: [\"true\"]}]\n").ID
	e.must(http.StatusCreated, "POST", "/api/v1/users", testAdmin, &client.UserRequest{Name: "vera", Role: "viewer"}, nil)
	var tok client.Token
	e.must(http.StatusCreated, "POST", "/api/v1/tokens", testAdmin, &client.TokenRequest{Name: "matrix", User: "vera"}, &tok)
	e.must(http.StatusCreated, "POST", "/api/v1/pipelines", testAdmin, &client.PipelineSpec{Name: "gate", Config: "stages: []\n"}, nil)
	fill := func(p string) string {
		p = strings.TrimSuffix(p, "{$}")
		switch {
		case strings.HasPrefix(p, "/ui/runs/"):
			p = strings.ReplaceAll(p, "{id}", runID)
		case strings.HasPrefix(p, "/ui/tasks/"):
			p = strings.ReplaceAll(p, "{id}", taskID)
		case strings.HasPrefix(p, "/ui/delegates/"):
			p = strings.ReplaceAll(p, "{id}", d.id)
		case strings.HasPrefix(p, "/ui/users/"):
			p = strings.ReplaceAll(p, "{name}", "vera")
		case strings.HasPrefix(p, "/ui/tokens/"):
			p = strings.ReplaceAll(p, "{id}", tok.ID)
		}
		p = strings.ReplaceAll(p, "{name}", "gate")
		if p == "/ui/static/" {
			p += "app.css"
		}
		return p
	}
	// What each route answers without a session and when signed in.
	want := map[string][2]int{
		"GET /ui/static/":                          {200, 200},
		"GET /{$}":                                 {200, 200},
		"POST /ui/login":                           {403, 403},
		"POST /ui/logout":                          {403, 303},
		"GET /ui/runs/new":                         {303, 200},
		"POST /ui/runs":                            {403, 303},
		"GET /ui/runs/{id}":                        {303, 200},
		"POST /ui/runs/{id}/cancel":                {403, 303},
		"POST /ui/runs/{id}/stages/{name}/approve": {403, 303},
		"GET /ui/tasks":                            {303, 200},
		"GET /ui/tasks/{id}":                       {303, 200},
		"POST /ui/tasks/{id}/cancel":               {403, 303},
		"GET /ui/tasks/{id}/logs":                  {401, 200},
		"GET /ui/tasks/{id}/raw":                   {401, 200},
		"GET /ui/delegates":                        {303, 200},
		"POST /ui/delegates/{id}/drain":            {403, 303},
		"GET /ui/users":                            {303, 200},
		"POST /ui/users":                           {403, 303},
		"GET /ui/users/{name}":                     {303, 200},
		"POST /ui/users/{name}/tokens":             {403, 200},
		"POST /ui/tokens/{id}/revoke":              {403, 303},
		"GET /ui/audit":                            {303, 200},
		"GET /ui/pipelines":                        {303, 200},
		"GET /ui/pipelines/{name}":                 {303, 200},
		"POST /ui/runs/{id}/restart":               {403, 409}, // the run waits: not restartable
		"GET /ui/":                                 {404, 404},
	}
	ui := e.s.webUI()
	for _, r := range ui.Routes() {
		if _, ok := want[r]; !ok {
			t.Errorf("UI route %s has no row in the matrix", r)
		}
	}
	if len(want) != len(ui.Routes()) {
		t.Errorf("the matrix has %d rows, the UI %d routes", len(want), len(ui.Routes()))
	}
	anon := e.webClient(t)
	signed := e.webClient(t)
	csrf, _, _ := e.webSignIn(t, signed, testAdmin)
	// Cancels and sign-out last: they end what the other rows use.
	var order, last []string
	for _, r := range ui.Routes() {
		if r == "POST /ui/logout" {
			continue
		}
		if strings.HasSuffix(r, "/cancel") {
			last = append(last, r)
			continue
		}
		order = append(order, r)
	}
	order = append(append(order, last...), "POST /ui/logout")
	for _, r := range order {
		method, pattern, _ := strings.Cut(r, " ")
		u := e.ts.URL + fill(pattern)
		w := want[r]
		send := func(c *http.Client, form url.Values) int {
			if method == "GET" {
				resp, _ := webGet(t, c, u)
				return resp.StatusCode
			}
			form.Set("config", "stages: []")
			form.Set("name", "matrix")
			form.Set("role", "viewer")
			resp, _ := webPost(t, c, u, form)
			return resp.StatusCode
		}
		if got := send(anon, url.Values{}); got != w[0] {
			t.Errorf("%s without a session = %d, want %d", r, got, w[0])
		}
		if method == "POST" {
			if got := send(signed, url.Values{}); got != http.StatusForbidden {
				t.Errorf("%s signed in without a CSRF token = %d, want 403", r, got)
			}
			if got := send(signed, url.Values{"csrf": {"forged"}}); got != http.StatusForbidden {
				t.Errorf("%s signed in with a forged CSRF token = %d, want 403", r, got)
			}
		}
		if got := send(signed, url.Values{"csrf": {csrf}}); got != w[1] {
			t.Errorf("%s signed in = %d, want %d", r, got, w[1])
		}
	}
}

// TestWebRawLog downloads a task's log through the UI, whole, by range
// and as an attachment.
func TestWebRawLog(t *testing.T) {
	e := newEnv(t)
	d := e.register("d1", nil)
	id, lease := e.leasedTask(d)
	e.appendLines(d, id, lease, 0, []string{"alpha", "<b>beta</b>"})
	c := e.webClient(t)
	e.webSignIn(t, c, testAdmin)
	resp, body := webGet(t, c, e.ts.URL+"/ui/tasks/"+id+"/raw")
	if resp.StatusCode != 200 || body != "alpha\n<b>beta</b>\n" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") ||
		resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("raw = %d %q %v", resp.StatusCode, body, resp.Header)
	}
	req, _ := http.NewRequest("GET", e.ts.URL+"/ui/tasks/"+id+"/raw?download=1", nil)
	req.Header.Set("Range", "bytes=0-4")
	r2, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r2.Body)
	_ = r2.Body.Close()
	if r2.StatusCode != http.StatusPartialContent || string(b) != "alpha" || !strings.Contains(r2.Header.Get("Content-Disposition"), `attachment; filename="task-`+id+`.log"`) {
		t.Errorf("download range = %d %q %q", r2.StatusCode, b, r2.Header.Get("Content-Disposition"))
	}
}

// TestWebRunsFilter filters the runs page by what its URL says.
func TestWebRunsFilter(t *testing.T) {
	e := newEnv(t)
	mk := func(branch, event string) string {
		var run struct{ ID string }
		e.must(http.StatusCreated, "POST", "/api/v1/runs", testAdmin, map[string]any{"config": "stages: [{name: a, steps: [{name: s, commands: [\"true\"]}]}]",
			"filename": "config.yml", "branch": branch, "event": event}, &run)
		return run.ID
	}
	mainPush, devPush, devTag := mk("main", "push"), mk("dev", "push"), mk("dev", "tag")
	broken := e.submit("stages: [{name: BAD}]").ID
	c := e.webClient(t)
	e.webSignIn(t, c, testAdmin)
	for _, tc := range []struct {
		query   string
		want    []string
		notWant []string
	}{
		{"", []string{mainPush, devPush, devTag, broken}, nil},
		{"?branch=dev", []string{devPush, devTag}, []string{mainPush, broken}},
		{"?branch=dev&event=tag", []string{devTag}, []string{mainPush, devPush}},
		{"?phase=setuperror", []string{broken}, []string{mainPush, devPush, devTag}},
		{"?text=" + strings.ToLower(mainPush[len(mainPush)-6:]), []string{mainPush}, []string{devPush, devTag}},
	} {
		_, page := webGet(t, c, e.ts.URL+"/"+tc.query)
		for _, id := range tc.want {
			if !strings.Contains(page, `href="/ui/runs/`+id+`"`) {
				t.Errorf("runs%s lacks %s", tc.query, id)
			}
		}
		for _, id := range tc.notWant {
			if strings.Contains(page, `href="/ui/runs/`+id+`"`) {
				t.Errorf("runs%s shows %s", tc.query, id)
			}
		}
		// Newest first.
		if tc.query == "" && strings.Index(page, broken) > strings.Index(page, mainPush) {
			t.Errorf("runs are not newest first")
		}
	}
}

// TestWebAdminPages manages users and tokens and reads the audit trail
// through the UI as the admin; a viewer is refused every admin page and
// form, and is not shown the links.
func TestWebAdminPages(t *testing.T) {
	e := newEnv(t)
	admin := e.webClient(t)
	csrf, _, _ := e.webSignIn(t, admin, testAdmin)
	if _, page := webGet(t, admin, e.ts.URL+"/"); !strings.Contains(page, `id="nav-users"`) || !strings.Contains(page, `id="nav-audit"`) {
		t.Errorf("the admin's pages have no Users and Audit links")
	}

	resp, _ := webPost(t, admin, e.ts.URL+"/ui/users", url.Values{"csrf": {csrf}, "name": {"olga"}, "role": {"operator"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/users/olga" {
		t.Fatalf("create user = %d to %q, want 303 to /ui/users/olga", resp.StatusCode, resp.Header.Get("Location"))
	}
	if _, page := webGet(t, admin, e.ts.URL+"/ui/users"); !strings.Contains(page, `href="/ui/users/olga"`) || !strings.Contains(page, "operator") {
		t.Errorf("the users page does not list olga, operator: %.500s", page)
	}
	resp, page := webPost(t, admin, e.ts.URL+"/ui/users/olga/tokens", url.Values{"csrf": {csrf}, "name": {"laptop"}, "expires_in": {"720h"}})
	secret := regexp.MustCompile(`id="token-secret">(eu_[^<]+)<`).FindStringSubmatch(page)
	if resp.StatusCode != http.StatusOK || secret == nil || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("create token = %d (Cache-Control %q), secret %v: %.500s", resp.StatusCode, resp.Header.Get("Cache-Control"), secret, page)
	}
	if _, page := webGet(t, admin, e.ts.URL+"/ui/users/olga"); strings.Contains(page, secret[1]) || !strings.Contains(page, "laptop") {
		t.Errorf("olga's page afterwards shows the secret, or not the token laptop")
	}
	olga := e.webClient(t)
	if c, resp, body := e.webSignIn(t, olga, secret[1]); c == "" {
		t.Fatalf("sign in with olga's new token = %d: %.300s", resp.StatusCode, body)
	}
	if _, page := webGet(t, olga, e.ts.URL+"/"); !strings.Contains(page, "olga (operator)") || strings.Contains(page, `id="nav-users"`) {
		t.Errorf("olga's runs page: not signed in as olga (operator), or shows the Users link")
	}

	var list client.TokenList
	e.must(http.StatusOK, "GET", "/api/v1/tokens?user=olga", testAdmin, nil, &list)
	if len(list.Tokens) != 1 {
		t.Fatalf("olga has %d tokens", len(list.Tokens))
	}
	resp, _ = webPost(t, admin, e.ts.URL+"/ui/tokens/"+list.Tokens[0].ID+"/revoke", url.Values{"csrf": {csrf}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/users/olga" {
		t.Errorf("revoke = %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// The session started with it ends too.
	if resp, page := webGet(t, olga, e.ts.URL+"/ui/tasks"); resp.StatusCode != http.StatusSeeOther || strings.Contains(page, "olga (operator)") {
		t.Errorf("olga's session after the revoke: GET /ui/tasks = %d, want 303 to sign in", resp.StatusCode)
	}
	if c, resp, body := e.webSignIn(t, e.webClient(t), secret[1]); c != "" || resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "revoked") {
		t.Errorf("sign in with a revoked token = %d: %.300s", resp.StatusCode, body)
	}

	_, page = webGet(t, admin, e.ts.URL+"/ui/audit")
	for _, want := range []string{"user.create", "token.create", "token.revoke", "olga"} {
		if !strings.Contains(page, want) {
			t.Errorf("the audit page does not show %q", want)
		}
	}
	var audit client.AuditList
	e.must(http.StatusOK, "GET", "/api/v1/audit", testAdmin, nil, &audit)
	newest := audit.Entries[0]
	_, page = webGet(t, admin, e.ts.URL+fmt.Sprintf("/ui/audit?before=%d", newest.ID))
	if strings.Contains(page, fmt.Sprintf(`id="audit-%d"`, newest.ID)) || !strings.Contains(page, fmt.Sprintf(`id="audit-%d"`, audit.Entries[1].ID)) {
		t.Errorf("the audit page before %d shows the newest entry or not the one before it", newest.ID)
	}
	if resp, _ := webGet(t, admin, e.ts.URL+"/ui/audit?before=x"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("audit before=x = %d, want 400", resp.StatusCode)
	}

	e.must(http.StatusCreated, "POST", "/api/v1/users", testAdmin, &client.UserRequest{Name: "vera", Role: "viewer"}, nil)
	var tok client.Token
	e.must(http.StatusCreated, "POST", "/api/v1/tokens", testAdmin, &client.TokenRequest{Name: "web", User: "vera"}, &tok)
	vera := e.webClient(t)
	vcsrf, _, _ := e.webSignIn(t, vera, tok.Secret)
	if _, page := webGet(t, vera, e.ts.URL+"/"); strings.Contains(page, `id="nav-users"`) || strings.Contains(page, `id="nav-audit"`) {
		t.Errorf("a viewer is shown the Users or Audit link")
	}
	for _, p := range []string{"/ui/users", "/ui/users/olga", "/ui/audit"} {
		if resp, body := webGet(t, vera, e.ts.URL+p); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "this needs the admin role; vera has the viewer role") {
			t.Errorf("GET %s as a viewer = %d, want 403 naming the admin role", p, resp.StatusCode)
		}
	}
	for _, p := range []string{"/ui/users", "/ui/users/olga/tokens", "/ui/tokens/" + tok.ID + "/revoke"} {
		if resp, body := webPost(t, vera, e.ts.URL+p, url.Values{"csrf": {vcsrf}, "name": {"x"}, "role": {"admin"}}); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "this needs the admin role; vera has the viewer role") {
			t.Errorf("POST %s as a viewer = %d, want 403 naming the admin role", p, resp.StatusCode)
		}
	}
}
