package gitsource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/errandci/errand/livelog"
)

// Defaults of Options.
const (
	// DefaultTimeout bounds one git command (one attempt).
	DefaultTimeout = 10 * time.Minute
	// DefaultAttempts is how often a command that failed in a way that
	// may pass (a refused connection, a 5xx answer, a broken transfer)
	// is tried in all.
	DefaultAttempts = 3
	// DefaultRetryWait is the first pause between two attempts; it
	// doubles with each, up to DefaultMaxRetryWait.
	DefaultRetryWait    = time.Second
	DefaultMaxRetryWait = 15 * time.Second
)

// waitDelay bounds the wait for what a killed git leaves holding its
// output (a remote helper, ssh).
const waitDelay = 5 * time.Second

// errAttemptTimeout ends a git command that ran past Options.Timeout.
var errAttemptTimeout = errors.New("git command timeout")

// maxErrorOutput bounds the part of git's error output an error quotes.
const maxErrorOutput = 2048

// maxStdout bounds what a command's standard output may hold (ls-remote
// of the refs a source names).
const maxStdout = 1 << 20

// Options configure how git is run.
type Options struct {
	// Git is the git binary: "git" on PATH when empty.
	Git string
	// AllowFile lets file URLs be fetched (tests, local runs).
	AllowFile bool
	// Timeout bounds each git command: DefaultTimeout when 0.
	Timeout time.Duration
	// Attempts bounds the tries of a command: DefaultAttempts when 0.
	Attempts int
	// RetryWait and MaxRetryWait shape the pauses between attempts:
	// DefaultRetryWait and DefaultMaxRetryWait when 0.
	RetryWait    time.Duration
	MaxRetryWait time.Duration
}

func (o Options) git() string {
	if o.Git != "" {
		return o.Git
	}
	return "git"
}

func (o Options) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return DefaultTimeout
}

func (o Options) attempts() int {
	if o.Attempts > 0 {
		return o.Attempts
	}
	return DefaultAttempts
}

// Credential is what an http or https source authenticates with.
type Credential struct {
	Username string
	Password string
}

// tokenUser is the user name sent with a credential that is a token
// alone: GitHub wants it, GitLab and Gitea take any name with a token.
const tokenUser = "x-access-token"

// ParseCredential reads the value of a credentials secret: "user:password",
// or a token alone (sent with the user name x-access-token). Its error
// never holds the value.
func ParseCredential(value string) (*Credential, error) {
	if value == "" {
		return nil, errors.New("the credential is empty")
	}
	if strings.ContainsAny(value, "\n\r\x00") {
		return nil, errors.New("the credential holds a line break or a NUL byte")
	}
	user, pass, ok := strings.Cut(value, ":")
	if !ok {
		return &Credential{Username: tokenUser, Password: value}, nil
	}
	if user == "" || pass == "" {
		return nil, errors.New(`the credential is "user:password" with neither empty, or a token alone`)
	}
	return &Credential{Username: user, Password: pass}, nil
}

// values are what a masker hides of the credential.
func (c *Credential) values() []string {
	if c == nil {
		return nil
	}
	return []string{c.Username + ":" + c.Password, c.Password}
}

// credentialHelper answers git's credential requests from the
// environment of the command, so that the credential is never an
// argument (seen in the process list) or part of a URL (seen in
// messages). It answers "get" only: git's store and erase requests
// are ignored, so nothing keeps the credential.
const credentialHelper = `!f() { test "$1" = get || exit 0; printf 'username=%s\npassword=%s\n' "$ERRAND_GIT_USERNAME" "$ERRAND_GIT_PASSWORD"; }; f`

// runner runs the git commands of one fetch.
type runner struct {
	opts   Options
	cred   *Credential
	masker *livelog.Masker
	// log receives each command and git's messages, masked; may be nil.
	log io.Writer
	env []string
	// maxOut bounds a command's standard output: maxStdout when 0.
	maxOut int
}

func newRunner(opts Options, cred *Credential, log io.Writer) *runner {
	m, _ := livelog.NewMasker(cred.values()...)
	r := &runner{opts: opts, cred: cred, masker: m, log: log}
	r.env = r.environment()
	return r
}

