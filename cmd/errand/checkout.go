package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/errandci/errand/internal/workspace"
)

// checkoutTimeout bounds the git commands of errand run --checkout.
const checkoutTimeout = 10 * time.Minute

// headCheckout is the committed HEAD of the work tree holding a project,
// written out for errand run --checkout.
type headCheckout struct {
	// Commit is HEAD's commit id; Top the work tree's top directory.
	Commit, Top string
	// Dir holds the files of the commit; Project is the project's
	// directory in it.
	Dir, Project string
}

// checkoutHead writes the files of the HEAD commit of the Git work tree
// holding project into dir (git archive, then the commits its
// checked-out submodules record, the same way): uncommitted changes and
// untracked files are not there, and neither is .git.
func checkoutHead(ctx context.Context, project, dir string) (*headCheckout, error) {
	ctx, cancel := context.WithTimeout(ctx, checkoutTimeout)
	defer cancel()
	top, err := gitOutput(ctx, project, "rev-parse", "--show-toplevel")
	if err != nil {
		return nil, usageErrorf("--checkout: %s is not in a Git work tree: %v", project, err)
	}
	prefix, err := gitOutput(ctx, project, "rev-parse", "--show-prefix")
	if err != nil {
		return nil, fmt.Errorf("--checkout: %w", err)
	}
	commit, err := gitOutput(ctx, top, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
	if err != nil {
		return nil, usageErrorf("--checkout: %s has no commit yet", top)
	}
	if err := archiveInto(ctx, top, commit, dir); err != nil {
		return nil, err
	}
	return &headCheckout{Commit: commit, Top: top, Dir: dir, Project: filepath.Join(dir, filepath.FromSlash(prefix))}, nil
}

// archiveInto writes the files of commit of the repository at repo into
// dir, then those of each submodule that is checked out in repo's work
// tree, at the commit that commit records for it.
func archiveInto(ctx context.Context, repo, commit, dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("--checkout: %w", err)
	}
	// The commit's tree: an archive of the commit itself begins with a
	// pax header naming it, which is not a file of the workspace.
	cmd := gitCommand(ctx, repo, "archive", "--format=tar", commit+"^{tree}")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("--checkout: git archive: %w", err)
	}
	uerr := workspace.Untar(ctx, dir, out, workspace.Options{})
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("--checkout: git archive %s in %s: %v: %s", commit, repo, err, strings.TrimSpace(stderr.String()))
	}
	if uerr != nil {
		return fmt.Errorf("--checkout: %w", uerr)
	}
	tree, err := gitOutput(ctx, repo, "ls-tree", "-r", "-z", commit)
	if err != nil {
		return fmt.Errorf("--checkout: %w", err)
	}
	for _, entry := range strings.Split(tree, "\x00") {
		// <mode> SP <type> SP <object> TAB <path>; a submodule is a commit.
		meta, path, ok := strings.Cut(entry, "\t")
		f := strings.Fields(meta)
		if !ok || len(f) != 3 || f[1] != "commit" {
			continue
		}
		sub := filepath.Join(repo, filepath.FromSlash(path))
		if _, err := os.Stat(filepath.Join(sub, ".git")); err != nil {
			continue // not checked out here: it stays an empty directory
		}
		if err := archiveInto(ctx, sub, f[2], filepath.Join(dir, filepath.FromSlash(path))); err != nil {
			return err
		}
	}
	return nil
}

// gitCommand is git run in dir, with none of this process's GIT_
// variables (GIT_DIR would name another repository).
func gitCommand(ctx context.Context, dir string, args ...string) *osexec.Cmd {
	cmd := osexec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// gitOutput runs git in dir and returns its output, trimmed.
func gitOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := gitCommand(ctx, dir, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		var ee *osexec.ExitError
		if errors.As(err, &ee) && stderr.Len() > 0 {
			return "", fmt.Errorf("git %s: %s", args[0], strings.TrimSpace(stderr.String()))
		}
		return "", fmt.Errorf("git %s: %w", args[0], err)
	}
	return strings.Trim(string(out), "\n\x00"), nil
}
