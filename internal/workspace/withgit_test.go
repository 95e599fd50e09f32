package workspace

import (
	"context"
	"reflect"
	"testing"
)

// WithGit keeps .git, the project's and a submodule's link to it, which
// every other listing leaves out.
func TestFilesWithGit(t *testing.T) {
	dir := tree(t, map[string]string{"a.txt": "a", ".git/HEAD": "ref: refs/heads/main\n", "sub/.git": "gitdir: ../.git/modules/sub\n", "sub/b.txt": "b"})
	got, err := FilesWith(context.Background(), dir, Options{NoGit: true, WithGit: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".git", ".git/HEAD", "a.txt", "sub", "sub/.git", "sub/b.txt"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("WithGit lists %v, want %v", got, want)
	}
	got, err = FilesWith(context.Background(), dir, Options{NoGit: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a.txt", "sub", "sub/b.txt"}; !reflect.DeepEqual(got, want) {
		t.Errorf("without WithGit: %v, want %v", got, want)
	}
}
