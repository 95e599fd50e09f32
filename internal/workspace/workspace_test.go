package workspace

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"reflect"
	"testing"
)

// tree writes files (path → content) under a new temp dir.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func git(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := osexec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

func TestFilesPlainTree(t *testing.T) {
	src := tree(t, map[string]string{
		"a.txt": "a", "src/b.txt": "b", ".git/config": "x", "data/db": "d", "ignored.log": "l", ".gitignore": "*.log\n",
		"src/.git": "gitdir: ../.git/modules/src\n",
	})
	if err := os.Symlink("../a.txt", filepath.Join(src, "src", "link")); err != nil {
		t.Fatal(err)
	}
	got, err := FilesWith(context.Background(), src, Options{Exclude: []string{filepath.Join(src, "data")}})
	if err != nil {
		t.Fatal(err)
	}
	// Without Git, .gitignore means nothing: only .git and the excluded
	// paths are left out.
	want := []string{".gitignore", "a.txt", "ignored.log", "src", "src/b.txt", "src/link"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Files = %q, want %q", got, want)
	}
}

func TestFilesGitWorkTree(t *testing.T) {
	if _, err := osexec.LookPath("git"); err != nil {
		t.Fatal("git is needed: apt-get install git")
	}
	src := tree(t, map[string]string{
		"tracked.txt": "t", "src/new.txt": "n", "build/out.bin": "o", "secret.env": "s", ".gitignore": "build/\n*.env\n", "gone.txt": "g",
	})
	git(t, src, "init", "-q")
	git(t, src, "add", "tracked.txt", ".gitignore", "gone.txt")
	if err := os.Remove(filepath.Join(src, "gone.txt")); err != nil {
		t.Fatal(err)
	}
	got, err := Files(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".gitignore", "src", "src/new.txt", "tracked.txt"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Files = %q, want %q", got, want)
	}
	// A subdirectory of a work tree lists its own files only.
	got, err = Files(context.Background(), filepath.Join(src, "src"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"new.txt"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Files(src) = %q, want %q", got, want)
	}
	// A directory the work tree ignores is copied whole.
	got, err = Files(context.Background(), filepath.Join(src, "build"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"out.bin"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Files(build) = %q, want %q", got, want)
	}
}

func TestCopyKeepsModesAndLinks(t *testing.T) {
	src := tree(t, map[string]string{"run.sh": "#!/bin/sh\n", "dir/f": "f"})
	if err := os.Chmod(filepath.Join(src, "run.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(src, "dir"), 0o750); err != nil {
		t.Fatal(err)
	}
	outside := tree(t, map[string]string{"victim": "keep"})
	if err := os.Symlink(filepath.Join(outside, "victim"), filepath.Join(src, "out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(src, "outdir")); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "ws")
	if err := Copy(context.Background(), src, dst); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"run.sh": 0o755, "dir": 0o750 | os.ModeDir, "dir/f": 0o644} {
		fi, err := os.Lstat(filepath.Join(dst, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), mode)
		}
	}
	for _, name := range []string{"out", "outdir"} {
		fi, err := os.Lstat(filepath.Join(dst, name))
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("%s: not copied as a link: %v %v", name, fi, err)
		}
	}
	// Nothing of what the links point to was copied.
	if _, err := os.Lstat(filepath.Join(dst, "outdir", "victim")); err != nil {
		t.Fatal(err) // reached through the link, which is fine
	}
	entries, _ := os.ReadDir(dst)
	if len(entries) != 4 {
		t.Fatalf("workspace holds %d entries, want 4", len(entries))
	}
}

func TestCopyIntoItselfAndLimits(t *testing.T) {
	src := tree(t, map[string]string{"a": "aaaa", "b": "bbbb"})
	dst := filepath.Join(src, ".errand", "ws")
	if err := Copy(context.Background(), src, dst); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dst, ".errand")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the workspace was copied into itself: %v", err)
	}
	if err := CopyWith(context.Background(), src, t.TempDir(), Options{MaxBytes: 6, NoGit: true}); !errors.Is(err, ErrLimit) {
		t.Fatalf("byte limit: %v, want ErrLimit", err)
	}
	if err := CopyWith(context.Background(), src, t.TempDir(), Options{MaxFiles: 1, NoGit: true}); !errors.Is(err, ErrLimit) {
		t.Fatalf("file limit: %v, want ErrLimit", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Copy(ctx, src, t.TempDir()); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled copy: %v", err)
	}
}

func TestTar(t *testing.T) {
	src := tree(t, map[string]string{"run.sh": "#!/bin/sh\n", "dir/f": "ff"})
	if err := os.Chmod(filepath.Join(src, "run.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(src, "dir", "link")); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Tar(context.Background(), src, &buf, Options{NoGit: true}); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		got[h.Name] = fmt.Sprintf("%c %o %s%s", h.Typeflag, h.Mode, h.Linkname, body)
	}
	want := map[string]string{
		"dir/":     fmt.Sprintf("%c 755 ", tar.TypeDir),
		"dir/f":    fmt.Sprintf("%c 644 ff", tar.TypeReg),
		"dir/link": fmt.Sprintf("%c 777 /etc/passwd", tar.TypeSymlink),
		"run.sh":   fmt.Sprintf("%c 755 #!/bin/sh\n", tar.TypeReg),
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("tar entries %q, want %q", got, want)
	}
	if err := Tar(context.Background(), src, io.Discard, Options{NoGit: true, MaxBytes: 5}); !errors.Is(err, ErrLimit) {
		t.Fatalf("byte limit: %v, want ErrLimit", err)
	}
}
