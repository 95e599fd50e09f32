package manager

import (
	"net/http"
	"strings"
	"testing"

	"github.com/errandci/errand/client"
)

// pass is a role matrix cell for a request that is served (any 2xx).
const pass = 200

// roleCells are what one route answers to each kind of caller.
type roleCells struct{ none, delegate, viewer, operator, admin int }

// roleMatrix says what every registered route answers to no token, a
// delegate's token and the tokens of a viewer, an operator and an
// admin user. A new route needs a row here.
var roleMatrix = map[string]roleCells{
	"POST /api/v1/delegates":                                                 {401, 401, 401, 401, 401},
	"POST /api/v1/delegates/{id}/heartbeat":                                  {401, pass, 401, 401, 401},
	"POST /api/v1/delegates/{id}/acquire":                                    {401, pass, 401, 401, 401},
	"POST /api/v1/delegates/{id}/reports":                                    {401, pass, 401, 401, 401},
	"DELETE /api/v1/delegates/{id}":                                          {401, pass, 403, 403, pass},
	"GET /api/v1/delegates":                                                  {401, pass, pass, pass, pass},
	"GET /api/v1/delegates/{id}":                                             {401, 401, pass, pass, pass},
	"POST /api/v1/delegates/{id}/drain":                                      {401, 401, 403, 403, pass},
	"POST /api/v1/tasks":                                                     {401, 401, 403, pass, pass},
	"GET /api/v1/tasks":                                                      {401, 401, pass, pass, pass},
	"GET /api/v1/tasks/{id}":                                                 {401, 401, pass, pass, pass},
	"POST /api/v1/tasks/{id}/cancel":                                         {401, 401, 403, pass, pass},
	"POST /api/v1/tasks/{id}/status":                                         {401, pass, 401, 401, 401},
	"POST /api/v1/tasks/{id}/logs":                                           {401, pass, 401, 401, 401},
	"GET /api/v1/tasks/{id}/logs":                                            {401, 401, pass, pass, pass},
	"POST /api/v1/runs":                                                      {401, 401, 403, pass, pass},
	"GET /api/v1/runs":                                                       {401, 401, pass, pass, pass},
	"GET /api/v1/runs/{id}":                                                  {401, 401, pass, pass, pass},
	"POST /api/v1/runs/{id}/cancel":                                          {401, 401, 403, pass, pass},
	"POST /api/v1/runs/{id}/stages/{name}/approve":                           {401, 401, 403, pass, pass},
	"POST /api/v1/runs/{id}/restart":                                         {401, 401, 403, pass, pass},
	"POST /api/v1/pipelines":                                                 {401, 401, 403, pass, pass},
	"GET /api/v1/pipelines":                                                  {401, 401, pass, pass, pass},
	"GET /api/v1/pipelines/{name}":                                           {401, 401, pass, pass, pass},
	"PUT /api/v1/pipelines/{name}":                                           {401, 401, 403, pass, pass},
	"DELETE /api/v1/pipelines/{name}":                                        {401, 401, 403, pass, pass},
	"POST /api/v1/pipelines/{name}/runs":                                     {401, 401, 403, pass, pass},
	"GET /api/v1/pipelines/{name}/runs":                                      {401, 401, pass, pass, pass},
	"GET /api/v1/pipelines/{name}/runs/{number}":                             {401, 401, pass, pass, pass},
	"GET /api/v1/pipelines/{name}/runs/{number}/stages":                      {401, 401, pass, pass, pass},
	"GET /api/v1/pipelines/{name}/runs/{number}/stages/{stage}":              {401, 401, pass, pass, pass},
	"GET /api/v1/pipelines/{name}/runs/{number}/stages/{stage}/steps":        {401, 401, pass, pass, pass},
	"GET /api/v1/pipelines/{name}/runs/{number}/stages/{stage}/steps/{step}": {401, 401, pass, pass, pass},
	"POST /api/v1/users":                                                     {401, 401, 403, 403, pass},
	"GET /api/v1/users":                                                      {401, 401, 403, 403, pass},
	"GET /api/v1/users/{id}":                                                 {401, 401, 403, 403, pass},
	"DELETE /api/v1/users/{id}":                                              {401, 401, 403, 403, pass},
	// The fixture's token is the viewer's: the operator may neither
	// make nor revoke the viewer's tokens, an admin may.
	"POST /api/v1/tokens":        {401, 401, pass, 403, pass},
	"GET /api/v1/tokens":         {401, 401, pass, pass, pass},
	"DELETE /api/v1/tokens/{id}": {401, 401, pass, 404, pass},
	"GET /api/v1/audit":          {401, 401, 403, 403, pass},
	// The signature of the body is the hook's authentication: a bearer
	// token of any kind is no signature.
	"POST /api/v1/hooks/{pipeline}":                           {401, 401, 401, 401, 401},
	"GET /api/v1/pipelines/{name}/deliveries":                 {401, 401, pass, pass, pass},
	"POST /api/v1/pipelines/{name}/deliveries/{id}/redeliver": {401, 401, 403, pass, pass},
	"POST /api/v1/pipelines/{name}/hook-secret":               {401, 401, 403, pass, pass},
	"DELETE /api/v1/pipelines/{name}/hook-secret/previous":    {401, 401, 403, pass, pass},
	"POST /api/v1/tasks/{id}/artifacts":                       {401, pass, 401, 401, 401},
	"GET /api/v1/tasks/{id}/needed-artifacts":                 {401, pass, 401, 401, 401},
	"GET /api/v1/runs/{id}/artifacts":                         {401, 401, pass, pass, pass},
	"GET /api/v1/tasks/{id}/artifacts/{path...}":              {401, 401, pass, pass, pass},
	"GET /metrics": {401, 401, 403, 403, pass},
	"GET /healthz": {pass, pass, pass, pass, pass},
	"GET /readyz":  {pass, pass, pass, pass, pass},
	"GET /{$}":     {pass, pass, pass, pass, pass},
}

