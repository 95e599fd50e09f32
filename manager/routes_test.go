package manager

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

// routeFixture is a server with something behind every route: two
// delegates, a task leased to the first, and a run whose one stage waits
// for an approval.
type routeFixture struct {
	e      *env
	d1, d2 delegate
	taskID string
	lease  string
	runID  string
	// endedRunID is a run that has ended, to restart.
	endedRunID string
	stageName  string
	// user is a viewer with one token, userToken (id userTokenID).
	user, userToken, userTokenID string
	// hookSecret is the pipeline's hook secret; deliveryID a delivery
	// it accepted.
	hookSecret, deliveryID string
}

func newRouteFixture(t testing.TB) *routeFixture {
	t.Helper()
	e := newEnv(t)
	f := &routeFixture{e: e, d1: e.register("d1", nil), d2: e.register("d2", nil), stageName: "gate"}
	f.taskID = e.create(&client.TaskSpec{Type: "x", Data: json.RawMessage(`{"stage":"s","artifacts":{"paths":["dist"]}}`)}).ID
	a := e.acquire(f.d1, "max=1")
	if len(a.Tasks) != 1 {
		t.Fatalf("acquired %d tasks", len(a.Tasks))
	}
	f.lease = a.Tasks[0].Lease.Token
	f.uploadArtifact(t, "dist/app", "the app")
	f.runID = e.submit("stages:\n  - name: gate\n    approval: {approvers: 1}\n    steps: [{name: s, commands: [\"true\"]}]\n").ID
	// A pipeline named as the stage, with run 1 waiting at the gate, and
	// a run that has ended, to restart.
	e.createPipeline(&client.PipelineSpec{Name: f.stageName, Config: "stages:\n  - name: gate\n    approval: {approvers: 1}\n    steps: [{name: s, commands: [\"true\"]}]\n",
		Triggers: &client.PipelineTriggers{Webhook: &client.WebhookTrigger{}}})
	e.startPipelineRun(f.stageName, nil)
	f.hookFixture(t)
	f.endedRunID = e.submit("stages: []\n").ID
	f.user = "fixture-viewer"
	e.must(http.StatusCreated, "POST", "/api/v1/users", testAdmin, &client.UserRequest{Name: f.user, Role: "viewer"}, nil)
	var tok client.Token
	e.must(http.StatusCreated, "POST", "/api/v1/tokens", testAdmin, &client.TokenRequest{Name: "fixture", User: f.user}, &tok)
	f.userToken, f.userTokenID = tok.Secret, tok.ID
	return f
}

// path fills a route pattern's wildcards with the fixture's ids.
func (f *routeFixture) path(pattern string) string {
	p := strings.TrimSuffix(pattern, "{$}")
	id := ""
	switch {
	case strings.HasPrefix(p, "/api/v1/delegates/"):
		id = f.d1.id
	case strings.HasPrefix(p, "/api/v1/tasks/"):
		id = f.taskID
	case strings.HasPrefix(p, "/api/v1/runs/"):
		id = f.runID
	case strings.HasPrefix(p, "/api/v1/users/"):
		id = f.user
	case strings.HasPrefix(p, "/api/v1/tokens/"):
		id = f.userTokenID
	}
	if strings.HasSuffix(p, "/restart") {
		id = f.endedRunID
	}
	if strings.Contains(p, "/deliveries/") {
		id = f.deliveryID
	}
	p = strings.ReplaceAll(p, "{pipeline}", f.stageName)
	p = strings.ReplaceAll(p, "{id}", id)
	p = strings.ReplaceAll(p, "{name}", f.stageName)
	p = strings.ReplaceAll(p, "{number}", "1")
	p = strings.ReplaceAll(p, "{stage}", f.stageName)
	p = strings.ReplaceAll(p, "{step}", "s")
	p = strings.ReplaceAll(p, "{path...}", "dist/app")
	if strings.HasSuffix(p, "/acquire") {
		p += "?wait=0s&max=1"
	}
	return p
}

// body is a request body the route's rightful caller may send.
func (f *routeFixture) body(method, pattern string) string {
	switch method + " " + pattern {
	case "POST /api/v1/delegates":
		return `{"name":"d3"}`
	case "POST /api/v1/delegates/{id}/heartbeat":
		return `{"running":["` + f.taskID + `"]}`
	case "POST /api/v1/tasks":
		return `{"type":"x"}`
	case "POST /api/v1/tasks/{id}/status":
		return `{"lease":"` + f.lease + `","state":"running"}`
	case "POST /api/v1/delegates/{id}/reports":
		return `{"reports":[{"task_id":"` + f.taskID + `","lease":"` + f.lease + `","state":"running"}]}`
	case "POST /api/v1/tasks/{id}/logs":
		return `{"lease":"` + f.lease + `","offset":0,"lines":["a"]}`
	case "POST /api/v1/runs":
		return `{"config":"stages: []","filename":"config.yml"}`
	case "POST /api/v1/runs/{id}/stages/{name}/approve":
		return `{"approver":"a"}`
	case "POST /api/v1/pipelines":
		return `{"name":"p2","config":"stages: []"}`
	case "PUT /api/v1/pipelines/{name}":
		return `{"config":"stages: []"}`
	case "POST /api/v1/runs/{id}/restart":
		return `{"from":"start"}`
	case "POST /api/v1/users":
		return `{"name":"u3","role":"viewer"}`
	case "POST /api/v1/tokens":
		return `{"name":"t3","user":"` + f.user + `"}`
	case "POST /api/v1/tasks/{id}/artifacts":
		return string(make([]byte, 1024)) // an empty tar
	}
	return ""
}

