package gitsource_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/gitsource"
	"github.com/errandci/errand/internal/gitsource/gittest"
)

// fast retries quickly, so that the tests of retries take no time.
var fast = gitsource.Options{Timeout: time.Minute, RetryWait: 10 * time.Millisecond, MaxRetryWait: 50 * time.Millisecond}

func depth(n int) *int { return &n }

func TestResolve(t *testing.T) {
	repo := gittest.NewRepo(t)
	url := repo.Daemon(t)
	ctx := context.Background()
	for _, c := range []struct {
		ref, want string
	}{
		{"", repo.Second},
		{"HEAD", repo.Second},
		{"main", repo.Second},
		{"refs/heads/main", repo.Second},
		{"first", repo.First},
		{"v1", repo.First}, // the commit of the annotated tag, not the tag object
		{"refs/tags/v1", repo.First},
		{repo.First, repo.First},
	} {
		got, err := gitsource.Resolve(ctx, fast, &errand.GitSource{URL: url, Ref: c.ref}, nil)
		if err != nil || got != c.want {
			t.Errorf("ref %q: %s, %v; want %s", c.ref, got, err, c.want)
		}
	}
	_, err := gitsource.Resolve(ctx, fast, &errand.GitSource{URL: url, Ref: "nope"}, nil)
	if !errors.Is(err, gitsource.ErrRefNotFound) {
		t.Errorf("unknown ref: %v, want ErrRefNotFound", err)
	}
	_, err = gitsource.Resolve(ctx, fast, &errand.GitSource{URL: strings.Replace(url, "repo.git", "nothing.git", 1)}, nil)
	if err == nil || !strings.Contains(err.Error(), "git ls-remote") {
		t.Errorf("not a repository: %v", err)
	}
	_, err = gitsource.Resolve(ctx, fast, &errand.GitSource{URL: "file://" + filepath.Join(repo.Dir, "repo.git")}, nil)
	if !errors.Is(err, errand.ErrInvalid) {
		t.Errorf("file URL without AllowFile: %v", err)
	}
	opts := fast
	opts.AllowFile = true
	got, err := gitsource.Resolve(ctx, opts, &errand.GitSource{URL: "file://" + filepath.Join(repo.Dir, "repo.git"), Ref: "first"}, nil)
	if err != nil || got != repo.First {
		t.Errorf("file URL with AllowFile: %s, %v", got, err)
	}
}

// checkout checks commit out into a new directory and returns it with
// the log.
func checkout(t *testing.T, opts gitsource.Options, src *errand.GitSource, commit string, cred *gitsource.Credential) (string, string, error) {
	t.Helper()
	dir := t.TempDir()
	var log bytes.Buffer
	err := gitsource.Checkout(context.Background(), opts, dir, src, commit, cred, &log)
	return dir, log.String(), err
}

func TestCheckoutOverGitDaemon(t *testing.T) {
	repo := gittest.NewRepo(t)
	url := repo.Daemon(t)

	// The first commit, which is no branch's tip, at depth 1: one
	// commit of history, and no submodule yet.
	dir, log, err := checkout(t, fast, &errand.GitSource{URL: url, Ref: "first"}, repo.First, nil)
	if err != nil {
		t.Fatalf("checkout: %v\n%s", err, log)
	}
	if got := gittest.Run(t, dir, "rev-parse", "HEAD"); got != repo.First {
		t.Errorf("HEAD is %s, want %s", got, repo.First)
	}
	if got := gittest.Run(t, dir, "rev-list", "--count", "HEAD"); got != "1" {
		t.Errorf("%s commits of history at depth 1", got)
	}
	readFile(t, filepath.Join(dir, "README"), "first\n")
	if fi, err := os.Stat(filepath.Join(dir, "run.sh")); err != nil || fi.Mode()&0o100 == 0 {
		t.Errorf("run.sh lost its execute bit: %v %v", fi.Mode(), err)
	}
	if !strings.Contains(log, "+ git fetch --no-tags --no-recurse-submodules --depth=1 origin "+repo.First) {
		t.Errorf("the log does not show the fetch of the commit:\n%s", log)
	}

	// The second with its submodule and the whole history.
	dir, log, err = checkout(t, fast, &errand.GitSource{URL: url, Submodules: true, Depth: depth(0)}, repo.Second, nil)
	if err != nil {
		t.Fatalf("checkout: %v\n%s", err, log)
	}
	readFile(t, filepath.Join(dir, "README"), "second\n")
	readFile(t, filepath.Join(dir, "sub", "sub.txt"), "from the submodule\n")
	if got := gittest.Run(t, dir, "rev-list", "--count", "HEAD"); got != "2" {
		t.Errorf("%s commits of history at depth 0, want 2", got)
	}
	if got := gittest.Run(t, filepath.Join(dir, "sub"), "rev-parse", "HEAD"); got != repo.Sub {
		t.Errorf("the submodule is at %s, want %s", got, repo.Sub)
	}

	// Without submodules: the submodule's directory stays empty.
	dir, _, err = checkout(t, fast, &errand.GitSource{URL: url}, repo.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "sub")); len(entries) != 0 {
		t.Errorf("submodules: false checked out the submodule: %v", entries)
	}

	// A commit the repository does not have fails at once, with git's
	// own words.
	_, log, err = checkout(t, fast, &errand.GitSource{URL: url}, strings.Repeat("0", 40), nil)
	if err == nil || !strings.Contains(err.Error(), "git fetch") {
		t.Fatalf("unknown commit: %v", err)
	}
	if strings.Contains(log, "trying again") {
		t.Errorf("a commit that does not exist was fetched again:\n%s", log)
	}
}