// environment is the environment of every git command: this process's
// without its GIT_ variables (GIT_DIR and the like would send git to
// another repository), no prompt of any kind, only the allowed
// protocols (submodules included), the credential helper alone, and
// LFS files left as pointers unless asked for.
func (r *runner) environment() []string {
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") && !strings.HasPrefix(kv, "ERRAND_GIT_") && !strings.HasPrefix(kv, "SSH_ASKPASS") {
			env = append(env, kv)
		}
	}
	protocols := "https:http:ssh:git"
	if r.opts.AllowFile {
		protocols += ":file"
	}
	config := [][2]string{
		// An empty helper drops those of the user's and the system's
		// configuration: none of them sees or stores the credential.
		{"credential.helper", ""},
		{"protocol.allow", "never"},
		{"advice.detachedHead", "false"},
		{"init.defaultBranch", "main"},
	}
	for _, p := range strings.Split(protocols, ":") {
		config = append(config, [2]string{"protocol." + p + ".allow", "always"})
	}
	if r.cred != nil {
		config = append(config, [2]string{"credential.helper", credentialHelper})
		env = append(env, "ERRAND_GIT_USERNAME="+r.cred.Username, "ERRAND_GIT_PASSWORD="+r.cred.Password)
	}
	env = append(env,
		"GIT_TERMINAL_PROMPT=0",
		"GIT_ASKPASS=true",
		"SSH_ASKPASS=true",
		"GIT_SSH_COMMAND=ssh -o BatchMode=yes",
		"GIT_ALLOW_PROTOCOL="+protocols,
		"GIT_LFS_SKIP_SMUDGE=1",
		"LC_ALL=C",
		"GIT_CONFIG_COUNT="+strconv.Itoa(len(config)))
	for i, kv := range config {
		n := strconv.Itoa(i)
		env = append(env, "GIT_CONFIG_KEY_"+n+"="+kv[0], "GIT_CONFIG_VALUE_"+n+"="+kv[1])
	}
	return env
}

// mask hides the credential in s.
func (r *runner) mask(s string) string {
	if r.masker.Empty() {
		return s
	}
	return r.masker.Mask(s)
}

// commandError is a git command that failed, with what git said of it
// (masked).
type commandError struct {
	args      string
	err       error
	stderr    string
	transient bool
}

func (e *commandError) Error() string {
	if e.stderr == "" {
		return fmt.Sprintf("git %s: %v", e.args, e.err)
	}
	return fmt.Sprintf("git %s: %v: %s", e.args, e.err, e.stderr)
}

func (e *commandError) Unwrap() error { return e.err }

// permanent are the messages of failures that another attempt would
// only repeat: the repository, the ref or the credential is wrong.
var permanent = regexp.MustCompile(`(?i)not found|does not appear to be a git repository|not our ref|couldn't find remote ref|` +
	`no such remote ref|authentication failed|could not read (username|password)|terminal prompts disabled|` +
	`access denied|permission denied|not exported|returned error: 4(0[0-79]|1\d|2[0-8]|[3-9]\d)|` +
	`transport '?[a-z+-]+'? not allowed|unsupported protocol|not a valid|invalid|unadvertised object|` +
	`reference is not a tree|did not match any|unknown revision|no such (file|directory)|is not a git command`)

// run runs git with args in dir ("" for none) once, within the
// command timeout, and returns its standard output. Each line git
// writes on its standard error goes, masked, to the log.
func (r *runner) run(ctx context.Context, dir string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, r.opts.timeout(), errAttemptTimeout)
	defer cancel()
	full := args
	if dir != "" {
		full = append([]string{"-C", dir}, args...)
	}
	cmd := osexec.CommandContext(ctx, r.opts.git(), full...)
	cmd.Env = r.env
	cmd.Stdin = nil
	// git's helpers (remote-http, ssh, upload-pack) are its children:
	// the whole group goes when the command is stopped.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay
	limit := r.maxOut
	if limit <= 0 {
		limit = maxStdout
	}
	stdout := &limitedBuffer{max: limit}
	stderr := &stderrWriter{r: r}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	shown := strings.Join(args, " ")
	r.logf("+ git %s\n", shown)
	err := cmd.Run()
	stderr.flush()
	switch {
	case err == nil && stdout.over:
		return nil, &commandError{args: shown, err: fmt.Errorf("more than %d bytes of output", limit)}
	case err == nil:
		return stdout.Bytes(), nil
	case errors.Is(context.Cause(ctx), errAttemptTimeout):
		return nil, &commandError{args: shown, err: fmt.Errorf("no answer within %s", r.opts.timeout()), transient: true}
	case ctx.Err() != nil:
		return nil, ctx.Err()
	}
	var ee *osexec.ExitError
	if !errors.As(err, &ee) {
		// git itself could not be started.
		return nil, &commandError{args: shown, err: err}
	}
	said := r.mask(stderr.tail())
	return nil, &commandError{args: shown, err: err, stderr: said, transient: !permanent.MatchString(said)}
}

