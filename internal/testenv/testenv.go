// Package testenv helps end-to-end tests drive the real errand binary: it
// builds the binary once per test process, starts a manager on a free
// loopback port with a temporary data dir, and hands out clients of it.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager"
)

// StartTimeout bounds how long a manager may take to become ready.
const StartTimeout = 60 * time.Second

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary returns the path of the errand binary built from ./cmd/errand of
// this module, building it on the first call of the test process. Each
// test process builds into a directory of its own, so that test processes
// of different checkouts or versions never run each other's binary;
// directories left by processes that have ended are removed.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() { buildPath, buildErr = build() })
	if buildErr != nil {
		t.Fatalf("build errand: %v", buildErr)
	}
	return buildPath
}

const binDirPrefix = "errand-testenv-"

func build() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	removeStaleBinaries()
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("%s%d", binDirPrefix, os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create build dir: %w", err)
	}
	bin := filepath.Join(dir, "errand")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/errand")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/errand: %w\n%s", err, out)
	}
	return bin, nil
}

// removeStaleBinaries removes the build directories of test processes
// that are gone.
func removeStaleBinaries() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), binDirPrefix))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			_ = os.RemoveAll(d)
		}
	}
}

// moduleRoot finds the directory of this module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the errand module")
	}
	return filepath.Dir(mod), nil
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Manager is a running `errand manager` process.
type Manager struct {
	// URL is the manager's base URL, http://127.0.0.1:PORT.
	URL string
	// Addr is host:port.
	Addr string
	// DataDir is the manager's data directory.
	DataDir string
	// AdminToken and RegistrationToken are the manager's tokens.
	AdminToken        string
	RegistrationToken string
	// Cmd is the running process.
	Cmd *exec.Cmd

	bin  string
	args []string
	out  *syncBuffer
	done chan struct{} // closed when Cmd has been waited for
}

// StartManager starts `errand manager` on a free loopback port with a
// temporary data dir and extraArgs, waits until /readyz answers and reads
// its tokens. The process is killed when the test ends; its output is
// logged if the test failed.
func StartManager(t testing.TB, bin string, extraArgs ...string) *Manager {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	m := &Manager{
		URL:     "http://" + addr,
		Addr:    addr,
		DataDir: t.TempDir(),
		bin:     bin,
		out:     &syncBuffer{},
	}
	m.args = append([]string{"manager", "--listen", addr, "--data-dir", m.DataDir}, extraArgs...)
	t.Cleanup(func() {
		m.Kill()
		if t.Failed() {
			t.Logf("manager output:\n%s", m.out.String())
		}
	})
	m.start(t)
	return m
}

// Restart starts the manager again on the same address and data dir,
// after Kill or Stop.
func (m *Manager) Restart(t testing.TB) {
	t.Helper()
	m.Kill()
	fmt.Fprintf(m.out, "--- restart ---\n")
	m.start(t)
}

func (m *Manager) start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(m.bin, m.args...)
	cmd.Stdout = m.out
	cmd.Stderr = m.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start manager: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	m.Cmd, m.done = cmd, done

	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	if err := m.waitReady(ctx); err != nil {
		m.Kill()
		t.Fatalf("manager did not become ready: %v\n%s", err, m.out.String())
	}
	m.readTokens(t)
}

// waitReady polls /readyz until it answers 200, the process exits or ctx
// ends.
func (m *Manager) waitReady(ctx context.Context) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.URL+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := hc.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-m.done:
			return fmt.Errorf("manager exited: %v", m.Cmd.ProcessState)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// readTokens takes the tokens from the command line if given there, else
// from the files the manager generated.
func (m *Manager) readTokens(t testing.TB) {
	t.Helper()
	m.AdminToken = flagValue(m.args, "--admin-token")
	m.RegistrationToken = flagValue(m.args, "--registration-token")
	admin, reg := manager.TokenPaths(m.DataDir)
	for _, f := range []struct {
		tok  *string
		path string
	}{{&m.AdminToken, admin}, {&m.RegistrationToken, reg}} {
		if *f.tok != "" {
			continue
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatalf("read token: %v", err)
		}
		*f.tok = strings.TrimSpace(string(b))
	}
}

func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// Kill kills the manager with SIGKILL and waits for it to exit. It does
// nothing if the manager is not running.
func (m *Manager) Kill() {
	if m.Cmd == nil || m.Cmd.Process == nil {
		return
	}
	select {
	case <-m.done:
		return
	default:
	}
	_ = m.Cmd.Process.Kill()
	<-m.done
}

// StopTimeout bounds how long Stop waits for the manager to exit.
const StopTimeout = 30 * time.Second

// Stop asks the manager to stop with SIGTERM and waits for it to exit;
// it kills it if it has not exited after StopTimeout. It returns the exit
// error, nil for a clean exit.
func (m *Manager) Stop() error {
	select {
	case <-m.done:
		return exitErr(m.Cmd)
	default:
	}
	if err := m.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal manager: %w", err)
	}
	select {
	case <-m.done:
		return exitErr(m.Cmd)
	case <-time.After(StopTimeout):
		m.Kill()
		return fmt.Errorf("manager still running %s after SIGTERM; killed", StopTimeout)
	}
}

func exitErr(cmd *exec.Cmd) error {
	if cmd.ProcessState.Success() {
		return nil
	}
	return fmt.Errorf("manager exited: %s", cmd.ProcessState)
}

// Output returns what the manager has written so far.
func (m *Manager) Output() string { return m.out.String() }

// Client returns a client of the manager at url with token. Its retries
// and failures are not logged.
func Client(t testing.TB, url, token string) *client.HTTP {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	return client.New(url, token, client.WithLogger(logrus.NewEntry(log)))
}

// syncBuffer is a bytes.Buffer safe for a process's output and a test
// reading it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
