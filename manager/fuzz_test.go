package manager

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/errandci/errand"
)

// FuzzAPIPost posts arbitrary bodies to every POST route of a server on
// loopback, as the route's rightful caller, and checks the answer: never a
// 5xx nor a dropped connection (a panic), always JSON, an error always a
// structured one.
func FuzzAPIPost(f *testing.F) {
	fx := newRouteFixture(f)
	// A request that hangs is a failure too.
	fx.e.http.Timeout = 10 * time.Second
	var posts []string
	for _, r := range fx.e.s.Routes() {
		if r.Method == http.MethodPost {
			posts = append(posts, r.Pattern)
		}
	}
	slices.Sort(posts)
	tokenFor := func(pattern string) string {
		switch routeAuth["POST "+pattern] {
		case byRegistration:
			return testReg
		case byOwnDelegate, byLeaseHolder, byDelegateOrAdmin, byAnyDelegateOrAdmin:
			return fx.d1.token
		}
		return testAdmin
	}
	for i, p := range posts {
		good := fx.body(http.MethodPost, p)
		for _, b := range []string{good, good + "]not json", good + "}", "null", "{}", "[]", `"x"`, nested(100),
			`{"name":"d","labels":{"a=b":"x\ny"}}`, `{"type":"x\u0000","selector":{"labels":{"":"v"}}}`,
			`{"config":"stages: [{name: a, steps: [{name: s, commands: [c]}]}]","filename":"c.yml"}`} {
			f.Add(uint8(i), []byte(b))
		}
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		pattern := posts[int(route)%len(posts)]
		path := fx.path(pattern)
		status, out := fx.send(t, http.MethodPost, path, tokenFor(pattern), body)
		if status >= 500 {
			t.Fatalf("POST %s with %q = %d %s", path, body, status, out)
		}
		if status == http.StatusNoContent {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("POST %s with %q = %d, not JSON: %q", path, body, status, out)
		}
		if status >= 400 {
			var eb struct{ Kind, Code, Reason string }
			if err := json.Unmarshal(out, &eb); err != nil || eb.Kind != errand.KindError || eb.Code == "" || strings.TrimSpace(eb.Reason) == "" {
				t.Fatalf("POST %s with %q = %d %s: not a structured error", path, body, status, out)
			}
		}
	})
}