// retry runs git with args until it succeeds, fails for good, or has
// been tried opts.Attempts times, pausing between the attempts.
func (r *runner) retry(ctx context.Context, dir string, args ...string) ([]byte, error) {
	eb := backoff.NewExponentialBackOff()
	eb.InitialInterval = r.opts.RetryWait
	if eb.InitialInterval <= 0 {
		eb.InitialInterval = DefaultRetryWait
	}
	eb.MaxInterval = r.opts.MaxRetryWait
	if eb.MaxInterval <= 0 {
		eb.MaxInterval = DefaultMaxRetryWait
	}
	eb.MaxElapsedTime = 0 // the attempts bound it
	policy := backoff.WithContext(backoff.WithMaxRetries(eb, uint64(r.opts.attempts()-1)), ctx)
	attempt := 0
	return backoff.RetryNotifyWithData(func() ([]byte, error) {
		attempt++
		out, err := r.run(ctx, dir, args...)
		var ce *commandError
		if err != nil && (!errors.As(err, &ce) || !ce.transient) {
			return nil, backoff.Permanent(err)
		}
		return out, err
	}, policy, func(err error, wait time.Duration) {
		r.logf("attempt %d of %d failed; trying again in %s\n", attempt, r.opts.attempts(), wait.Round(time.Millisecond))
	})
}

func (r *runner) logf(format string, args ...any) {
	if r.log != nil {
		fmt.Fprint(r.log, r.mask(fmt.Sprintf(format, args...)))
	}
}

// stderrWriter passes git's messages on to the log line by line, masked,
// and keeps the last of them for an error.
type stderrWriter struct {
	r       *runner
	mu      sync.Mutex
	partial []byte
	last    []byte
}

func (w *stderrWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.keep(p)
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexAny(w.partial, "\r\n")
		if i < 0 {
			break
		}
		if line := strings.TrimSpace(string(w.partial[:i])); line != "" {
			w.r.logf("%s\n", line)
		}
		w.partial = w.partial[i+1:]
	}
	if len(w.partial) > livelog.DefaultMaxLineBytes {
		w.r.logf("%s\n", w.partial)
		w.partial = nil
	}
	return len(p), nil
}

// keep holds the last maxErrorOutput bytes written.
func (w *stderrWriter) keep(p []byte) {
	w.last = append(w.last, p...)
	if len(w.last) > 2*maxErrorOutput {
		w.last = append([]byte(nil), w.last[len(w.last)-maxErrorOutput:]...)
	}
}

func (w *stderrWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if line := strings.TrimSpace(string(w.partial)); line != "" {
		w.r.logf("%s\n", line)
	}
	w.partial = nil
}

// tail is the last of what git said, as one line.
func (w *stderrWriter) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.last
	if len(s) > maxErrorOutput {
		s = s[len(s)-maxErrorOutput:]
	}
	fields := strings.FieldsFunc(string(s), func(r rune) bool { return r == '\n' || r == '\r' })
	for i := range fields {
		fields[i] = strings.TrimSpace(fields[i])
	}
	return strings.TrimSpace(strings.Join(fields, "; "))
}

// limitedBuffer keeps up to max bytes and notes that more came.
type limitedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if b.Len()+len(p) > b.max {
		b.over = true
		p = p[:max(0, b.max-b.Len())]
	}
	b.Buffer.Write(p)
	return n, nil
}
