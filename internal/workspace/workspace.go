// Package workspace copies a project directory into a stage's workspace,
// so that the steps of a local run see the project's files and cannot
// damage them. In a Git work tree the files are those Git would track
// (tracked and untracked, minus what .gitignore excludes); elsewhere every
// file but .git directories and the excluded paths.
package workspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	osexec "os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// DefaultMaxFiles bounds the number of entries a copy takes.
const DefaultMaxFiles = 200_000

// DefaultMaxBytes bounds the bytes a copy writes.
const DefaultMaxBytes int64 = 8 << 30

// gitTimeout bounds the git commands that list a work tree.
const gitTimeout = 2 * time.Minute

// ErrLimit is returned, wrapped, when a tree exceeds a copy's limits.
var ErrLimit = errors.New("workspace limit exceeded")

// Options tune a listing or a copy. The zero value uses the defaults.
type Options struct {
	// Exclude holds absolute paths left out with everything under them,
	// e.g. the run's data dir when it lies inside the project.
	Exclude []string
	// MaxFiles bounds the entries listed (DefaultMaxFiles when 0).
	MaxFiles int
	// MaxBytes bounds the bytes copied (DefaultMaxBytes when 0).
	MaxBytes int64
	// NoGit lists every file even in a Git work tree.
	NoGit bool
	// WithGit keeps .git directories and files, which are otherwise
	// left out: for a checkout that is copied whole.
	WithGit bool
}

func (o Options) maxFiles() int {
	if o.MaxFiles > 0 {
		return o.MaxFiles
	}
	return DefaultMaxFiles
}

func (o Options) maxBytes() int64 {
	if o.MaxBytes > 0 {
		return o.MaxBytes
	}
	return DefaultMaxBytes
}

// Files lists the entries of src that a copy takes, as slash-separated
// paths relative to src, sorted: regular files, symbolic links and
// directories (a directory entry stands for itself, not its contents).
// Special files (sockets, devices, pipes) are left out, and so is any
// path below a symbolic link.
func Files(ctx context.Context, src string) ([]string, error) {
	return FilesWith(ctx, src, Options{})
}

// FilesWith is Files with options.
func FilesWith(ctx context.Context, src string, opts Options) ([]string, error) {
	root, err := filepath.Abs(src)
	if err != nil {
		return nil, fmt.Errorf("workspace source %s: %w", src, err)
	}
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("workspace source: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("workspace source %s: not a directory", src)
	}
	l := &lister{ctx: ctx, root: root, opts: opts, seen: map[string]bool{}, dirs: map[string]bool{}}
	for _, e := range opts.Exclude {
		if abs, err := filepath.Abs(e); err == nil {
			l.exclude = append(l.exclude, abs)
		}
	}
	var names []string
	if !opts.NoGit {
		names, err = gitFiles(ctx, root)
		if err != nil {
			return nil, err
		}
	}
	if names == nil {
		err = l.walk(".")
	} else {
		for _, n := range names {
			if err = l.add(filepath.FromSlash(n), true); err != nil {
				break
			}
		}
	}
	if err != nil {
		return nil, err
	}
	sort.Strings(l.out)
	return l.out, nil
}

// lister collects the entries of one tree.
type lister struct {
	ctx     context.Context
	root    string
	opts    Options
	exclude []string
	out     []string
	seen    map[string]bool
	// dirs caches, per directory relative to root, whether it is a real
	// directory (not a symbolic link) all the way from root.
	dirs map[string]bool
}

