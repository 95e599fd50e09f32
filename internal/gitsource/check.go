// Package gitsource fetches the Git sources of runs: it checks what a
// source may name (the URL schemes, refs and commits Errand accepts,
// options and transport-helper injection refused), resolves a ref to its
// commit with git ls-remote, and checks a commit out into a directory the
// way Woodpecker's clone step does (init, fetch of the exact commit at a
// depth, detached checkout, submodules, LFS).
//
// Every git command runs with a bounded time and bounded retries, with
// the credential handed over through the environment to a credential
// helper (never in an argument or a URL), with the protocols git may use
// limited to those allowed, and with the credential masked in what it
// prints and in every error.
package gitsource

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/errandci/errand"
)

// Bounds of a Git source.
const (
	MaxURLLen = 2048
	MaxRefLen = 255
	MaxDepth  = 1_000_000
)

// Schemes of the URLs a source may use; file only where it is allowed.
const (
	SchemeHTTPS = "https"
	SchemeHTTP  = "http"
	SchemeSSH   = "ssh"
	SchemeGit   = "git"
	SchemeFile  = "file"
)

// Problem is one thing wrong with a source: the field (url, ref, commit,
// depth, credentials) and why.
type Problem struct {
	Field   string
	Message string
}

// Problems lists what is wrong with a source.
type Problems []Problem

// Error implements error: "git.field: message", one a line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = "git." + p.Field + ": " + p.Message
	}
	return strings.Join(lines, "\n")
}

var (
	commitPattern     = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)
	secretNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// helperPrefix is how git recognises a remote helper: <transport>::<address>.
	helperPrefix = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9+.-]*::`)
)

// Check returns what is wrong with src and commit (which may be empty),
// nil when nothing is. File URLs pass only with allowFile; a manager
// validating a request it will not fetch itself passes true and lets
// the delegate decide.
func Check(src *errand.GitSource, commit string, allowFile bool) Problems {
	var ps Problems
	add := func(field, format string, args ...any) {
		ps = append(ps, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	if src == nil {
		add("url", "required")
		return ps
	}
	scheme, err := CheckURL(src.URL, allowFile)
	if err != nil {
		add("url", "%v", err)
	}
	if err := CheckRef(src.Ref); err != nil {
		add("ref", "%v", err)
	}
	if commit != "" && !IsCommit(commit) {
		add("commit", "%q: want a full commit id (40 or 64 lower-case hex digits)", commit)
	}
	if d := src.FetchDepth(); d < 0 || d > MaxDepth {
		add("depth", "%d: want 0 (the whole history) to %d", d, MaxDepth)
	}
	if c := src.Credentials; c != "" {
		switch {
		case !secretNamePattern.MatchString(c):
			add("credentials", "%q: the name of a secret, matching [A-Za-z_][A-Za-z0-9_]*", c)
		case err == nil && scheme != SchemeHTTPS && scheme != SchemeHTTP:
			add("credentials", "credentials are for http and https URLs; an %s URL uses the SSH keys of the host that fetches it", scheme)
		}
	}
	return ps
}

// IsCommit reports whether s is a full commit id.
func IsCommit(s string) bool { return commitPattern.MatchString(s) }

// CheckURL checks a repository URL and returns its scheme: ssh for the
// scp-like user@host:path form.
func CheckURL(raw string, allowFile bool) (string, error) {
	switch {
	case raw == "":
		return "", fmt.Errorf("required")
	case len(raw) > MaxURLLen:
		return "", fmt.Errorf("longer than %d bytes", MaxURLLen)
	case strings.HasPrefix(raw, "-"):
		return "", fmt.Errorf("%q: must not start with '-' (git would read it as an option)", raw)
	case strings.IndexFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		return "", fmt.Errorf("%q: spaces and control characters are not allowed (escape them as %%20, …)", raw)
	case helperPrefix.MatchString(raw):
		return "", fmt.Errorf("%q: remote helpers (ext::, fd::, …) are not allowed; want an https, http, ssh, git or file URL", raw)
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return scpLike(raw)
	}
	scheme = strings.ToLower(scheme)
	switch scheme {
	case SchemeHTTPS, SchemeHTTP, SchemeSSH, SchemeGit:
	case SchemeFile:
		if !allowFile {
			return "", fmt.Errorf("%q: file URLs are refused here (a manager or delegate allows them with --allow-file-sources)", raw)
		}
		if !strings.HasPrefix(rest, "/") {
			return "", fmt.Errorf("%q: want file:///absolute/path", raw)
		}
		return scheme, nil
	default:
		return "", fmt.Errorf("%q: scheme %s is not allowed; want https, http, ssh, git or file", raw, scheme)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%q: %v", raw, err)
	}
	if u.Host == "" || u.Hostname() == "" {
		return "", fmt.Errorf("%q: no host", raw)
	}
	if strings.HasPrefix(u.Hostname(), "-") {
		return "", fmt.Errorf("%q: the host must not start with '-'", raw)
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			return "", fmt.Errorf("a password in the URL would be stored and shown with the run: put the credential in a secret and name it in credentials")
		}
		if strings.HasPrefix(u.User.Username(), "-") {
			return "", fmt.Errorf("%q: the user must not start with '-'", raw)
		}
	}
	return scheme, nil
}

// scpLike checks the [user@]host:path form, which git reads as ssh.
func scpLike(raw string) (string, error) {
	colon := strings.IndexByte(raw, ':')
	slash := strings.IndexByte(raw, '/')
	if colon <= 0 || (slash >= 0 && slash < colon) {
		return "", fmt.Errorf("%q: not a URL; want https://…, http://…, ssh://…, git://…, file:///… or user@host:path", raw)
	}
	userHost := raw[:colon]
	user, host, hasUser := strings.Cut(userHost, "@")
	if !hasUser {
		host, user = user, ""
	}
	switch {
	case host == "" || raw[colon+1:] == "":
		return "", fmt.Errorf("%q: want user@host:path", raw)
	case strings.HasPrefix(host, "-") || strings.HasPrefix(user, "-"):
		return "", fmt.Errorf("%q: the user and host must not start with '-'", raw)
	}
	return SchemeSSH, nil
}

// CheckRef checks a branch, tag or ref name by the rules of git
// check-ref-format, and refuses what could be read as an option. Empty
// is the remote's HEAD.
func CheckRef(ref string) error {
	if ref == "" {
		return nil
	}
	bad := func(why string) error { return fmt.Errorf("%q: %s", ref, why) }
	switch {
	case len(ref) > MaxRefLen:
		return fmt.Errorf("longer than %d bytes", MaxRefLen)
	case strings.HasPrefix(ref, "-"):
		return bad("must not start with '-' (git would read it as an option)")
	case strings.IndexFunc(ref, func(r rune) bool { return r <= ' ' || r == 0x7f || strings.ContainsRune("~^:?*[\\", r) }) >= 0:
		return bad("spaces, control characters and ~ ^ : ? * [ \\ are not allowed in a ref")
	case strings.Contains(ref, "..") || strings.Contains(ref, "@{") || ref == "@":
		return bad(`".." and "@{" are not allowed in a ref`)
	case strings.HasPrefix(ref, "/") || strings.HasSuffix(ref, "/") || strings.Contains(ref, "//"):
		return bad("a ref has no empty component")
	case strings.HasSuffix(ref, "."):
		return bad("a ref does not end with '.'")
	}
	for _, part := range strings.Split(ref, "/") {
		if strings.HasPrefix(part, ".") || strings.HasSuffix(part, ".lock") {
			return bad("no component of a ref starts with '.' or ends with .lock")
		}
	}
	return nil
}