// TestRoleMatrix calls every route as each kind of caller, each on a
// fresh fixture so that what one did cannot change what another finds,
// and checks the status against roleMatrix. A refusal for want of a role
// names the role needed.
func TestRoleMatrix(t *testing.T) {
	probe := newEnv(t)
	registered := map[string]bool{}
	for _, r := range probe.s.Routes() {
		key := r.Method + " " + r.Pattern
		registered[key] = true
		if _, ok := roleMatrix[key]; !ok {
			t.Errorf("route %s has no row in roleMatrix", key)
		}
	}
	for key := range roleMatrix {
		if !registered[key] {
			t.Errorf("roleMatrix names %s, which the server does not register", key)
		}
	}
	callers := []string{"none", "delegate", "viewer", "operator", "admin"}
	for key, cells := range roleMatrix {
		if !registered[key] {
			continue
		}
		method, pattern, _ := strings.Cut(key, " ")
		t.Run(key, func(t *testing.T) {
			want := []int{cells.none, cells.delegate, cells.viewer, cells.operator, cells.admin}
			for i, who := range callers {
				f := newRouteFixture(t)
				tokens := map[string]string{"none": "", "delegate": f.d1.token, "viewer": f.userToken,
					"operator": f.newUser(t, "op", "operator"), "admin": f.newUser(t, "boss", "admin")}
				var body []byte
				if b := f.body(method, pattern); b != "" && key != "POST /api/v1/runs/{id}/stages/{name}/approve" {
					body = []byte(b)
				}
				status, out := f.send(t, method, f.path(pattern), tokens[who], body)
				ok := status == want[i]
				if want[i] == pass {
					ok = status >= 200 && status < 300
				}
				if !ok {
					t.Errorf("%s as %s = %d %.300s, want %d", key, who, status, out, want[i])
				}
				if status == http.StatusForbidden && (who == "viewer" || who == "operator") &&
					!strings.Contains(string(out), "role") && !strings.Contains(string(out), "another user") {
					t.Errorf("%s as %s = 403 %.300s: the reason does not say what is needed", key, who, out)
				}
			}
		})
	}
}

// newUser creates a user with role and returns a token of theirs.
func (f *routeFixture) newUser(t testing.TB, name, role string) string {
	t.Helper()
	f.e.must(http.StatusCreated, "POST", "/api/v1/users", testAdmin, &client.UserRequest{Name: name, Role: role}, nil)
	var tok client.Token
	f.e.must(http.StatusCreated, "POST", "/api/v1/tokens", testAdmin, &client.TokenRequest{Name: "t", User: name}, &tok)
	return tok.Secret
}
