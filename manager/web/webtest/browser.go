// Package webtest drives a real Chromium through chromedp for the web UI's
// browser tests. A test that needs the browser and cannot find it fails
// with how to get it; it never skips.
package webtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Env names the variables the browser tests read.
const (
	// EnvChromium is the browser binary (scripts/setup.d/chromium.sh sets it).
	EnvChromium = "ERRAND_TEST_CHROMIUM"
	// EnvArtifacts is where screenshots of failed tests go;
	// $TMPDIR/errand-artifacts when unset.
	EnvArtifacts = "ERRAND_TEST_ARTIFACTS"
)

// ChromiumPath returns the browser binary: $ERRAND_TEST_CHROMIUM, else the
// first of chromium, chromium-browser, google-chrome found on $PATH. It
// fails the test when there is none.
func ChromiumPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(EnvChromium); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s=%s is not an executable: %v (install Debian's chromium: apt-get install -y chromium)", EnvChromium, p, err)
		}
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome-stable", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("no Chromium found: the browser tests need one. Install Debian's chromium (apt-get install -y chromium, or source scripts/setup.d/chromium.sh) or set %s", EnvChromium)
	return ""
}

// Browser is one headless Chromium with one tab, closed when the test ends.
type Browser struct {
	t   testing.TB
	ctx context.Context
}

// New starts a headless Chromium for t (one browser per call, so tests
// do not share cookies) and closes it at the end of the test. When the
// test fails, a screenshot of the tab is written as an artifact first.
func New(t testing.TB) *Browser {
	t.Helper()
	path := ChromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	// The browser starts on the first Run; do it now so that one that
	// cannot start fails here, with its path.
	if err := chromedp.Do(ctx); err != nil {
		cancelCtx()
		cancelAlloc()
		t.Fatalf("start %s: %v", path, err)
	}
	b := &Browser{t: t, ctx: ctx}
	t.Cleanup(func() {
		if t.Failed() {
			b.screenshot()
		}
		cancelCtx()
		cancelAlloc()
	})
	return b
}

// For returns the browser bound to t, a subtest of the test that
// started it: failures are reported on t.
func (b *Browser) For(t testing.TB) *Browser { return &Browser{t: t, ctx: b.ctx} }

// Context is the tab's context, for chromedp.Run.
func (b *Browser) Context() context.Context { return b.ctx }

// Do runs steps in the tab within timeout; an error fails the test.
func (b *Browser) Do(timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := b.Try(timeout, steps...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// Try runs steps in the tab within timeout and returns their error.
func (b *Browser) Try(timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	return chromedp.Do(ctx, steps...)
}

// Get runs one action that returns a value within timeout; an error fails
// the test.
func Get[T any](b *Browser, timeout time.Duration, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("browser: %v", err)
	}
	return v
}

// Eval evaluates a JavaScript expression in the page; an error fails the
// test.
func Eval[T any](b *Browser, expr string) T {
	b.t.Helper()
	return Get(b, 10*time.Second, chromedp.Evaluate[T](expr))
}

// WaitTrue polls a JavaScript expression until it is true, failing the
// test after timeout with what it waited for.
func WaitTrue(b *Browser, timeout time.Duration, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	for {
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(timeout)))
		if err == nil {
			return
		}
		// A navigation that was still going on replaced the page the
		// poll ran in: poll the new one.
		if ctx.Err() == nil && (strings.Contains(err.Error(), "Cannot find context") || strings.Contains(err.Error(), "context was destroyed") ||
			strings.Contains(err.Error(), "navigated or closed")) {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		b.t.Fatalf("browser: waiting for %s: %v", expr, err)
	}
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// screenshot writes the tab as a PNG under $ERRAND_TEST_ARTIFACTS (or
// errand-artifacts in the system's temporary directory, which outlives
// the test) and says where.
func (b *Browser) screenshot() {
	dir := os.Getenv(EnvArtifacts)
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "errand-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Logf("screenshot: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	url, _ := chromedp.Run(ctx, chromedp.Location())
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot: %v", err)
		return
	}
	name := filepath.Join(dir, unsafeName.ReplaceAllString(b.t.Name(), "_")+".png")
	if err := os.WriteFile(name, png, 0o644); err != nil {
		b.t.Logf("screenshot: %v", err)
		return
	}
	b.t.Logf("screenshot of %s: %s", url, name)
}

// Screenshot writes the tab as a PNG file at path.
func (b *Browser) Screenshot(path string) error {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		return fmt.Errorf("screenshot: %w", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return fmt.Errorf("screenshot: %w", err)
	}
	return nil
}
