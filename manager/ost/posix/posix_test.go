package posix_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/errandci/errand/manager/ost"
	"github.com/errandci/errand/manager/ost/osttest"
	"github.com/errandci/errand/manager/ost/posix"
)

func open(t *testing.T) *posix.Storage {
	t.Helper()
	s, err := posix.New(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	osttest.Run(t, func(t *testing.T) ost.Storage { return open(t) })
}

// TestSymlinkEscape plants links under the base directory that point out
// of it: no operation may read or write through them.
func TestSymlinkEscape(t *testing.T) {
	s := open(t)
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(s.Dir(), "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(s.Dir(), "file")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, k := range []string{"link/secret", "file"} {
		if rc, err := s.Get(ctx, k); err == nil {
			rc.Close()
			t.Errorf("Get(%q) read outside the base directory", k)
		}
	}
	if err := s.Put(ctx, "link/new", bytes.NewReader([]byte("x")), 1); err == nil {
		t.Error("Put through a link wrote outside the base directory")
	}
	if _, err := os.Stat(filepath.Join(outside, "new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("file created outside: %v", err)
	}
	list, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Errorf("List followed links: %v", list)
	}
}

// TestNoTempFilesLeft checks that a Put leaves only its object behind.
func TestNoTempFilesLeft(t *testing.T) {
	s := open(t)
	if err := s.Put(context.Background(), "a/b", bytes.NewReader([]byte("x")), -1); err != nil {
		t.Fatal(err)
	}
	_ = s.Put(context.Background(), "a/c", bytes.NewReader([]byte("x")), 5)
	entries, err := os.ReadDir(filepath.Join(s.Dir(), "a"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "b" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want only b", names)
	}
}
