package workspace

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEntryName(t *testing.T) {
	cases := map[string]string{
		"a": "a", "a/b/": "a/b", "./a": "a", "./": ".", "": ".", ".": ".",
		"../a": "", "/a": "", "a/../../b": "", "a//b": "", "a/./b": "", "a/..": "",
	}
	for in, want := range cases {
		got, err := EntryName(in)
		if want == "" {
			if !errors.Is(err, ErrBadEntry) {
				t.Errorf("EntryName(%q) = %q, %v; want ErrBadEntry", in, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("EntryName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestTopPaths(t *testing.T) {
	got, err := TopPaths([]string{"b/c", "a", "b", "a/x", "", "z"})
	if err != nil || strings.Join(got, " ") != "." {
		t.Errorf("TopPaths with . = %q, %v", got, err)
	}
	got, err = TopPaths([]string{"b/c", "a", "b/", "a/x", "ab"})
	if err != nil || strings.Join(got, " ") != "a ab b" {
		t.Errorf("TopPaths = %q, %v; want a ab b", got, err)
	}
	if _, err := TopPaths([]string{"a", "../b"}); !errors.Is(err, ErrOutside) {
		t.Errorf("TopPaths(../b) error = %v, want ErrOutside", err)
	}
}

func tarOf(t testing.TB, hdrs ...tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
	}
	_ = tw.Close()
	return buf.Bytes()
}

// TestUntarLimits: a stream past the entry or byte limit is refused
// with the limit named.
func TestUntarLimits(t *testing.T) {
	ctx := context.Background()
	three := tarOf(t, tar.Header{Typeflag: tar.TypeReg, Name: "a", Size: 10, Mode: 0o644},
		tar.Header{Typeflag: tar.TypeReg, Name: "b", Size: 10, Mode: 0o644},
		tar.Header{Typeflag: tar.TypeReg, Name: "c", Size: 10, Mode: 0o644})
	err := Untar(ctx, t.TempDir(), bytes.NewReader(three), Options{MaxFiles: 2})
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "2 entries") {
		t.Errorf("3 entries with a limit of 2: %v", err)
	}
	err = Untar(ctx, t.TempDir(), bytes.NewReader(three), Options{MaxBytes: 25})
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "25 bytes") {
		t.Errorf("30 bytes with a limit of 25: %v", err)
	}
	dir := t.TempDir()
	if err := Untar(ctx, dir, bytes.NewReader(three), Options{}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "c")); err != nil || len(b) != 10 {
		t.Fatalf("c = %q, %v", b, err)
	}
}

// TestTarPathsLimits: an export past the byte limit fails naming the file.
func TestTarPathsLimits(t *testing.T) {
	dir := tree(t, map[string]string{"d/a": "0123456789", "d/b": "0123456789"})
	var buf bytes.Buffer
	err := TarPaths(context.Background(), dir, []string{"d"}, &buf, Options{MaxBytes: 15})
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "d/b") {
		t.Errorf("export past 15 bytes: %v", err)
	}
}

// FuzzUntar extracts arbitrary streams: nothing may land outside the
// workspace, whatever the stream holds.
func FuzzUntar(f *testing.F) {
	f.Add(tarOf(f, tar.Header{Typeflag: tar.TypeReg, Name: "a/b", Size: 3, Mode: 0o644}))
	f.Add(tarOf(f, tar.Header{Typeflag: tar.TypeSymlink, Name: "l", Linkname: "..", Mode: 0o777},
		tar.Header{Typeflag: tar.TypeReg, Name: "l/x", Size: 1, Mode: 0o644}))
	f.Add(tarOf(f, tar.Header{Typeflag: tar.TypeReg, Name: "../x", Size: 1, Mode: 0o644}))
	f.Add(tarOf(f, tar.Header{Typeflag: tar.TypeDir, Name: "d/", Mode: 0o755},
		tar.Header{Typeflag: tar.TypeSymlink, Name: "d/l", Linkname: "/tmp", Mode: 0o777},
		tar.Header{Typeflag: tar.TypeReg, Name: "d/l/y", Size: 1, Mode: 0o644}))
	f.Fuzz(func(t *testing.T, b []byte) {
		base := t.TempDir()
		ws := filepath.Join(base, "ws")
		if err := os.Mkdir(ws, 0o755); err != nil {
			t.Fatal(err)
		}
		_ = Untar(context.Background(), ws, bytes.NewReader(b), Options{MaxBytes: 1 << 20, MaxFiles: 100})
		entries, err := os.ReadDir(base)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 {
			t.Fatalf("the stream wrote beside the workspace: %v", entries)
		}
	})
}
