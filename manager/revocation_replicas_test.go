package manager

import (
	"net/http"
	"path/filepath"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/store/postgres/pgtest"
)

// TestDeregisterHoldsOnEveryReplica: a delegate deregistered through one
// manager is refused by the others at once, though they had its token
// verified and cached.
func TestDeregisterHoldsOnEveryReplica(t *testing.T) {
	url, objects := pgtest.URL(t), filepath.Join(t.TempDir(), "objects")
	a, b := newReplica(t, url, objects), newReplica(t, url, objects)
	d := a.register("gone", nil)
	// b verifies the token and caches the delegate.
	b.must(http.StatusOK, "POST", "/api/v1/delegates/"+d.id+"/heartbeat", d.token, map[string]any{}, nil)

	a.must(http.StatusNoContent, "DELETE", "/api/v1/delegates/"+d.id, d.token, nil, nil)
	b.fails(http.StatusUnauthorized, errand.CodeUnauthorized, "POST", "/api/v1/delegates/"+d.id+"/heartbeat", d.token, map[string]any{})
	b.fails(http.StatusUnauthorized, errand.CodeUnauthorized, "POST", "/api/v1/delegates/"+d.id+"/acquire?wait=0", d.token, nil)
	a.fails(http.StatusUnauthorized, errand.CodeUnauthorized, "POST", "/api/v1/delegates/"+d.id+"/heartbeat", d.token, map[string]any{})

	// A delegate registered again works on both.
	again := b.register("again", &client.RegisterRequest{})
	a.must(http.StatusOK, "POST", "/api/v1/delegates/"+again.id+"/heartbeat", again.token, map[string]any{}, nil)
}
