package postgres_test

import (
	"context"
	"testing"

	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/drivertest"
	"github.com/errandci/errand/manager/store/postgres"
	"github.com/errandci/errand/manager/store/postgres/pgtest"
	"github.com/errandci/errand/manager/store/storetest"
)

func open(t testing.TB, url string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), url)
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
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, pgtest.URL(t)) })
}

func TestDriverContract(t *testing.T) {
	drivertest.Run(t, func(t *testing.T) store.Driver {
		d, err := postgres.OpenDriver(context.Background(), pgtest.URL(t))
		if err != nil {
			t.Fatalf("OpenDriver: %v", err)
		}
		t.Cleanup(func() {
			if err := d.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return d
	})
}