// send sends one request and returns its status and body; a transport
// error (the server dropped the connection, as it does after a panic) is
// a failure.
func (f *routeFixture) send(t testing.TB, method, path, token string, body []byte) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, f.e.ts.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if strings.Contains(path, "artifacts") {
		req.Header.Set(client.ArtifactLeaseHeader, f.lease)
	}
	resp, err := f.e.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read answer: %v", method, path, err)
	}
	return resp.StatusCode, out
}

// Who may call a route.
const (
	byAnyone       = iota // no token needed
	byAdmin               // the admin token
	byRegistration        // the registration token
	byOwnDelegate         // the delegate named in the path; another one is forbidden
	byLeaseHolder         // the delegate holding the task's lease; another one is refused
	byDelegateOrAdmin
	byAnyDelegateOrAdmin
	bySignature // no token: the signature of the body (a webhook delivery); every token is 401
)

// routeAuth says who may call every route the server registers. A new
// route needs a row here.
var routeAuth = map[string]int{
	"POST /api/v1/delegates":                                                 byRegistration,
	"POST /api/v1/delegates/{id}/heartbeat":                                  byOwnDelegate,
	"POST /api/v1/delegates/{id}/acquire":                                    byOwnDelegate,
	"POST /api/v1/delegates/{id}/reports":                                    byOwnDelegate,
	"DELETE /api/v1/delegates/{id}":                                          byDelegateOrAdmin,
	"GET /api/v1/delegates":                                                  byAnyDelegateOrAdmin,
	"GET /api/v1/delegates/{id}":                                             byAdmin,
	"POST /api/v1/delegates/{id}/drain":                                      byAdmin,
	"POST /api/v1/tasks":                                                     byAdmin,
	"GET /api/v1/tasks":                                                      byAdmin,
	"GET /api/v1/tasks/{id}":                                                 byAdmin,
	"POST /api/v1/tasks/{id}/cancel":                                         byAdmin,
	"POST /api/v1/tasks/{id}/status":                                         byLeaseHolder,
	"POST /api/v1/tasks/{id}/logs":                                           byLeaseHolder,
	"GET /api/v1/tasks/{id}/logs":                                            byAdmin,
	"POST /api/v1/runs":                                                      byAdmin,
	"GET /api/v1/runs":                                                       byAdmin,
	"GET /api/v1/runs/{id}":                                                  byAdmin,
	"POST /api/v1/runs/{id}/cancel":                                          byAdmin,
	"POST /api/v1/runs/{id}/stages/{name}/approve":                           byAdmin,
	"POST /api/v1/runs/{id}/restart":                                         byAdmin,
	"POST /api/v1/pipelines":                                                 byAdmin,
	"GET /api/v1/pipelines":                                                  byAdmin,
	"GET /api/v1/pipelines/{name}":                                           byAdmin,
	"PUT /api/v1/pipelines/{name}":                                           byAdmin,
	"DELETE /api/v1/pipelines/{name}":                                        byAdmin,
	"POST /api/v1/pipelines/{name}/runs":                                     byAdmin,
	"GET /api/v1/pipelines/{name}/runs":                                      byAdmin,
	"GET /api/v1/pipelines/{name}/runs/{number}":                             byAdmin,
	"GET /api/v1/pipelines/{name}/runs/{number}/stages":                      byAdmin,
	"GET /api/v1/pipelines/{name}/runs/{number}/stages/{stage}":              byAdmin,
	"GET /api/v1/pipelines/{name}/runs/{number}/stages/{stage}/steps":        byAdmin,
	"GET /api/v1/pipelines/{name}/runs/{number}/stages/{stage}/steps/{step}": byAdmin,
	"POST /api/v1/users":                                                     byAdmin,
	"GET /api/v1/users":                                                      byAdmin,
	"GET /api/v1/users/{id}":                                                 byAdmin,
	"DELETE /api/v1/users/{id}":                                              byAdmin,
	"POST /api/v1/tokens":                                                    byAdmin,
	"GET /api/v1/tokens":                                                     byAdmin,
	"DELETE /api/v1/tokens/{id}":                                             byAdmin,
	"GET /api/v1/audit":                                                      byAdmin,
	"POST /api/v1/hooks/{pipeline}":                                          bySignature,
	"GET /api/v1/pipelines/{name}/deliveries":                                byAdmin,
	"POST /api/v1/pipelines/{name}/deliveries/{id}/redeliver":                byAdmin,
	"POST /api/v1/pipelines/{name}/hook-secret":                              byAdmin,
	"DELETE /api/v1/pipelines/{name}/hook-secret/previous":                   byAdmin,
	"POST /api/v1/tasks/{id}/artifacts":                                      byLeaseHolder,
	"GET /api/v1/tasks/{id}/needed-artifacts":                                byLeaseHolder,
	"GET /api/v1/runs/{id}/artifacts":                                        byAdmin,
	"GET /api/v1/tasks/{id}/artifacts/{path...}":                             byAdmin,
	"GET /metrics":                                                           byAdmin,
	"GET /healthz":                                                           byAnyone,
	"GET /readyz":                                                            byAnyone,
	"GET /{$}":                                                               byAnyone,
}

