package gitsource_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/gitsource"
	"github.com/errandci/errand/internal/gitsource/gittest"
)

func TestReadFile(t *testing.T) {
	repo := gittest.NewRepo(t)
	url := repo.Daemon(t)
	ctx := context.Background()
	src := &errand.GitSource{URL: url, Ref: "main"}

	got, at, err := gitsource.ReadFile(ctx, fast, src, "", "ci/errand.yml", 1<<20, nil)
	if err != nil || at != repo.Second || string(got) != gittest.Config("second") {
		t.Fatalf("the ref's commit: %q at %s, %v; want the second config at %s", got, at, err, repo.Second)
	}
	got, at, err = gitsource.ReadFile(ctx, fast, src, repo.First, "ci/errand.yml", 1<<20, nil)
	if err != nil || at != repo.First || string(got) != gittest.Config("first") {
		t.Fatalf("a given commit: %q at %s, %v; want the first config", got, at, err)
	}
	if _, _, err := gitsource.ReadFile(ctx, fast, src, "", "ci/missing.yml", 1<<20, nil); !errors.Is(err, gitsource.ErrFileNotFound) {
		t.Errorf("a missing file: %v, want ErrFileNotFound", err)
	}
	if _, _, err := gitsource.ReadFile(ctx, fast, src, "", "ci", 1<<20, nil); err == nil || !strings.Contains(err.Error(), "not a file") {
		t.Errorf("a directory: %v", err)
	}
	if _, _, err := gitsource.ReadFile(ctx, fast, src, "", "ci/errand.yml", 10, nil); err == nil || !strings.Contains(err.Error(), "larger than the 10 allowed") {
		t.Errorf("a file over the bound: %v", err)
	}
	for _, bad := range []string{"", "/etc/passwd", "../x.yml", "ci/../../x", "-p", "ci//x", "HEAD:x", "a\\b"} {
		if _, _, err := gitsource.ReadFile(ctx, fast, src, "", bad, 1<<20, nil); !errors.Is(err, errand.ErrInvalid) {
			t.Errorf("path %q: %v, want invalid", bad, err)
		}
	}
	if _, _, err := gitsource.ReadFile(ctx, fast, &errand.GitSource{URL: url, Ref: "nope"}, "", "ci/errand.yml", 1<<20, nil); !errors.Is(err, gitsource.ErrRefNotFound) {
		t.Errorf("an unknown ref: %v", err)
	}
}
