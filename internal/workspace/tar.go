package workspace

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Tar writes the entries Files lists as a tar stream to w, for a runtime
// that copies the project into a container rather than onto the host:
// symbolic links as links, directories with a trailing slash, permission
// bits and modification times kept. The limits of opts apply as for Copy.
func Tar(ctx context.Context, src string, w io.Writer, opts Options) error {
	root, err := filepath.Abs(src)
	if err != nil {
		return fmt.Errorf("workspace source %s: %w", src, err)
	}
	names, err := FilesWith(ctx, root, opts)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	left := opts.maxBytes()
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		if left, err = tarEntry(ctx, tw, root, n, left); err != nil {
			return err
		}
		if left < 0 {
			return fmt.Errorf("more than %d bytes: %w", opts.maxBytes(), ErrLimit)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("workspace tar: %w", err)
	}
	return nil
}

// tarEntry writes one entry and returns the byte budget left.
func tarEntry(ctx context.Context, tw *tar.Writer, root, name string, left int64) (int64, error) {
	path := filepath.Join(root, filepath.FromSlash(name))
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return left, nil // removed since it was listed
	}
	if err != nil {
		return left, fmt.Errorf("workspace source: %w", err)
	}
	var link string
	var in *os.File
	switch m := fi.Mode(); {
	case m&fs.ModeSymlink != 0:
		if link, err = os.Readlink(path); err != nil {
			return left, fmt.Errorf("tar %s: %w", name, err)
		}
	case m.IsRegular():
		if in, err = os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0); err != nil {
			return left, fmt.Errorf("tar %s: %w", name, err)
		}
		defer in.Close()
		if fi, err = in.Stat(); err != nil || !fi.Mode().IsRegular() {
			return left, nil // replaced since it was listed
		}
	case !m.IsDir():
		return left, nil
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return left, fmt.Errorf("tar %s: %w", name, err)
	}
	hdr.Name = name
	if fi.IsDir() {
		hdr.Name += "/"
	}
	hdr.Mode &= 0o777
	hdr.Uname, hdr.Gname = "", ""
	if in != nil && hdr.Size > left {
		return -1, nil
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return left, fmt.Errorf("tar %s: %w", name, err)
	}
	if in == nil {
		return left, nil
	}
	// The header's size is what is written, even if the file grew.
	n, err := io.Copy(tw, &budgetReader{ctx: ctx, r: in, left: hdr.Size})
	if err == nil && n < hdr.Size {
		err = fmt.Errorf("%s shrank while it was read", name)
	}
	if err != nil {
		return left, fmt.Errorf("tar %s: %w", name, err)
	}
	return left - n, nil
}
