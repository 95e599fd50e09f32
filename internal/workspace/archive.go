package workspace

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// ErrThroughLink is returned, wrapped, for a path of a workspace that
// leads through a symbolic link: links are kept as links, never followed.
var ErrThroughLink = errors.New("leads through a symbolic link")

// ErrOutside is returned, wrapped, for a path that is not relative to a
// workspace or leaves it (an absolute path, a .. element).
var ErrOutside = errors.New("not inside the workspace")

// ErrBadEntry is returned, wrapped, for a tar entry that cannot be put
// into a workspace: a name that leaves it (absolute, with ..), or a type
// other than directory, regular file and symbolic link.
var ErrBadEntry = errors.New("bad archive entry")

// CleanPath checks a path relative to a workspace (slash-separated, no
// leading slash, no .. element) and returns it cleaned: "." for the
// workspace itself.
func CleanPath(p string) (string, error) {
	if p == "" {
		return ".", nil
	}
	if path.IsAbs(p) || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("%q: %w: it is absolute", p, ErrOutside)
	}
	c := path.Clean(p)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("%q: %w: it leads out through ..", p, ErrOutside)
	}
	return c, nil
}

// TarPaths writes the entries of the workspace at dir that lie at or
// under each of paths (relative slash paths, "." for all of it) as a tar
// stream to w: names relative to dir, directories with a trailing slash,
// symbolic links as links, permission bits and modification times kept.
// Every file is read through an os.Root of dir, so nothing outside it is
// ever read. A path that does not exist is left out; a path whose parent
// is a symbolic link is refused with ErrThroughLink. The limits of opts
// apply (entries and bytes).
func TarPaths(ctx context.Context, dir string, paths []string, w io.Writer, opts Options) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("workspace %s: %w", dir, err)
	}
	defer root.Close()
	tops, err := TopPaths(paths)
	if err != nil {
		return err
	}
	a := &archiver{ctx: ctx, root: root, tw: tar.NewWriter(w), files: opts.maxFiles(), max: opts.maxFiles(), left: opts.maxBytes(), limit: opts.maxBytes()}
	for _, p := range tops {
		if err := a.path(p); err != nil {
			return err
		}
	}
	if err := a.tw.Close(); err != nil {
		return fmt.Errorf("workspace tar: %w", err)
	}
	return nil
}

// TopPaths cleans paths (see CleanPath) and drops those at or under
// another one, sorted.
func TopPaths(paths []string) ([]string, error) {
	var clean []string
	for _, p := range paths {
		c, err := CleanPath(p)
		if err != nil {
			return nil, err
		}
		clean = append(clean, c)
	}
	sort.Strings(clean)
	var out []string
	for _, c := range clean {
		if len(out) > 0 {
			last := out[len(out)-1]
			if last == "." || c == last || strings.HasPrefix(c, last+"/") {
				continue
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// archiver writes the entries of one root within limits.
type archiver struct {
	ctx         context.Context
	root        *os.Root
	tw          *tar.Writer
	files, max  int
	left, limit int64
}

// path writes p and, if it is a directory, everything under it.
func (a *archiver) path(p string) error {
	if p != "." {
		// Every parent must be a real directory: os.Root would follow
		// a link that stays inside, which is still a link followed.
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			fi, err := a.root.Lstat(filepath.FromSlash(d))
			if errors.Is(err, fs.ErrNotExist) || isNotDir(err) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("workspace %s: %w", p, err)
			}
			if fi.Mode()&fs.ModeSymlink != 0 {
				return fmt.Errorf("%s: %s is a symbolic link: %w", p, d, ErrThroughLink)
			}
			if !fi.IsDir() {
				return nil
			}
		}
	}
	if p != "." {
		fi, err := a.root.Lstat(filepath.FromSlash(p))
		if errors.Is(err, fs.ErrNotExist) || isNotDir(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("workspace %s: %w", p, err)
		}
		if !fi.IsDir() {
			return a.entry(p) // a file, or a link kept as a link
		}
	}
	return fs.WalkDir(a.root.FS(), p, func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || isNotDir(err) {
				return nil // missing, or removed since it was listed
			}
			return fmt.Errorf("workspace %s: %w", name, err)
		}
		if err := a.ctx.Err(); err != nil {
			return err
		}
		if name == "." {
			return nil
		}
		return a.entry(name)
	})
}