// Expected answers.
const (
	wantPass      = "2xx"          // authenticated and served
	wantUnauth    = "401"          // no valid token for this route
	wantForbidden = "403"          // a valid token of the wrong delegate
	wantRefused   = "4xx, not 401" // a valid token, refused by what it asks
)

// TestAuthMatrix calls every registered route as every principal, with
// the rightful caller last so that what the others try cannot have
// changed what it finds.
func TestAuthMatrix(t *testing.T) {
	probe := newEnv(t)
	registered := map[string]bool{}
	for _, r := range probe.s.Routes() {
		key := r.Method + " " + r.Pattern
		registered[key] = true
		if _, ok := routeAuth[key]; !ok {
			t.Errorf("route %s has no row in routeAuth: say who may call it", key)
		}
	}
	for key := range routeAuth {
		if !registered[key] {
			t.Errorf("routeAuth names %s, which the server does not register", key)
		}
	}
	principals := []string{"no token", "garbage token", "forged delegate token", "registration token", "another delegate", "the delegate", "admin"}
	for key, who := range routeAuth {
		if !registered[key] {
			continue
		}
		method, pattern, _ := strings.Cut(key, " ")
		t.Run(key, func(t *testing.T) {
			f := newRouteFixture(t)
			tokens := map[string]string{
				"no token": "", "garbage token": "not-a-token", "forged delegate token": f.d1.id + ".not-the-secret",
				"registration token": testReg, "another delegate": f.d2.token, "the delegate": f.d1.token, "admin": testAdmin,
			}
			for _, pr := range principals {
				want := wantUnauth
				switch who {
				case byAnyone:
					want = wantPass
				case byAdmin:
					if pr == "admin" {
						want = wantPass
					}
				case byRegistration:
					if pr == "registration token" {
						want = wantPass
					}
				case byOwnDelegate, byLeaseHolder, byDelegateOrAdmin, byAnyDelegateOrAdmin:
					switch {
					case pr == "the delegate":
						want = wantPass
					case pr == "admin" && (who == byDelegateOrAdmin || who == byAnyDelegateOrAdmin):
						want = wantPass
					case pr == "another delegate" && who == byAnyDelegateOrAdmin:
						want = wantPass
					case pr == "another delegate" && who == byLeaseHolder:
						want = wantRefused
					case pr == "another delegate":
						want = wantForbidden
					}
				}
				var body []byte
				if b := f.body(method, pattern); b != "" {
					body = []byte(b)
				}
				path := f.path(pattern)
				if pattern == "/api/v1/delegates/{id}" && method == "DELETE" && pr == "admin" {
					// The delegate has deregistered itself just before.
					path = "/api/v1/delegates/" + f.d2.id
				}
				status, out := f.send(t, method, path, tokens[pr], body)
				ok := false
				switch want {
				case wantPass:
					ok = status >= 200 && status < 300
				case wantUnauth:
					ok = status == http.StatusUnauthorized
				case wantForbidden:
					ok = status == http.StatusForbidden
				case wantRefused:
					ok = status >= 400 && status < 500 && status != http.StatusUnauthorized
				}
				if !ok {
					t.Errorf("%s %s as %s = %d %.200s, want %s", method, path, pr, status, out, want)
				}
				if status >= 400 {
					var eb struct{ Kind, Code string }
					if json.Unmarshal(out, &eb) != nil || eb.Kind != errand.KindError || eb.Code == "" {
						t.Errorf("%s %s as %s = %d %.200s: not a JSON error", method, path, pr, status, out)
					}
				}
			}
			if who == bySignature {
				f.sendSigned(t, f.path(pattern))
			}
		})
	}
}
