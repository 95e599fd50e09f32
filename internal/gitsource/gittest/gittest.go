// Package gittest makes Git repositories and serves them on loopback
// for tests of Git sources: with git daemon (git://) and with git
// http-backend behind a Go HTTP server that asks for basic auth
// (http://), both from the git installed on the machine.
package gittest

import (
	"bytes"
	"crypto/subtle"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Repo is a repository a test made, bare, beside its submodule's, in a
// directory that the servers serve: repo.git has two commits on main,
// the second of which adds the submodule sub (sub.git, by the relative
// URL ../sub.git); the first carries the annotated tag v1 and the
// branch first.
type Repo struct {
	// Dir holds repo.git and sub.git.
	Dir string
	// First and Second are the commits of repo.git: Second is main.
	First, Second string
	// Sub is the commit of sub.git that Second records.
	Sub string
}

// Git returns the path of git, failing the test when there is none.
func Git(t testing.TB) string {
	t.Helper()
	git, err := osexec.LookPath("git")
	if err != nil {
		t.Fatal("git is not installed: the Git source tests need it (apt-get install git)")
	}
	return git
}

// Run runs git with args in dir and returns its trimmed output; a
// failure fails the test.
func Run(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := osexec.Command(Git(t), args...)
	cmd.Dir = dir
	cmd.Env = env()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s in %s: %v: %s", strings.Join(args, " "), dir, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// env is the environment of the test's own git commands: no user or
// system configuration, a fixed author.
func env() []string {
	out := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") {
			out = append(out, kv)
		}
	}
	return append(out, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=Errand Test", "GIT_AUTHOR_EMAIL=test@errand.invalid",
		"GIT_COMMITTER_NAME=Errand Test", "GIT_COMMITTER_EMAIL=test@errand.invalid")
}

