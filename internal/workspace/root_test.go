package workspace

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// A directory of the target that is a link (as after a swap while the
// copy runs) does not lead the copy out of its target: the copy fails
// and nothing is written where the link points.
func TestCopyNeverWritesThroughALink(t *testing.T) {
	base := t.TempDir()
	src, dst, outside := filepath.Join(base, "src"), filepath.Join(base, "dst"), filepath.Join(base, "outside")
	for _, d := range []string{filepath.Join(src, "z"), dst, outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(src, "z", "x"), []byte("evil"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dst, "z")); err != nil {
		t.Fatal(err)
	}
	err := CopyWith(context.Background(), src, dst, Options{NoGit: true})
	if err == nil {
		t.Error("the copy went on through a link in its target")
	}
	if _, err := os.Stat(filepath.Join(outside, "x")); err == nil {
		t.Fatal("the copy wrote outside its target, through dst/z")
	}
}