// excluded reports whether rel is a .git directory or file (the
// project's, or a submodule's link to it), an excluded path, or below one.
func (l *lister) excluded(rel string) bool {
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		if part == ".git" && !l.opts.WithGit {
			return true
		}
	}
	abs := filepath.Join(l.root, rel)
	for _, e := range l.exclude {
		if abs == e || strings.HasPrefix(abs, e+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// realDir reports whether rel is a directory reached from root through
// directories only.
func (l *lister) realDir(rel string) bool {
	if rel == "." || rel == "" {
		return true
	}
	if v, ok := l.dirs[rel]; ok {
		return v
	}
	ok := l.realDir(filepath.Dir(rel))
	if ok {
		fi, err := os.Lstat(filepath.Join(l.root, rel))
		ok = err == nil && fi.IsDir()
	}
	l.dirs[rel] = ok
	return ok
}

// add records rel and its parent directories. A directory named by git
// (a submodule) is walked whole.
func (l *lister) add(rel string, fromGit bool) error {
	if err := l.ctx.Err(); err != nil {
		return err
	}
	rel = filepath.Clean(rel)
	if rel == "." || filepath.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return nil
	}
	if l.seen[rel] || l.excluded(rel) || !l.realDir(filepath.Dir(rel)) {
		return nil
	}
	fi, err := os.Lstat(filepath.Join(l.root, rel))
	if errors.Is(err, fs.ErrNotExist) {
		return nil // tracked but deleted from the work tree
	}
	if err != nil {
		return fmt.Errorf("workspace source: %w", err)
	}
	switch m := fi.Mode(); {
	case m.IsRegular(), m&fs.ModeSymlink != 0, m.IsDir():
	default:
		return nil
	}
	if parent := filepath.Dir(rel); parent != "." && !l.seen[parent] {
		if err := l.add(parent, false); err != nil {
			return err
		}
	}
	if len(l.out) >= l.opts.maxFiles() {
		return fmt.Errorf("%s has more than %d entries: %w", l.root, l.opts.maxFiles(), ErrLimit)
	}
	l.seen[rel] = true
	l.out = append(l.out, filepath.ToSlash(rel))
	if fi.IsDir() && fromGit {
		return l.walk(rel)
	}
	return nil
}

// walk adds everything under dir, never following symbolic links.
func (l *lister) walk(dir string) error {
	return filepath.WalkDir(filepath.Join(l.root, dir), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("workspace source: %w", err)
		}
		rel, err := filepath.Rel(l.root, path)
		if err != nil {
			return err
		}
		if rel == "." || rel == dir {
			return nil
		}
		if l.excluded(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		return l.add(rel, false)
	})
}

// gitFiles lists what Git would track in root, or returns nil when git is
// missing, root is not in a work tree, or the work tree ignores root.
func gitFiles(ctx context.Context, root string) ([]string, error) {
	git, err := osexec.LookPath("git")
	if err != nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, gitTimeout)
	defer cancel()
	inside, err := runGit(ctx, git, root, "rev-parse", "--is-inside-work-tree")
	if err != nil || strings.TrimSpace(string(inside)) != "true" {
		return nil, nil //nolint:nilerr // not a work tree: copy everything
	}
	out, err := runGit(ctx, git, root, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
	if err != nil {
		return nil, fmt.Errorf("list the files of %s with git: %w", root, err)
	}
	names := []string{}
	for _, n := range strings.Split(string(out), "\x00") {
		if n != "" {
			names = append(names, n)
		}
	}
	// A directory that its work tree ignores (a scratch project under
	// an ignored build/ dir) is the user's own: copy all of it.
	if len(names) == 0 {
		if _, err := runGit(ctx, git, root, "check-ignore", "-q", "."); err == nil {
			return nil, nil
		}
	}
	return names, nil
}