func TestCheckoutOverHTTPWithCredentials(t *testing.T) {
	repo := gittest.NewRepo(t)
	const password = "pa55-w0rd-for-the-test"
	srv := repo.HTTP(t, "alice", password)
	src := &errand.GitSource{URL: srv.URL, Submodules: true, Credentials: "GIT_TOKEN"}

	// A wrapper around git records every command's arguments: none may
	// hold the credential.
	argv := filepath.Join(t.TempDir(), "argv")
	wrapper := filepath.Join(t.TempDir(), "git")
	script := "#!/bin/sh\nprintf '%s\\n' \"$*\" >>" + argv + "\nexec " + gittest.Git(t) + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := fast
	opts.Git = wrapper

	dir, log, err := checkout(t, opts, src, repo.Second, &gitsource.Credential{Username: "alice", Password: password})
	if err != nil {
		t.Fatalf("checkout: %v\n%s", err, log)
	}
	readFile(t, filepath.Join(dir, "sub", "sub.txt"), "from the submodule\n")
	args, _ := os.ReadFile(argv)
	if !strings.Contains(string(args), "fetch") {
		t.Fatalf("the wrapper saw no fetch: %s", args)
	}
	for what, text := range map[string]string{"the log": log, "the arguments": string(args), ".git/config": readAll(t, filepath.Join(dir, ".git", "config"))} {
		if strings.Contains(text, password) {
			t.Errorf("%s hold the password:\n%s", what, text)
		}
	}

	// A wrong credential fails for good: one attempt, git's message,
	// the credential masked.
	n := srv.Requests.Load()
	_, log, err = checkout(t, opts, src, repo.Second, &gitsource.Credential{Username: "alice", Password: "wrong-" + password})
	if err == nil || !strings.Contains(err.Error(), "Authentication failed") {
		t.Fatalf("wrong password: %v", err)
	}
	if strings.Contains(err.Error(), password) || strings.Contains(log, password) {
		t.Errorf("the wrong password is shown: %v\n%s", err, log)
	}
	if strings.Contains(log, "trying again") || srv.Requests.Load()-n > 4 {
		t.Errorf("a refused credential was tried again (%d requests):\n%s", srv.Requests.Load()-n, log)
	}

	// No credential: git asks nobody for one (no terminal prompt, an
	// askpass that answers nothing) and fails.
	_, _, err = checkout(t, opts, &errand.GitSource{URL: srv.URL}, repo.Second, nil)
	if err == nil || !strings.Contains(err.Error(), "Authentication failed") {
		t.Errorf("no credential: %v", err)
	}
}