// NewRepo makes the repositories of a Repo under a new temporary
// directory.
func NewRepo(t testing.TB) *Repo {
	t.Helper()
	base := t.TempDir()
	work := filepath.Join(base, "work")
	sub := filepath.Join(base, "subwork")
	r := &Repo{Dir: filepath.Join(base, "served")}
	for _, d := range []string{work, sub, r.Dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(dir, name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	Run(t, sub, "init", "-q", "-b", "main")
	write(sub, "sub.txt", "from the submodule\n")
	Run(t, sub, "add", "-A")
	Run(t, sub, "commit", "-q", "-m", "sub")
	r.Sub = Run(t, sub, "rev-parse", "HEAD")
	Run(t, r.Dir, "clone", "-q", "--bare", sub, "sub.git")

	Run(t, work, "init", "-q", "-b", "main")
	write(work, "README", "first\n")
	write(work, "run.sh", "#!/bin/sh\necho run\n")
	if err := os.MkdirAll(filepath.Join(work, "ci"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(work, "ci/errand.yml", Config("first"))
	if err := os.Chmod(filepath.Join(work, "run.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	Run(t, work, "add", "-A")
	Run(t, work, "commit", "-q", "-m", "first")
	r.First = Run(t, work, "rev-parse", "HEAD")
	Run(t, work, "tag", "-a", "-m", "version 1", "v1")
	Run(t, work, "branch", "first")
	Run(t, work, "-c", "protocol.file.allow=always", "submodule", "add", "-q", filepath.Join(r.Dir, "sub.git"), "sub")
	Run(t, work, "config", "-f", ".gitmodules", "submodule.sub.url", "../sub.git")
	write(work, "README", "second\n")
	write(work, "ci/errand.yml", Config("second"))
	Run(t, work, "add", "-A")
	Run(t, work, "commit", "-q", "-m", "second")
	r.Second = Run(t, work, "rev-parse", "HEAD")
	Run(t, r.Dir, "clone", "-q", "--bare", work, "repo.git")
	for _, bare := range []string{"repo.git", "sub.git"} {
		// Servers that speak protocol v0 give commits that no ref
		// names only when asked to, as hosting services do.
		Run(t, filepath.Join(r.Dir, bare), "config", "uploadpack.allowReachableSHA1InWant", "true")
	}
	return r
}

// Config is the pipeline config at ci/errand.yml in repo.git: in the
// first commit, Config("first"); in the second, Config("second"). Its
// one stage is named after the commit and prints the README.
func Config(commit string) string {
	return "stages:\n  - name: " + commit + "\n    steps: [{name: s, commands: [cat README]}]\n"
}

// Daemon serves the repo's directory with git daemon in inetd mode, one
// process per connection, on a loopback port, and returns the URL of
// repo.git (git://127.0.0.1:PORT/repo.git). It stops with the test.
func (r *Repo) Daemon(t testing.TB) string {
	t.Helper()
	git := Git(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				f, err := conn.(*net.TCPConn).File()
				if err != nil {
					return
				}
				defer f.Close()
				cmd := osexec.Command(git, "daemon", "--inetd", "--export-all", "--base-path="+r.Dir, r.Dir)
				cmd.Env = env()
				cmd.Stdin, cmd.Stdout = f, f
				_ = cmd.Run()
			}()
		}
	}()
	return "git://" + ln.Addr().String() + "/repo.git"
}

// HTTPServer is git http-backend behind basic auth.
type HTTPServer struct {
	// URL is the URL of repo.git, without credentials.
	URL string
	// Requests counts the requests the server answered.
	Requests atomic.Int64
	// Unauthorized counts the requests refused for their credentials.
	Unauthorized atomic.Int64
	fail         atomic.Int64
}

// FailNext makes the next n requests fail with 503.
func (s *HTTPServer) FailNext(n int) { s.fail.Store(int64(n)) }

// HTTP serves the repo's directory with git http-backend, asking every
// request for user and password (none when user is empty), and returns
// the server. It stops with the test.
func (r *Repo) HTTP(t testing.TB, user, password string) *HTTPServer {
	t.Helper()
	execPath := Run(t, r.Dir, "--exec-path")
	backend := &cgi.Handler{
		Path: filepath.Join(execPath, "git-http-backend"),
		Root: "/",
		// The Git-Protocol header reaches it as HTTP_GIT_PROTOCOL.
		Env:        []string{"GIT_PROJECT_ROOT=" + r.Dir, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1"},
		InheritEnv: []string{"PATH"},
		Stderr:     io.Discard,
	}
	s := &HTTPServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		s.Requests.Add(1)
		if s.fail.Add(-1) >= 0 {
			http.Error(w, "try again later", http.StatusServiceUnavailable)
			return
		}
		if user != "" {
			u, p, ok := req.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(user)) != 1 || subtle.ConstantTimeCompare([]byte(p), []byte(password)) != 1 {
				s.Unauthorized.Add(1)
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		backend.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL + "/repo.git"
	return s
}

// LFSRepo is a bare repository with one commit whose file big.bin is
// kept by Git LFS, its object pushed beside it (a file URL serves both).
type LFSRepo struct {
	// Bare is the repository's directory.
	Bare string
	// Commit is its one commit.
	Commit string
	// Content is big.bin's content.
	Content []byte
}

// NewLFSRepo makes an LFSRepo; the test fails when git-lfs is missing.
func NewLFSRepo(t testing.TB) *LFSRepo {
	t.Helper()
	if err := osexec.Command(Git(t), "lfs", "version").Run(); err != nil {
		t.Fatal("git-lfs is not installed: the LFS source tests need it (apt-get install git-lfs)")
	}
	base := t.TempDir()
	work := filepath.Join(base, "work")
	r := &LFSRepo{Bare: filepath.Join(base, "lfs.git"), Content: bytes.Repeat([]byte("large file content\n"), 100)}
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	Run(t, work, "init", "-q", "-b", "main")
	Run(t, work, "lfs", "install", "--local")
	Run(t, work, "lfs", "track", "*.bin")
	if err := os.WriteFile(filepath.Join(work, "big.bin"), r.Content, 0o644); err != nil {
		t.Fatal(err)
	}
	Run(t, work, "add", "-A")
	Run(t, work, "commit", "-q", "-m", "lfs")
	r.Commit = Run(t, work, "rev-parse", "HEAD")
	Run(t, base, "init", "-q", "--bare", "-b", "main", r.Bare)
	Run(t, work, "push", "-q", "file://"+r.Bare, "main")
	return r
}
