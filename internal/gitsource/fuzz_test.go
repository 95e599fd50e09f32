package gitsource

import (
	"strings"
	"testing"
)

// FuzzCheckSource feeds URLs and refs to the checks: whatever they
// accept is nothing git could read as an option or a remote helper, and
// has no space or control character.
func FuzzCheckSource(f *testing.F) {
	for _, s := range [][2]string{
		{"https://example.com/org/repo.git", "main"},
		{"git@example.com:org/repo.git", "refs/tags/v1"},
		{"ssh://[::1]:22/repo", "release/1.x"},
		{"ext::sh -c id", "--upload-pack=id"},
		{"fd::3", "a..b"},
		{"file:///srv/repo.git", "HEAD"},
		{"-oProxyCommand=id:x", "@{-1}"},
		{"x@-host:path", "a/.b"},
		{"https://u:p@host/r", "a.lock"},
		{"HTTP://HOST/R", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, url, ref string) {
		if scheme, err := CheckURL(url, true); err == nil {
			switch {
			case strings.HasPrefix(url, "-"):
				t.Fatalf("accepted %q, an option", url)
			case helperPrefix.MatchString(url):
				t.Fatalf("accepted %q, a remote helper", url)
			case strings.IndexFunc(url, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
				t.Fatalf("accepted %q, with a space or control character", url)
			case scheme != SchemeHTTPS && scheme != SchemeHTTP && scheme != SchemeSSH && scheme != SchemeGit && scheme != SchemeFile:
				t.Fatalf("accepted %q with scheme %q", url, scheme)
			}
			if _, err := CheckURL(url, false); scheme == SchemeFile && err == nil {
				t.Fatalf("accepted the file URL %q without AllowFile", url)
			}
		}
		if err := CheckRef(ref); err == nil {
			if strings.HasPrefix(ref, "-") || strings.Contains(ref, "..") || strings.ContainsAny(ref, " ~^:?*[\\\x00\n") || len(ref) > MaxRefLen {
				t.Fatalf("accepted the ref %q", ref)
			}
		}
	})
}