func TestCheckoutRetries(t *testing.T) {
	repo := gittest.NewRepo(t)
	srv := repo.HTTP(t, "", "")

	// Two failures, then the server answers: the third attempt does it.
	srv.FailNext(2)
	dir, log, err := checkout(t, fast, &errand.GitSource{URL: srv.URL}, repo.First, nil)
	if err != nil {
		t.Fatalf("checkout after two failures: %v\n%s", err, log)
	}
	readFile(t, filepath.Join(dir, "README"), "first\n")
	if got := strings.Count(log, "trying again"); got != 2 {
		t.Errorf("%d retries logged, want 2:\n%s", got, log)
	}

	// A server that keeps failing: the attempts are bounded.
	srv.FailNext(1000)
	_, log, err = checkout(t, fast, &errand.GitSource{URL: srv.URL}, repo.First, nil)
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("a failing server: %v", err)
	}
	if got := strings.Count(log, "+ git fetch"); got != gitsource.DefaultAttempts {
		t.Errorf("%d fetches, want %d:\n%s", got, gitsource.DefaultAttempts, log)
	}
}

func TestCheckoutTimeout(t *testing.T) {
	repo := gittest.NewRepo(t)
	// A server that never answers: a listener nobody accepts on would
	// still complete the handshake, so the daemon's git is one that
	// sleeps.
	opts := fast
	opts.Timeout = 300 * time.Millisecond
	opts.Attempts = 2
	sleeper := filepath.Join(t.TempDir(), "git")
	if err := os.WriteFile(sleeper, []byte("#!/bin/sh\ncase \"$*\" in *fetch*) exec sleep 60;; esac\nexec "+gittest.Git(t)+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	opts.Git = sleeper
	start := time.Now()
	_, log, err := checkout(t, opts, &errand.GitSource{URL: repo.Daemon(t)}, repo.First, nil)
	if err == nil || !strings.Contains(err.Error(), "no answer within 300ms") {
		t.Fatalf("a fetch that hangs: %v\n%s", err, log)
	}
	if time.Since(start) > 30*time.Second {
		t.Errorf("the hanging fetch was not stopped: %s", time.Since(start))
	}
	if got := strings.Count(log, "+ git fetch"); got != 2 {
		t.Errorf("%d fetches, want 2", got)
	}
}

func TestCheckoutRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		src    *errand.GitSource
		commit string
	}{
		{&errand.GitSource{URL: "ext::sh%20-c%20touch%20" + filepath.Join(dir, "pwned")}, strings.Repeat("a", 40)},
		{&errand.GitSource{URL: "--upload-pack=touch"}, strings.Repeat("a", 40)},
		{&errand.GitSource{URL: "https://x/y"}, "--output=/etc/passwd"},
		{&errand.GitSource{URL: "https://x/y"}, ""},
		{&errand.GitSource{URL: "file://" + dir}, strings.Repeat("a", 40)},
	} {
		err := gitsource.Checkout(context.Background(), fast, dir, c.src, c.commit, nil, nil)
		if !errors.Is(err, errand.ErrInvalid) {
			t.Errorf("%+v %q: %v, want invalid", c.src, c.commit, err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("refused input left %v", entries)
	}
}

func readFile(t *testing.T, path, want string) {
	t.Helper()
	if got := readAll(t, path); got != want {
		t.Errorf("%s holds %q, want %q", path, got, want)
	}
}

func readAll(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCheckoutLFS(t *testing.T) {
	repo := gittest.NewLFSRepo(t)
	opts := fast
	opts.AllowFile = true
	src := &errand.GitSource{URL: "file://" + repo.Bare, LFS: true}
	dir, log, err := checkout(t, opts, src, repo.Commit, nil)
	if err != nil {
		t.Fatalf("checkout: %v\n%s", err, log)
	}
	readFile(t, filepath.Join(dir, "big.bin"), string(repo.Content))

	// Without lfs the file stays a pointer, whatever the host's Git
	// configuration says.
	dir, _, err = checkout(t, opts, &errand.GitSource{URL: src.URL}, repo.Commit, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, filepath.Join(dir, "big.bin")); !strings.HasPrefix(got, "version https://git-lfs.github.com/spec/v1") {
		t.Errorf("lfs: false fetched the object: %.60q", got)
	}

	// A host without git-lfs says so.
	nolfs := filepath.Join(t.TempDir(), "git")
	if err := os.WriteFile(nolfs, []byte("#!/bin/sh\ncase \"$1\" in lfs) echo \"git: 'lfs' is not a git command\" >&2; exit 1;; esac\nexec "+gittest.Git(t)+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	opts.Git = nolfs
	_, _, err = checkout(t, opts, src, repo.Commit, nil)
	if err == nil || !strings.Contains(err.Error(), "git-lfs cannot be run on this host") {
		t.Errorf("no git-lfs: %v", err)
	}
}
