package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/sqlite"
	"github.com/errandci/errand/manager/store/storetest"
)

func open(t testing.TB) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "errand.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t) })
}
