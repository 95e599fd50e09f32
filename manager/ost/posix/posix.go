// Package posix stores Errand's objects as files under one directory of
// the local file system: the default object storage of a manager, kept in
// its data dir.
package posix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/errandci/errand/manager/ost"
)

// tempPrefix marks files being written; List never shows them and a key
// may not use it as its last element.
const tempPrefix = ".tmp-"

// Storage is an ost.Storage over a directory. Every key is checked with
// ost.CleanKey, and every path is resolved through os.Root so that a
// symbolic link planted under the directory cannot lead outside it.
type Storage struct {
	dir  string
	root *os.Root
}

var _ ost.Storage = (*Storage)(nil)

// New returns a Storage keeping its objects under dir, creating dir if
// needed.
func New(dir string) (*Storage, error) {
	if dir == "" {
		return nil, errors.New("posix object storage: empty directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("posix object storage %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("posix object storage: create %s: %w", abs, err)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("posix object storage: open %s: %w", abs, err)
	}
	return &Storage{dir: abs, root: root}, nil
}

// Dir returns the directory the objects live in.
func (s *Storage) Dir() string { return s.dir }

// Close releases the directory handle.
func (s *Storage) Close() error { return s.root.Close() }

func checkKey(key string) (string, error) {
	k, err := ost.CleanKey(key)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(k[strings.LastIndex(k, "/")+1:], tempPrefix) {
		return "", fmt.Errorf("%w: %q uses the reserved prefix %s", ost.ErrInvalidKey, key, tempPrefix)
	}
	return k, nil
}

// Put writes the object to a temporary file beside its final place,
// syncs it and renames it over any previous object, so that a reader sees
// either the old or the new object, never a part.
func (s *Storage) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	k, err := checkKey(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", k, err)
	}
	dir := filepath.Dir(filepath.FromSlash(k))
	if dir != "." {
		if err := s.root.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("put %s: %w", k, err)
		}
	}
	tmp, f, err := s.createTemp(dir)
	if err != nil {
		return fmt.Errorf("put %s: %w", k, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = s.root.Remove(tmp)
		}
	}()
	n, err := io.Copy(f, ctxReader{ctx: ctx, r: r})
	if err != nil {
		return fmt.Errorf("put %s: write: %w", k, err)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("put %s: read %d bytes, expected %d", k, n, size)
	}
	if err := ctx.Err(); err != nil {
		// The stream may have ended because its request was cut off.
		return fmt.Errorf("put %s: %w", k, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("put %s: sync: %w", k, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("put %s: close: %w", k, err)
	}
	if err := s.root.Rename(tmp, filepath.FromSlash(k)); err != nil {
		return fmt.Errorf("put %s: rename: %w", k, err)
	}
	ok = true
	if d, err := s.root.Open(dir); err == nil {
		// Persist the rename too; some file systems refuse to sync a
		// directory, which is no reason to fail the write.
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

func (s *Storage) createTemp(dir string) (string, *os.File, error) {
	for range 100 {
		var b [8]byte
		if _, err := randRead(b[:]); err != nil {
			return "", nil, err
		}
		name := filepath.Join(dir, fmt.Sprintf("%s%x", tempPrefix, b))
		f, err := s.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		return name, f, nil
	}
	return "", nil, errors.New("cannot create a temporary file")
}

// Get opens the object for reading.
func (s *Storage) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	k, err := checkKey(key)
	if err != nil {
		return nil, err
	}
	f, err := s.root.Open(filepath.FromSlash(k))
	if err != nil {
		return nil, notFound(k, err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("get %s: %w", k, err)
	}
	if !st.Mode().IsRegular() {
		_ = f.Close()
		return nil, fmt.Errorf("get %s: %w", k, ost.ErrNotFound)
	}
	return f, nil
}

// GetRange opens n bytes of the object from off.
func (s *Storage) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	rc, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	f := rc.(*os.File)
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	if off < 0 || off > st.Size() {
		_ = f.Close()
		return nil, fmt.Errorf("get %s: %w: offset %d of %d bytes", key, ost.ErrInvalidRange, off, st.Size())
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	if n < 0 {
		return f, nil
	}
	return limitedFile{Reader: io.LimitReader(f, n), Closer: f}, nil
}

type limitedFile struct {
	io.Reader
	io.Closer
}

// Stat describes the object.
func (s *Storage) Stat(ctx context.Context, key string) (ost.ObjectInfo, error) {
	k, err := checkKey(key)
	if err != nil {
		return ost.ObjectInfo{}, err
	}
	st, err := s.root.Stat(filepath.FromSlash(k))
	if err != nil {
		return ost.ObjectInfo{}, notFound(k, err)
	}
	if !st.Mode().IsRegular() {
		return ost.ObjectInfo{}, fmt.Errorf("stat %s: %w", k, ost.ErrNotFound)
	}
	return ost.ObjectInfo{Key: k, Size: st.Size(), LastModified: st.ModTime()}, nil
}

// Delete removes the object; a missing object is not an error. Empty
// parent directories are left in place: they cost nothing and removing
// them would race with a concurrent Put.
func (s *Storage) Delete(ctx context.Context, key string) error {
	k, err := checkKey(key)
	if err != nil {
		return err
	}
	st, err := s.root.Lstat(filepath.FromSlash(k))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, ost.ErrNotFound) || isNotDir(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete %s: %w", k, err)
	}
	if st.IsDir() {
		return nil
	}
	if err := s.root.Remove(filepath.FromSlash(k)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", k, err)
	}
	return nil
}

// List returns the objects whose keys start with prefix, in key order.
// Symbolic links are not followed.
func (s *Storage) List(ctx context.Context, prefix string) ([]ost.ObjectInfo, error) {
	if strings.Contains(prefix, "\\") || strings.HasPrefix(prefix, "/") || strings.ContainsRune(prefix, 0) {
		return nil, fmt.Errorf("%w: prefix %q", ost.ErrInvalidKey, prefix)
	}
	// Walk only the deepest directory the prefix names in full.
	start := "."
	if i := strings.LastIndex(prefix, "/"); i > 0 {
		start = prefix[:i]
		if _, err := ost.CleanKey(start); err != nil {
			return nil, fmt.Errorf("%w: prefix %q", ost.ErrInvalidKey, prefix)
		}
	}
	var out []ost.ObjectInfo
	err := fs.WalkDir(s.root.FS(), start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == start {
				return fs.SkipAll
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			if p != "." && !strings.HasPrefix(p+"/", prefix) && !strings.HasPrefix(prefix, p+"/") {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), tempPrefix) || !strings.HasPrefix(p, prefix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		out = append(out, ost.ObjectInfo{Key: p, Size: info.Size(), LastModified: info.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	// WalkDir visits in lexical order per directory, which is not the
	// byte order of whole keys ("a/b" vs "a-b"): sort to keep the promise.
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func notFound(key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || isNotDir(err) {
		return fmt.Errorf("%s: %w", key, ost.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", key, err)
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
