package gitsource

import (
	"strings"
	"testing"

	"github.com/errandci/errand"
)

func TestCheckURL(t *testing.T) {
	for _, c := range []struct {
		url       string
		allowFile bool
		scheme    string
		refused   string // part of the error; "" when accepted
	}{
		{url: "https://example.com/org/repo.git", scheme: "https"},
		{url: "http://127.0.0.1:8080/repo.git", scheme: "http"},
		{url: "http://[::1]:8080/repo.git", scheme: "http"},
		{url: "ssh://git@example.com/org/repo.git", scheme: "ssh"},
		{url: "git@example.com:org/repo.git", scheme: "ssh"},
		{url: "example.com:repo.git", scheme: "ssh"},
		{url: "git://127.0.0.1/repo.git", scheme: "git"},
		{url: "file:///srv/repo.git", allowFile: true, scheme: "file"},
		{url: "file:///srv/repo.git", refused: "--allow-file-sources"},
		{url: "file://srv/repo.git", allowFile: true, refused: "file:///absolute/path"},
		{url: "", refused: "required"},
		{url: "ext::sh -c touch% /tmp/pwned", refused: "spaces"},
		{url: "ext::sh%20-c%20id", refused: "remote helpers"},
		{url: "fd::3", refused: "remote helpers"},
		{url: "host::path", refused: "remote helpers"},
		{url: "-uhttps://x/y", refused: "must not start with '-'"},
		{url: "--upload-pack=touch /tmp/x", refused: "must not start with '-'"},
		{url: "ssh://-oProxyCommand=id/x", refused: "host must not start"},
		{url: "-oProxyCommand=id:x", refused: "must not start with '-'"},
		{url: "x@-oProxyCommand=id:x", refused: "must not start with '-'"},
		{url: "ssh://-user@host/x", refused: "user must not start"},
		{url: "ftp://example.com/repo", refused: "scheme ftp is not allowed"},
		{url: "https://user:pass@example.com/repo", refused: "a password in the URL"},
		{url: "https:///repo", refused: "no host"},
		{url: "/srv/repo.git", refused: "not a URL"},
		{url: "../repo", refused: "not a URL"},
		{url: "https://example.com/a\nb", refused: "control characters"},
		{url: "https://example.com/" + strings.Repeat("a", MaxURLLen), refused: "longer than"},
	} {
		scheme, err := CheckURL(c.url, c.allowFile)
		switch {
		case c.refused == "" && err != nil:
			t.Errorf("%q: refused: %v", c.url, err)
		case c.refused == "" && scheme != c.scheme:
			t.Errorf("%q: scheme %q, want %q", c.url, scheme, c.scheme)
		case c.refused != "" && err == nil:
			t.Errorf("%q: accepted, want refused with %q", c.url, c.refused)
		case c.refused != "" && !strings.Contains(err.Error(), c.refused):
			t.Errorf("%q: %v, want it to say %q", c.url, err, c.refused)
		}
	}
}

func TestCheckRef(t *testing.T) {
	for _, ref := range []string{"", "main", "HEAD", "release/1.2", "refs/heads/main", "refs/tags/v1", "refs/pull/12/head", "v1.0", "a-b_c"} {
		if err := CheckRef(ref); err != nil {
			t.Errorf("%q: %v", ref, err)
		}
	}
	for _, ref := range []string{"-main", "--upload-pack=x", "a b", "a..b", "a~1", "a^", "a:b", "a?", "a*", "a[", `a\b`, "a@{1}", "@",
		"/a", "a/", "a//b", ".a", "a/.b", "a.lock", "a.", "a\x00", "a\tb", strings.Repeat("a", MaxRefLen+1)} {
		if err := CheckRef(ref); err == nil {
			t.Errorf("%q: accepted", ref)
		}
	}
}

func TestCheck(t *testing.T) {
	depth := func(n int) *int { return &n }
	sha := strings.Repeat("a", 40)
	for _, c := range []struct {
		name   string
		src    *errand.GitSource
		commit string
		fields []string
	}{
		{"ok", &errand.GitSource{URL: "https://x/y", Ref: "main", Credentials: "TOKEN"}, sha, nil},
		{"sha256 commit", &errand.GitSource{URL: "https://x/y"}, strings.Repeat("b", 64), nil},
		{"full history", &errand.GitSource{URL: "https://x/y", Depth: depth(0)}, "", nil},
		{"nil", nil, "", []string{"url"}},
		{"everything wrong", &errand.GitSource{URL: "ext::x", Ref: "-x", Depth: depth(-1), Credentials: "a-b"}, "HEAD",
			[]string{"url", "ref", "commit", "depth", "credentials"}},
		{"short commit", &errand.GitSource{URL: "https://x/y"}, "abc123", []string{"commit"}},
		{"upper-case commit", &errand.GitSource{URL: "https://x/y"}, strings.Repeat("A", 40), []string{"commit"}},
		{"deep", &errand.GitSource{URL: "https://x/y", Depth: depth(MaxDepth + 1)}, "", []string{"depth"}},
		{"credentials over ssh", &errand.GitSource{URL: "git@x:y", Credentials: "KEY"}, "", []string{"credentials"}},
		{"credentials over git", &errand.GitSource{URL: "git://x/y", Credentials: "KEY"}, "", []string{"credentials"}},
	} {
		ps := Check(c.src, c.commit, false)
		var got []string
		for _, p := range ps {
			got = append(got, p.Field)
		}
		if strings.Join(got, ",") != strings.Join(c.fields, ",") {
			t.Errorf("%s: problems %v (%v), want fields %v", c.name, got, ps, c.fields)
		}
	}
}

func TestParseCredential(t *testing.T) {
	c, err := ParseCredential("alice:s3cr3t:with:colons")
	if err != nil || c.Username != "alice" || c.Password != "s3cr3t:with:colons" {
		t.Errorf("user:password = %+v, %v", c, err)
	}
	c, err = ParseCredential("ghp_token123")
	if err != nil || c.Username != tokenUser || c.Password != "ghp_token123" {
		t.Errorf("token = %+v, %v", c, err)
	}
	for _, v := range []string{"", ":pw-only", "name-only:", "a\nb", "a\x00b"} {
		_, err := ParseCredential(v)
		if err == nil {
			t.Errorf("%q: accepted", v)
		} else if v != "" && strings.Contains(err.Error(), v) {
			t.Errorf("%q: the error shows the value: %v", v, err)
		}
	}
}
