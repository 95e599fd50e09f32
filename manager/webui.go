package manager

import (
	"context"
	"crypto/sha256"
	"net/http"

	"github.com/errandci/errand/manager/web"
)

// webUI returns the web UI over this server's API. The session key is
// derived from the admin token, so that replicas sharing the token
// accept each other's sessions and a new admin token ends every session.
func (s *Server) webUI() *web.Handler {
	key := sha256.Sum256([]byte("errand web session key\x00" + s.cfg.AdminToken))
	ui, err := web.New(web.Config{
		API:        http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }),
		SessionKey: key[:],
		SignIn: func(_ context.Context, token string) (web.Principal, bool) {
			if equalToken(token, s.cfg.AdminToken) {
				return web.Principal{Name: "admin", Role: web.RoleAdmin}, true
			}
			return web.Principal{}, false
		},
		APIToken: func(web.Principal) string { return s.cfg.AdminToken },
		Log:      s.log,
		Now:      s.now,
	})
	if err != nil {
		// Its templates are embedded in the binary: a parse error is a
		// build defect, found by every test that starts a server.
		panic(err)
	}
	return ui
}

// serveWebRoot serves the UI's root page: the runs, or the sign-in form.
func serveWebRoot(ui http.Handler) apiFunc {
	return func(w http.ResponseWriter, r *http.Request, _ principal) error {
		ui.ServeHTTP(w, r)
		return nil
	}
}
