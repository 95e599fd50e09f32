package runtime

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/gitsource"
	"github.com/errandci/errand/livelog"
	"github.com/errandci/errand/tasks"
)

// CodeCheckoutFailed ends an initialize task whose Git source could not
// be checked out: the repository, the commit or the credential is wrong,
// or the server did not answer within the attempts.
const CodeCheckoutFailed = "checkout_failed"

// GitOptions configure the checkout of a stage's Git source. The zero
// value refuses file URLs and uses gitsource's defaults: 10 minutes a
// git command, 3 attempts of a fetch.
type GitOptions struct {
	// AllowFile lets file URLs be checked out: for tests and local
	// runs, since a file URL reads this host's repositories.
	AllowFile bool
	// Timeout bounds each git command; Attempts bounds the tries of a
	// fetch that failed in a way that may pass.
	Timeout  time.Duration
	Attempts int
	// Git is the git binary: "git" on PATH when empty.
	Git string
}

// Checkout is the Git commit a stage's workspace starts as. A driver
// whose Init has one fills the workspace with Into: the stage's own
// directory, or a directory on this host that it then copies into the
// workspace.
type Checkout struct {
	// Source is what is checked out: the run's commit of its source.
	Source *tasks.GitCheckout
	opts   gitsource.Options
	cred   *gitsource.Credential
	log    io.Writer
	// mask hides the credential in what Into says.
	mask func(string) string
}

// Into makes dir, an existing empty directory, a checkout of the
// commit, with its submodules and LFS objects when the source asks for
// them. The commands and what git says go to the task's log with the
// credential masked; the error says what git said, masked too.
func (c *Checkout) Into(ctx context.Context, dir string) error {
	if err := gitsource.Checkout(ctx, c.opts, dir, &c.Source.GitSource, c.Source.Commit, c.cred, c.log); err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if errand.ErrorCode(err) == errand.CodeInvalid {
			return err
		}
		return errand.Errorf(CodeCheckoutFailed, "%s", c.mask(fmt.Sprintf("check out %s of %s: %v", c.Source.Commit, c.Source.URL, err)))
	}
	return nil
}

// checkout returns the Checkout of an initialize task's data, nil when
// it has none: its source checked against what this delegate allows,
// its credential read from the leased task's secrets and registered
// with the log's masking.
func (h *Handlers) checkout(data *tasks.InitializeData, logs io.Writer) (*Checkout, error) {
	src := data.Checkout
	if src == nil {
		return nil, nil
	}
	if ps := gitsource.Check(&src.GitSource, src.Commit, h.Git.AllowFile); len(ps) > 0 {
		return nil, errand.Errorf(errand.CodeInvalid, "stage %s: source: %v", data.Stage.Stage, ps)
	}
	if src.Commit == "" {
		return nil, errand.Errorf(errand.CodeInvalid, "stage %s: source: no commit to check out", data.Stage.Stage)
	}
	c := &Checkout{Source: src, opts: gitsource.Options{Git: h.Git.Git, AllowFile: h.Git.AllowFile,
		Timeout: h.Git.Timeout, Attempts: h.Git.Attempts}, log: logs, mask: func(s string) string { return s }}
	if name := src.Credentials; name != "" {
		value, ok := data.Secrets[name]
		if !ok {
			return nil, errand.Errorf(errand.CodeSecretMissing, "stage %s: the source's credentials %s are not in the task", data.Stage.Stage, name)
		}
		cred, err := gitsource.ParseCredential(value)
		if err != nil {
			return nil, errand.Errorf(errand.CodeInvalid, "stage %s: secret %s: %v", data.Stage.Stage, name, err)
		}
		c.cred = cred
		secrets := []string{value, cred.Password}
		if m := maskerFor(logs, secrets); m != nil {
			c.log = &maskedWriter{w: logs, mask: m.Mask}
		}
		m, _ := livelog.NewMasker(secrets...)
		c.mask = m.Mask
	}
	fmt.Fprintf(c.log, "source: %s at %s\n", src.URL, src.Commit)
	return c, nil
}

// maskedWriter masks what it writes: the log of a checkout is written
// whole lines at a time.
type maskedWriter struct {
	w    io.Writer
	mask func(string) string
}

func (m *maskedWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(m.w, m.mask(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
