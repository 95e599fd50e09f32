package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/storetest"
)

func TestRunConformance(t *testing.T) {
	storetest.RunRuns(t, func(t *testing.T) store.Store { return open(t, filepath.Join(t.TempDir(), "errand.db")) })
}
