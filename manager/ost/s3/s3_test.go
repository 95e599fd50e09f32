package s3_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/errandci/errand/manager/ost"
	"github.com/errandci/errand/manager/ost/osttest"
	"github.com/errandci/errand/manager/ost/s3"
	"github.com/errandci/errand/manager/ost/s3/s3test"
)

// TestConformance runs the suite with the smallest part S3 allows, so
// that its multi-megabyte objects are multipart uploads, with parts sent
// in parallel and one at a time.
func TestConformance(t *testing.T) {
	for _, threads := range []uint{4, 1} {
		t.Run(fmt.Sprintf("concurrency=%d", threads), func(t *testing.T) {
			osttest.Run(t, func(t *testing.T) ost.Storage {
				c := s3test.Config(t)
				c.PartSize, c.Concurrency = 5<<20, threads
				s, err := s3.New(context.Background(), c)
				if err != nil {
					t.Fatal(err)
				}
				return s
			})
		})
	}
}

// TestBasePath checks that objects land under the base path, and that two
// storages with different bases in one bucket do not see each other's.
func TestBasePath(t *testing.T) {
	ctx := context.Background()
	c := s3test.Config(t)
	a, err := s3.New(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	parent := c
	parent.Base = c.Base[:strings.LastIndex(c.Base, "/")]
	p, err := s3.New(ctx, parent)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Put(ctx, "k", bytes.NewReader([]byte("v")), 1); err != nil {
		t.Fatal(err)
	}
	rel := c.Base[len(parent.Base)+1:] + "/k"
	if _, err := p.Stat(ctx, rel); err != nil {
		t.Fatalf("object not under the base path: Stat(%s) from the parent: %v", rel, err)
	}
	sib := c
	sib.Base = c.Base + "-sibling"
	b, err := s3.New(ctx, sib)
	if err != nil {
		t.Fatal(err)
	}
	list, err := b.List(ctx, "")
	if err != nil || len(list) != 0 {
		t.Fatalf("sibling base lists %v, %v; want nothing", list, err)
	}
}

func TestParseURL(t *testing.T) {
	cases := []struct {
		url     string
		want    s3.Config
		wantErr string
	}{
		{url: "s3://logs/errand/prod?endpoint=127.0.0.1:9000&secure=false",
			want: s3.Config{Endpoint: "127.0.0.1:9000", Bucket: "logs", Base: "errand/prod"}},
		{url: "s3://logs/errand?endpoint=s3.example.com&region=eu-west-1",
			want: s3.Config{Endpoint: "s3.example.com", Bucket: "logs", Base: "errand", Secure: true, Region: "eu-west-1"}},
		{url: "s3://logs?endpoint=x:1", wantErr: "base path is required"},
		{url: "s3://logs/?endpoint=x:1", wantErr: "base path is required"},
		{url: "s3://logs/a/../b?endpoint=x:1", wantErr: "base path"},
		{url: "s3://logs/a", wantErr: "endpoint is required"},
		{url: "s3://key:secret@logs/a?endpoint=x:1", wantErr: "credentials do not belong"},
		{url: "s3://logs/a?endpoint=x:1&access_key=k", wantErr: "unknown parameter"},
		{url: "s3://logs/a?endpoint=x:1&secure=maybe", wantErr: "secure"},
		{url: "http://logs/a?endpoint=x:1", wantErr: "scheme"},
	}
	for _, c := range cases {
		got, err := s3.ParseURL(c.url)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("ParseURL(%q) error = %v, want one containing %q", c.url, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", c.url, got, err, c.want)
		}
	}
}
