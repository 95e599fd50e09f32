package postgres_test

import (
	"testing"

	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/postgres/pgtest"
	"github.com/errandci/errand/manager/store/storetest"
)

func TestRunConformance(t *testing.T) {
	storetest.RunRuns(t, func(t *testing.T) store.Store { return open(t, pgtest.URL(t)) })
}