func runGit(ctx context.Context, git, dir string, args ...string) ([]byte, error) {
	cmd := osexec.CommandContext(ctx, git, append([]string{"-C", dir}, args...)...)
	// Variables such as GIT_DIR would make git list another repository.
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("git %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Copy copies the entries Files lists from src into dst, which is created
// if needed. Symbolic links are copied as links (never followed), file
// and directory permission bits and modification times are kept. dst
// itself is left out when it lies inside src.
func Copy(ctx context.Context, src, dst string) error {
	return CopyWith(ctx, src, dst, Options{})
}

// CopyWith is Copy with options.
func CopyWith(ctx context.Context, src, dst string, opts Options) error {
	root, err := filepath.Abs(src)
	if err != nil {
		return fmt.Errorf("workspace source %s: %w", src, err)
	}
	to, err := filepath.Abs(dst)
	if err != nil {
		return fmt.Errorf("workspace %s: %w", dst, err)
	}
	opts.Exclude = append(append([]string(nil), opts.Exclude...), to)
	names, err := FilesWith(ctx, root, opts)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(to, 0o750); err != nil {
		return fmt.Errorf("create workspace: %w", err)
	}
	// Every read and write goes through a root of its tree, so that a
	// directory swapped for a link after the listing cannot lead the
	// copy out of either.
	from, err := os.OpenRoot(root)
	if err != nil {
		return fmt.Errorf("workspace source: %w", err)
	}
	defer from.Close()
	into, err := os.OpenRoot(to)
	if err != nil {
		return fmt.Errorf("workspace %s: %w", dst, err)
	}
	defer into.Close()
	c := &copier{ctx: ctx, from: from, to: into, left: opts.maxBytes(), limit: opts.maxBytes()}
	type dirTimes struct {
		path  string
		mode  fs.FileMode
		mtime time.Time
	}
	var dirs []dirTimes
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		rel := filepath.FromSlash(n)
		fi, err := from.Lstat(rel)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since it was listed
		}
		if err != nil {
			return fmt.Errorf("workspace source: %w", err)
		}
		switch m := fi.Mode(); {
		case m.IsDir():
			// Writable by its owner until everything is in it.
			if err := into.Mkdir(rel, m.Perm()|0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("copy %s: %w", n, err)
			}
			dirs = append(dirs, dirTimes{rel, m.Perm(), fi.ModTime()})
		case m&fs.ModeSymlink != 0:
			link, err := from.Readlink(rel)
			if err != nil {
				return fmt.Errorf("copy %s: %w", n, err)
			}
			if err := into.Symlink(link, rel); err != nil {
				return fmt.Errorf("copy %s: %w", n, err)
			}
		case m.IsRegular():
			if err := c.file(rel, m.Perm(), fi.ModTime()); err != nil {
				return err
			}
		}
	}
	// Deepest first, so that a parent's time is not changed by its children.
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		_ = into.Chmod(d.path, d.mode)
		_ = into.Chtimes(d.path, d.mtime, d.mtime)
	}
	return nil
}

// copier copies regular files within a byte budget.
type copier struct {
	ctx         context.Context
	from, to    *os.Root
	left, limit int64
}

func (c *copier) file(rel string, perm fs.FileMode, mtime time.Time) error {
	in, err := c.from.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("copy %s: %w", filepath.ToSlash(rel), err)
	}
	defer in.Close()
	if fi, err := in.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil // replaced by something else since it was listed
	}
	out, err := c.to.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, perm|0o200)
	if err != nil {
		return fmt.Errorf("copy %s: %w", filepath.ToSlash(rel), err)
	}
	n, err := io.Copy(out, &budgetReader{ctx: c.ctx, r: in, left: c.left + 1})
	c.left -= n
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil && c.left < 0 {
		err = fmt.Errorf("more than %d bytes: %w", c.limit, ErrLimit)
	}
	if err != nil {
		return fmt.Errorf("copy %s: %w", filepath.ToSlash(rel), err)
	}
	// The mode given to OpenFile went through the umask.
	if err := c.to.Chmod(rel, perm); err != nil {
		return fmt.Errorf("copy %s: %w", filepath.ToSlash(rel), err)
	}
	_ = c.to.Chtimes(rel, mtime, mtime)
	return nil
}

// budgetReader reads at most left bytes and stops when ctx ends.
type budgetReader struct {
	ctx  context.Context
	r    io.Reader
	left int64
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}
