package ost_test

import (
	"errors"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/errandci/errand/manager/ost"
)

func TestCleanKey(t *testing.T) {
	for _, k := range []string{"a", "logs/01H/0", "logs/A1:x-y_z../12", "ünï/✓", strings.Repeat("k", ost.MaxElementLen)} {
		if got, err := ost.CleanKey(k); err != nil || got != k {
			t.Errorf("CleanKey(%q) = %q, %v", k, got, err)
		}
	}
	for _, k := range []string{"", "logs/../0", "logs/./0", "..", ".", "/abs", "a//b", "a/", "a\\b", "a\x00b", "a\nb", "a\x7fb",
		"bad\xffutf8", strings.Repeat("k", ost.MaxElementLen+1), strings.Repeat("k/", ost.MaxKeyLen/2) + "k"} {
		if _, err := ost.CleanKey(k); !errors.Is(err, ost.ErrInvalidKey) {
			t.Errorf("CleanKey(%q) error = %v, want ErrInvalidKey", k, err)
		}
	}
}

// FuzzCleanKey checks that every key CleanKey accepts stays under any
// base path, in slash form and in the file system's form.
func FuzzCleanKey(f *testing.F) {
	for _, k := range []string{"logs/01H/0", "logs/../0", "..", "a/./b", "a//b", "/x", "a\\..\\b", "x\x00y", "é/\xff", "a/b/..", "...", "..a/b.."} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		k, err := ost.CleanKey(key)
		if err != nil {
			if !errors.Is(err, ost.ErrInvalidKey) {
				t.Fatalf("CleanKey(%q) error %v is not ErrInvalidKey", key, err)
			}
			return
		}
		if k != key || len(k) > ost.MaxKeyLen || !utf8.ValidString(k) {
			t.Fatalf("CleanKey(%q) = %q", key, k)
		}
		for _, el := range strings.Split(k, "/") {
			if el == "" || el == "." || el == ".." || strings.ContainsAny(el, "\\\x00") || len(el) > ost.MaxElementLen {
				t.Fatalf("CleanKey(%q) accepted element %q", key, el)
			}
		}
		const base = "/base/objects"
		if j := path.Join(base, k); !strings.HasPrefix(j, base+"/") || j == base {
			t.Fatalf("key %q escapes %s as %s", key, base, j)
		}
		if j := filepath.Join(filepath.FromSlash(base), filepath.FromSlash(k)); !strings.HasPrefix(j, filepath.FromSlash(base)+string(filepath.Separator)) {
			t.Fatalf("key %q escapes %s as %s", key, base, j)
		}
		// Every log key the manager writes is accepted.
		if _, err := ost.CleanKey("logs/" + strings.ReplaceAll(k, "/", "_") + "/0"); err != nil && len(k) < ost.MaxElementLen {
			t.Fatalf("log key of %q refused: %v", k, err)
		}
	})
}
