package manager

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/store"
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
		SignIn: func(ctx context.Context, token string) (web.Principal, error) {
			if equalToken(token, s.cfg.AdminToken) {
				return web.Principal{Name: BootstrapAdmin, Role: web.RoleAdmin}, nil
			}
			p, isUser, err := s.userPrincipal(ctx, token)
			if err != nil {
				return web.Principal{}, err
			}
			if !isUser {
				return web.Principal{}, errand.Errorf(errand.CodeUnauthorized, "it is neither the admin token nor a user token")
			}
			id, _, _ := strings.Cut(strings.TrimPrefix(token, client.UserTokenPrefix), "_")
			return web.Principal{Name: p.user, Role: web.Role(p.role), TokenID: id}, nil
		},
		Check: s.webSessionValid,
		// The in-process requests carry the signed-in principal, which the
		// API serves in place of the bearer token (WithUserPrincipal).
		APIToken: func(web.Principal) string { return "" },
		APIContext: func(ctx context.Context, p web.Principal) context.Context {
			return WithUserPrincipal(ctx, p.Name, store.Role(p.Role))
		},
		Log: s.log,
		Now: s.now,
	})
	if err != nil {
		// Its templates are embedded in the binary: a parse error is a
		// build defect, found by every test that starts a server.
		panic(err)
	}
	return ui
}

// webSessionValid refuses a session whose user token was revoked or
// has expired, or whose user was disabled, since it was started.
func (s *Server) webSessionValid(ctx context.Context, p web.Principal) error {
	if p.TokenID == "" {
		return nil // the bootstrap admin: the session key derives from its token
	}
	if err := s.users.SessionValid(ctx, p.Name, p.TokenID); err != nil {
		return fmt.Errorf("session of %s: %w", p.Name, err)
	}
	return nil
}

// serveWebRoot serves the UI's root page: the runs, or the sign-in form.
func serveWebRoot(ui http.Handler) apiFunc {
	return func(w http.ResponseWriter, r *http.Request, _ principal) error {
		ui.ServeHTTP(w, r)
		return nil
	}
}
