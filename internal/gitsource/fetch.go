package gitsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/errandci/errand"
)

// ErrRefNotFound is wrapped by the error of Resolve when the repository
// has no such ref.
var ErrRefNotFound = errors.New("ref not found")

// Resolve returns the commit that src's ref names in its repository
// (git ls-remote): a branch first, then a tag (the commit an annotated
// tag points to), or a full ref name (refs/...) as it is; the remote's
// HEAD when the ref is empty. A ref that is already a full commit id is
// returned as it is, without asking the remote.
func Resolve(ctx context.Context, opts Options, src *errand.GitSource, cred *Credential) (string, error) {
	if ps := Check(src, "", opts.AllowFile); len(ps) > 0 {
		return "", errand.Errorf(errand.CodeInvalid, "%v", ps)
	}
	if IsCommit(src.Ref) {
		return src.Ref, nil
	}
	var wanted []string
	switch ref := src.Ref; {
	case ref == "" || ref == "HEAD":
		wanted = []string{"HEAD"}
	case strings.HasPrefix(ref, "refs/"):
		wanted = []string{ref + "^{}", ref}
	default:
		wanted = []string{"refs/heads/" + ref, "refs/tags/" + ref + "^{}", "refs/tags/" + ref}
	}
	r := newRunner(opts, cred, nil)
	args := append([]string{"ls-remote", "--", src.URL}, wanted...)
	out, err := r.retry(ctx, "", args...)
	if err != nil {
		return "", err
	}
	found := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		sha, name, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if ok && IsCommit(sha) {
			found[name] = sha
		}
	}
	for _, name := range wanted {
		if sha, ok := found[name]; ok {
			return sha, nil
		}
	}
	ref := src.Ref
	if ref == "" {
		ref = "HEAD"
	}
	return "", fmt.Errorf("%s: %w in %s", ref, ErrRefNotFound, src.URL)
}

// Checkout makes dir, an existing empty directory, a checkout of commit
// from src's repository, the way a CI clone step does: git init, the
// repository as remote origin, a fetch of exactly that commit at the
// source's depth (retried when it fails in a way that may pass), a
// detached checkout, then the submodules and the LFS objects when the
// source asks for them. Each command and what git says go to log, with
// the credential masked; so is the error.
func Checkout(ctx context.Context, opts Options, dir string, src *errand.GitSource, commit string, cred *Credential, log io.Writer) error {
	if ps := Check(src, commit, opts.AllowFile); len(ps) > 0 {
		return errand.Errorf(errand.CodeInvalid, "%v", ps)
	}
	if commit == "" {
		return errand.Errorf(errand.CodeInvalid, "git.commit: required: the run names no commit to check out")
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("checkout directory %s: not a directory", dir)
	}
	r := newRunner(opts, cred, log)
	if src.LFS {
		if _, err := r.run(ctx, "", "lfs", "version"); err != nil {
			return fmt.Errorf("the source asks for LFS and git-lfs cannot be run on this host: %w", err)
		}
	}
	depth := []string{}
	if d := src.FetchDepth(); d > 0 {
		depth = []string{"--depth=" + strconv.Itoa(d)}
	}
	steps := [][]string{
		{"init", "-q"},
		{"remote", "add", "origin", src.URL},
		append(append([]string{"fetch", "--no-tags", "--no-recurse-submodules"}, depth...), "origin", commit),
		{"checkout", "-q", "--detach", commit},
	}
	if src.Submodules {
		steps = append(steps, append([]string{"submodule", "update", "--init", "--recursive"}, depth...))
	}
	if src.LFS {
		steps = append(steps, []string{"lfs", "install", "--local", "--skip-smudge"}, []string{"lfs", "pull"})
	}
	for _, args := range steps {
		run := r.run
		switch args[0] {
		case "fetch", "submodule", "lfs":
			run = r.retry
		}
		if _, err := run(ctx, dir, args...); err != nil {
			return err
		}
	}
	r.logf("checked out %s from %s\n", commit, src.URL)
	return nil
}
