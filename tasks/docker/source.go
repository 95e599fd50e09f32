package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/workspace"
)

// errCopyEnded is what the tar writer sees when the daemon stopped
// reading the copy.
var errCopyEnded = errors.New("the copy ended")

// copyTimeout bounds the copy of the project into a stage's workspace.
const copyTimeout = 10 * time.Minute

// checkSource makes cfg.Source absolute and checks that it is a directory.
func checkSource(cfg *Config) error {
	if cfg.Source == "" {
		if cfg.Bind {
			return errors.New("docker runtime: bind needs a source directory")
		}
		return nil
	}
	abs, err := filepath.Abs(cfg.Source)
	if err != nil {
		return fmt.Errorf("docker runtime: source %s: %w", cfg.Source, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return fmt.Errorf("docker runtime: source: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("docker runtime: source %s is not a directory", abs)
	}
	cfg.Source = abs
	return nil
}

// workspaceMount is how a step container gets the stage's workspace: the
// source directory itself with Bind, the stage's volume otherwise. The
// bound directory comes from the handlers' configuration, never from the
// task.
func (h *Handlers) workspaceMount(volume string) (mount.Mount, error) {
	if h.cfg.Bind {
		return mount.Mount{Type: mount.TypeBind, Source: h.cfg.Source, Target: Workspace}, nil
	}
	if volume == "" {
		return mount.Mount{}, errand.Errorf(errand.CodeInvalid, "initialize result names no workspace volume")
	}
	return mount.Mount{Type: mount.TypeVolume, Source: volume, Target: Workspace}, nil
}

// populate copies the directory src (what internal/workspace lists with
// opts: Git-aware, links kept as links) into the volume, through a
// container of img that has the volume mounted and is never started.
func (h *Handlers) populate(ctx context.Context, img, vol string, labels map[string]string, src string, opts workspace.Options, logs io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, copyTimeout)
	defer cancel()
	id, remove, err := h.mountedContainer(ctx, img, mount.Mount{Type: mount.TypeVolume, Source: vol, Target: Workspace},
		labels, "create the container that fills the workspace")
	if err != nil {
		return err
	}
	defer remove()

	pr, pw := io.Pipe()
	written := make(chan error, 1)
	go func() {
		err := workspace.Tar(ctx, src, pw, opts)
		pw.CloseWithError(err)
		written <- err
	}()
	err = h.docker.CopyToContainer(ctx, id, Workspace, pr, container.CopyToContainerOptions{})
	pr.CloseWithError(errCopyEnded) // unblocks the writer if the daemon stopped reading
	werr := <-written
	switch {
	case werr != nil && !errors.Is(werr, errCopyEnded):
		return errand.Errorf(errand.CodeTaskFailed, "copy %s into the workspace: %v", src, werr)
	case err != nil:
		return failure("copy the project into the workspace", err)
	case werr != nil:
		return errand.Errorf(errand.CodeTaskFailed, "copy %s into the workspace: the daemon stopped reading", src)
	}
	if src == h.cfg.Source {
		fmt.Fprintf(logs, "workspace: copied the project from %s\n", src)
	}
	return nil
}
