package docker

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	dockerclient "github.com/docker/docker/client"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/workspace"
	"github.com/errandci/errand/tasks/runtime"
)

// WorkspaceExport streams entries of the stage's workspace (its volume,
// or the bound source directory) through the Engine API's archive copy
// from a container of the stage image that has the workspace mounted and
// is never started. Each path's parents are checked, from the workspace
// down, to be directories and not links before the path is copied; the
// copy itself keeps the links it meets as links.
func (d driver) WorkspaceExport(ctx context.Context, ws *runtime.Workspace, paths []string) (io.ReadCloser, error) {
	tops, err := workspace.TopPaths(paths)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	h := d.h
	id, remove, err := h.workspaceContainer(ctx, ws)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer remove()
		tw := tar.NewWriter(pw)
		for _, p := range tops {
			if err := h.exportPath(ctx, id, p, tw); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(tw.Close())
	}()
	return pr, nil
}

// exportPath copies the entries at and under p out of the container into
// tw, named relative to the workspace.
func (h *Handlers) exportPath(ctx context.Context, id, p string, tw *tar.Writer) error {
	src := Workspace
	if p != "." {
		src = Workspace + "/" + p
		var ancestors []string
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			ancestors = append([]string{d}, ancestors...)
		}
		for _, a := range ancestors {
			actx, cancel := h.api(ctx)
			st, err := h.docker.ContainerStatPath(actx, id, Workspace+"/"+a)
			cancel()
			if dockerclient.IsErrNotFound(err) {
				return nil
			}
			if err != nil {
				return failure("read the workspace", err)
			}
			if st.Mode&os.ModeSymlink != 0 {
				return fmt.Errorf("%s: %s is a symbolic link: %w", p, a, workspace.ErrThroughLink)
			}
			if !st.Mode.IsDir() {
				return nil
			}
		}
	}
	rc, _, err := h.docker.CopyFromContainer(ctx, id, src)
	if dockerclient.IsErrNotFound(err) {
		return nil
	}
	if err != nil {
		return failure("copy out of the workspace", err)
	}
	defer rc.Close()
	base := path.Base(src)
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("copy out of the workspace: %w", err)
		}
		// The daemon names entries from the copied path's last element.
		name := strings.TrimSuffix(hdr.Name, "/")
		var rel string
		switch {
		case name == base:
			rel = p
		case strings.HasPrefix(name, base+"/"):
			rel = path.Join(p, name[len(base)+1:])
		default:
			return fmt.Errorf("copy out of the workspace: %w: unexpected entry %q", workspace.ErrBadEntry, hdr.Name)
		}
		if rel == "." {
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeDir, tar.TypeReg, tar.TypeSymlink:
		default:
			continue // devices, pipes, hard links
		}
		if err := copyEntry(tw, hdr, rel, tr); err != nil {
			return fmt.Errorf("copy out of the workspace: %s: %w", rel, err)
		}
	}
}

// copyEntry writes hdr's entry, of a directory, a regular file or a
// link, to tw under name with its data from r: only its type, link, mode
// bits and time are kept (no owner, no extended attributes).
func copyEntry(tw *tar.Writer, hdr *tar.Header, name string, r io.Reader) error {
	out := &tar.Header{Typeflag: hdr.Typeflag, Name: name, Linkname: hdr.Linkname, Size: hdr.Size,
		Mode: hdr.Mode & 0o777, ModTime: hdr.ModTime, Format: tar.FormatPAX}
	if hdr.Typeflag == tar.TypeDir {
		out.Name += "/"
	}
	if hdr.Typeflag != tar.TypeReg {
		out.Size = 0
	}
	if err := tw.WriteHeader(out); err != nil {
		return err
	}
	if out.Size > 0 {
		if _, err := io.Copy(tw, r); err != nil {
			return err
		}
	}
	return nil
}

// WorkspaceImport extracts a tar stream into the stage's workspace
// through the Engine API's archive copy into a container of the stage
// image that has the workspace mounted and is never started. The stream
// is checked on its way: names that leave the workspace, entries below a
// link the stream itself made, and types other than directories, regular
// files and links are refused before the daemon sees them.
func (d driver) WorkspaceImport(ctx context.Context, ws *runtime.Workspace, r io.Reader) error {
	h := d.h
	id, remove, err := h.workspaceContainer(ctx, ws)
	if err != nil {
		return err
	}
	defer remove()
	pr, pw := io.Pipe()
	checked := make(chan error, 1)
	go func() {
		err := checkArchive(r, pw)
		pw.CloseWithError(err)
		checked <- err
	}()
	err = h.docker.CopyToContainer(ctx, id, Workspace, pr, container.CopyToContainerOptions{})
	pr.CloseWithError(errCopyEnded)
	cerr := <-checked
	switch {
	case cerr != nil && !errors.Is(cerr, errCopyEnded):
		return fmt.Errorf("extract into the workspace: %w", cerr)
	case err != nil:
		return failure("extract into the workspace", err)
	case cerr != nil:
		return errand.Errorf(errand.CodeTaskFailed, "extract into the workspace: the daemon stopped reading")
	}
	return nil
}

// checkArchive copies a tar stream from r to w, refusing what
// workspace.Untar refuses, and entries under a link made earlier in the
// stream (the daemon would follow it).
func checkArchive(r io.Reader, w io.Writer) error {
	tr, tw := tar.NewReader(r), tar.NewWriter(w)
	links := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return tw.Close()
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		name, err := workspace.CheckEntry(hdr)
		if err != nil {
			return err
		}
		if name == "." {
			continue
		}
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			if links[d] {
				return fmt.Errorf("entry %q: %w: it lies under the link %s", hdr.Name, workspace.ErrBadEntry, d)
			}
		}
		if hdr.Typeflag == tar.TypeSymlink {
			links[name] = true
		} else {
			delete(links, name)
		}
		if err := copyEntry(tw, hdr, name, tr); err != nil {
			return err
		}
	}
}

// workspaceContainer creates a container of the stage image with the
// stage's workspace mounted, never started, for the archive copies, and
// returns it with the function that removes it. It carries the stage's
// labels, so that the stage's cleanup removes it should its removal fail.
func (h *Handlers) workspaceContainer(ctx context.Context, ws *runtime.Workspace) (string, func(), error) {
	if ws.Result == nil || ws.Result.Image == "" {
		return "", nil, errand.Errorf(errand.CodeInvalid, "initialize result names no image for the workspace")
	}
	m, err := h.workspaceMount(ws.Result.Volume)
	if err != nil {
		return "", nil, err
	}
	labels, err := h.labels(ctx, ws.Task, ws.Stage, ws.InitID)
	if err != nil {
		return "", nil, err
	}
	return h.mountedContainer(ctx, ws.Result.Image, m, labels, "create the container that reads the workspace")
}

// mountedContainer creates a container of img with m mounted, never
// started (the Engine API copies archives in and out of it), and returns
// it with the function that removes it.
func (h *Handlers) mountedContainer(ctx context.Context, img string, m mount.Mount, labels map[string]string, what string) (string, func(), error) {
	actx, cancel := h.api(ctx)
	created, err := h.docker.ContainerCreate(actx,
		&container.Config{Image: img, Labels: labels, Entrypoint: []string{"true"}},
		&container.HostConfig{Mounts: []mount.Mount{m}}, nil, nil, "")
	cancel()
	if err != nil {
		return "", nil, failure(what, err)
	}
	return created.ID, func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.APITimeout)
		defer cancel()
		_ = h.docker.ContainerRemove(rctx, created.ID, container.RemoveOptions{Force: true})
	}, nil
}