// entry writes one entry, never following a link.
func (a *archiver) entry(name string) error {
	rel := filepath.FromSlash(name)
	fi, err := a.root.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("workspace %s: %w", name, err)
	}
	var link string
	var in *os.File
	switch m := fi.Mode(); {
	case m&fs.ModeSymlink != 0:
		if link, err = a.root.Readlink(rel); err != nil {
			return fmt.Errorf("tar %s: %w", name, err)
		}
	case m.IsRegular():
		if in, err = a.root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0); err != nil {
			return fmt.Errorf("tar %s: %w", name, err)
		}
		defer in.Close()
		if fi, err = in.Stat(); err != nil || !fi.Mode().IsRegular() {
			return nil // replaced since it was listed
		}
	case !m.IsDir():
		return nil // sockets, devices, pipes
	}
	if a.files--; a.files < 0 {
		return fmt.Errorf("more than %d entries: %w", a.max, ErrLimit)
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("tar %s: %w", name, err)
	}
	hdr.Name = name
	if fi.IsDir() {
		hdr.Name += "/"
	}
	hdr.Mode &= 0o777
	hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
	if in != nil && hdr.Size > a.left {
		return fmt.Errorf("%s: more than %d bytes: %w", name, a.limit, ErrLimit)
	}
	if err := a.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("tar %s: %w", name, err)
	}
	if in == nil {
		return nil
	}
	// The header's size is what is written, even if the file grew.
	n, err := io.Copy(a.tw, &budgetReader{ctx: a.ctx, r: in, left: hdr.Size})
	if err == nil && n < hdr.Size {
		err = fmt.Errorf("%s shrank while it was read", name)
	}
	if err != nil {
		return fmt.Errorf("tar %s: %w", name, err)
	}
	a.left -= n
	return nil
}

// EntryName checks the name of a tar entry meant for a workspace and
// returns it cleaned (no trailing slash); "." is the workspace itself.
func EntryName(name string) (string, error) {
	n := strings.TrimSuffix(strings.TrimPrefix(name, "./"), "/")
	if n == "" || n == "." {
		return ".", nil
	}
	c, err := CleanPath(n)
	if err != nil || c != n {
		return "", fmt.Errorf("entry %q: %w: its name leaves the workspace or is not clean", name, ErrBadEntry)
	}
	return c, nil
}

// CheckEntry checks a tar header meant for a workspace: its name (see
// EntryName) and its type (directory, regular file or symbolic link).
func CheckEntry(hdr *tar.Header) (string, error) {
	n, err := EntryName(hdr.Name)
	if err != nil {
		return "", err
	}
	switch hdr.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink:
	default:
		return "", fmt.Errorf("entry %q: %w: type %q is not a directory, a regular file or a symbolic link", hdr.Name, ErrBadEntry, hdr.Typeflag)
	}
	return n, nil
}

// Untar extracts a tar stream into the workspace at dir: directories,
// regular files (replacing what is at their name) and symbolic links (as
// links, never followed while extracting: a link in the stream cannot
// lead a later entry out of dir). Every write goes through an os.Root of
// dir. Entries whose name leaves dir, and other types of entry, are
// refused with ErrBadEntry; the limits of opts apply.
func Untar(ctx context.Context, dir string, r io.Reader, opts Options) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("workspace %s: %w", dir, err)
	}
	defer root.Close()
	tr := tar.NewReader(r)
	files, left := opts.maxFiles(), opts.maxBytes()
	type dirTimes struct {
		name  string
		mode  fs.FileMode
		mtime time.Time
	}
	var dirs []dirTimes
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		name, err := CheckEntry(hdr)
		if err != nil {
			return err
		}
		if files--; files < 0 {
			return fmt.Errorf("more than %d entries: %w", opts.maxFiles(), ErrLimit)
		}
		if name == "." {
			continue
		}
		rel := filepath.FromSlash(name)
		if d := filepath.Dir(rel); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("extract %s: %w", name, err)
			}
		}
		mode := fs.FileMode(hdr.Mode) & 0o777
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.Mkdir(rel, mode|0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("extract %s: %w", name, err)
			}
			dirs = append(dirs, dirTimes{rel, mode, hdr.ModTime})
		case tar.TypeSymlink:
			if err := removeNonDir(root, rel); err != nil {
				return fmt.Errorf("extract %s: %w", name, err)
			}
			if err := root.Symlink(hdr.Linkname, rel); err != nil {
				return fmt.Errorf("extract %s: %w", name, err)
			}
		case tar.TypeReg:
			if hdr.Size > left {
				return fmt.Errorf("%s: more than %d bytes: %w", name, opts.maxBytes(), ErrLimit)
			}
			if err := removeNonDir(root, rel); err != nil {
				return fmt.Errorf("extract %s: %w", name, err)
			}
			out, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode|0o200)
			if err != nil {
				return fmt.Errorf("extract %s: %w", name, err)
			}
			n, err := io.Copy(out, &budgetReader{ctx: ctx, r: tr, left: hdr.Size})
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err == nil && n < hdr.Size {
				err = io.ErrUnexpectedEOF
			}
			if err != nil {
				return fmt.Errorf("extract %s: %w", name, err)
			}
			left -= n
			_ = root.Chmod(rel, mode)
			_ = root.Chtimes(rel, hdr.ModTime, hdr.ModTime)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		_ = root.Chmod(d.name, d.mode|0o700)
		_ = root.Chtimes(d.name, d.mtime, d.mtime)
	}
	return nil
}

// removeNonDir removes what is at rel unless it is a directory (or
// nothing): a file or link is replaced by the entry extracted there.
func removeNonDir(root *os.Root, rel string) error {
	fi, err := root.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("a directory is in the way")
	}
	return root.Remove(rel)
}

func isNotDir(err error) bool { return errors.Is(err, syscall.ENOTDIR) }
