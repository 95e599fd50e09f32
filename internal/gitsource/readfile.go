package gitsource

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/errandci/errand"
)

// ErrFileNotFound is wrapped by the error of ReadFile when the commit
// has no file at the path.
var ErrFileNotFound = errors.New("no such file in the commit")

// ReadFile returns the file at path in commit of src's repository, and
// the commit: the one given, or the one src's ref names now when commit
// is empty (as Resolve). Only that commit is fetched, at depth 1, into
// a bare repository that is removed before ReadFile returns. A file
// larger than max bytes, a directory or a link is refused; so is a path
// that is not clean and relative.
func ReadFile(ctx context.Context, opts Options, src *errand.GitSource, commit, path string, max int64, cred *Credential) ([]byte, string, error) {
	if err := checkFilePath(path); err != nil {
		return nil, "", err
	}
	if commit == "" {
		c, err := Resolve(ctx, opts, src, cred)
		if err != nil {
			return nil, "", err
		}
		commit = c
	}
	if ps := Check(src, commit, opts.AllowFile); len(ps) > 0 {
		return nil, "", errand.Errorf(errand.CodeInvalid, "%v", ps)
	}
	dir, err := os.MkdirTemp("", "errand-config-")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(dir)
	r := newRunner(opts, cred, nil)
	if _, err := r.run(ctx, dir, "init", "-q", "--bare"); err != nil {
		return nil, "", err
	}
	if _, err := r.retry(ctx, dir, "fetch", "-q", "--no-tags", "--no-recurse-submodules", "--depth=1", "--", src.URL, commit); err != nil {
		return nil, "", err
	}
	// One listing gives the entry's mode, type, id and size.
	entry, err := r.run(ctx, dir, "ls-tree", "-l", commit, "--", path)
	if err != nil {
		return nil, "", err
	}
	meta, _, _ := strings.Cut(strings.TrimSpace(string(entry)), "\t")
	f := strings.Fields(meta)
	switch {
	case len(f) != 4:
		return nil, "", fmt.Errorf("%s at %s: %w", path, commit, ErrFileNotFound)
	case f[1] != "blob":
		return nil, "", fmt.Errorf("%s at %s is a %s, not a file", path, commit, f[1])
	case f[0] == "120000":
		return nil, "", fmt.Errorf("%s at %s is a symbolic link, not a file", path, commit)
	}
	object := f[2]
	n, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil {
		return nil, "", fmt.Errorf("%s at %s: size %q: %w", path, commit, f[3], err)
	}
	if n > max {
		return nil, "", fmt.Errorf("%s at %s is %d bytes, larger than the %d allowed", path, commit, n, max)
	}
	r.maxOut = int(max)
	data, err := r.run(ctx, dir, "cat-file", "blob", object)
	if err != nil {
		return nil, "", err
	}
	return data, commit, nil
}

// checkFilePath refuses a path that could name something outside the
// tree or be read by git as an option or a revision.
func checkFilePath(p string) error {
	switch {
	case p == "" || strings.HasPrefix(p, "/") || strings.HasPrefix(p, "-"):
		return errand.Errorf(errand.CodeInvalid, "%q is not a relative path inside the source", p)
	case strings.ContainsAny(p, "\x00\n\r\\:"):
		return errand.Errorf(errand.CodeInvalid, "%q holds a character a path in a source may not hold", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == "" || part == "." || part == ".." {
			return errand.Errorf(errand.CodeInvalid, "%q is not a clean relative path inside the source", p)
		}
	}
	return nil
}
